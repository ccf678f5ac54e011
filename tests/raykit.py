"""A local Ray cluster for the placement tests: a head and a second node, bound to 127.0.0.1 only.

- `ray_or_skip()`: the ray module. When it is not installed the tests skip only if `make test` could not install
  the extra because the package registry was unreachable (it leaves the reason in `.venv/.ray-unavailable`);
  otherwise a missing ray is a failure: `make test` installs `agenthost[ray]`.
- `LoopbackCluster`: `ray.cluster_utils.Cluster` with every node on 127.0.0.1, no dashboard, one CPU each, 4 units of
  the custom resource "agenthost" each (what the tests' workers ask for), and health checks of a few hundred ms
  so a killed node is declared dead within about a second (Ray's default is tens of seconds). `RAY_ENABLE_...`
  below keeps Ray from rewriting 127.0.0.1 to the machine's address (the cluster only listens on loopback).
  `listening()` lists the TCP sockets its processes (and their children: the actors' workers) listen on, read from
  /proc, so a test can prove they are all on loopback.
"""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported: a loopback cluster

MARKER = Path(__file__).resolve().parent.parent / ".venv" / ".ray-unavailable"
SLOT = "agenthost"  # the custom resource each test worker reserves one unit of
FAST_HEALTH = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 300,
    "health_check_timeout_ms": 300,
    "health_check_failure_threshold": 3,
}


def ray_or_skip() -> ModuleType:
    try:
        import ray
    except ImportError:
        if MARKER.exists():
            reason = f"agenthost[ray] could not be installed: {MARKER.read_text().strip()}"
            pytest.skip(reason, allow_module_level=True)
        raise
    return ray


def _node_args(**extra: Any) -> dict[str, Any]:
    return {
        "node_ip_address": "127.0.0.1",
        "num_cpus": 1,
        "resources": {SLOT: 4},
        "include_dashboard": False,
        "object_store_memory": 80 * 1024 * 1024,
        **extra,
    }


class LoopbackCluster:
    """A head (the test process is its driver) and one removable worker node."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args=_node_args(_system_config=FAST_HEALTH))
        self.second = self.cluster.add_node(**_node_args())
        self.cluster.wait_for_nodes()

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def head_id(self) -> str:
        return str(self.cluster.head_node.node_id)

    def kill_second(self) -> str:
        """Kill every process of the second node at once (no graceful stop); returns its node id."""
        node_id = str(self.second.node_id)
        self.cluster.remove_node(self.second, allow_graceful=False)
        return node_id

    def replace_second(self) -> None:
        self.second = self.cluster.add_node(**_node_args())
        self.cluster.wait_for_nodes()

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every TCP socket a process of the cluster (or a child of one) listens on."""
        roots = {
            info.process.pid
            for node in self.cluster.list_all_nodes()
            for infos in node.all_processes.values()
            for info in infos
        }
        return _listening(_descendants(roots))

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    """True once process `pid` no longer exists (zombies count as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _descendants(roots: set[int]) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = set(roots)
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes.update(link[len("socket:[") : -1] for link in links if link.startswith("socket:["))
    found: set[tuple[str, int]] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                found.add((_address(address, width), int(port, 16)))
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return str(address.ipv4_mapped or address)


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback
