"""Where a worker's runtime process runs: the seam between a worker actor and the process it owns.

Contract:
- A `ProcessHost` starts runtime processes for worker actors and gives each a `RuntimeHandle`: the same handful of
  operations whether the process is a local child (`LocalProcessHost`, actors._process) or runs inside a Ray actor
  on some node of a cluster (`RayProcessHost`, actors._ray_placement). The worker actor, the pool and the recovery
  policy are the same for both: a host only carries bytes and signals; it never restarts anything.
- `RuntimeHandle`: `pid` (on the process's own node), `outbox` (stdin: `put` never blocks, byte counters say how
  far the runtime has read), `running()`, `signal_group(sig)`, `reap(grace_s)`, `close_stdin()`, `stop(timeout_s)`,
  `kill_and_wait()` and `exit_cause(returncode)`, the reason an exit is reported with (a local exit code, or a
  Ray actor or node that died, naming it). Decoded stdout lines go to the worker's `StdoutInbox` and the actor
  is told `StdoutReady` / `StdoutClosed`, exactly as for a local process.
- `kill_group(worker_id, pid)` is the pool's own kill (it stopped trusting the worker actor): a local host SIGKILLs
  the process group by its pid; a Ray host kills the worker's current runtime through its Ray actor (never a local
  pid: the pid belongs to another machine).
- `open_process_host(placement, ...)` builds the host for `HostConfig.placement`: "local" needs nothing; "ray"
  imports ray only then (agenthost works without ray installed) and connects; a failure is a `PlacementError`
  naming the address and the cause. For a loopback address (a cluster bound to 127.0.0.1 on this machine) it sets
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before ray is imported, else Ray rewrites 127.0.0.1 to the machine's address.
- `RayResources` is what each worker's Ray actor asks for: `num_cpus`, custom resources, and a scheduling strategy
  ("spread" spreads workers over nodes, "default" packs them as Ray likes). Validated at construction and decode.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

from agenthost.actors._checks import PolicyError, at_least
from agenthost.actors._pipes import StdoutInbox, WorkerSpec
from agenthost.actors._process import RuntimeProcess

__all__ = [
    "LOCAL",
    "LOOPBACK",
    "LocalProcessHost",
    "Outbox",
    "PlacementError",
    "ProcessHost",
    "RayResources",
    "RuntimeHandle",
    "open_process_host",
]

Placement = Literal["local", "ray"]
LOOPBACK = ("127.", "localhost:", "[::1]:")  # how a loopback Ray address starts


class PlacementError(RuntimeError):
    """The runtimes cannot be placed as configured (ray missing, the cluster unreachable, ...)."""


class RayResources(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What each worker's Ray actor reserves on its node, and how workers are spread over nodes."""

    num_cpus: float = 1.0
    custom: dict[str, float] = {}
    strategy: Literal["spread", "default"] = "spread"

    def __post_init__(self) -> None:
        at_least("resources.num_cpus", self.num_cpus, 0)
        for name, amount in self.custom.items():
            if not name or name.strip() != name or name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise PolicyError(f"resources.custom names must be custom resource names, got {name!r}")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount):
                raise PolicyError(f"resources.custom[{name!r}] must be a finite number, got {amount!r}")
            if amount <= 0:
                raise PolicyError(f"resources.custom[{name!r}] must be > 0, got {amount!r}")


class Outbox(Protocol):
    """A runtime's stdin as a worker actor sees it (actors._pipes.StdinOutbox is the local one)."""

    @property
    def queued(self) -> int: ...

    @property
    def pending(self) -> int: ...

    def put(self, data: bytes, *, hold: bool = False) -> bool: ...

    def release(self) -> bool: ...

    def read_up_to(self, offset: int, grace_s: float = 0.0) -> bool: ...

    def close(self) -> None: ...


class RuntimeHandle(Protocol):
    """One runtime process, wherever it runs (see the module contract)."""

    @property
    def outbox(self) -> Outbox: ...

    @property
    def pid(self) -> int: ...

    def running(self) -> bool: ...

    def signal_group(self, sig: int) -> None: ...

    def reap(self, grace_s: float) -> int | None: ...

    def close_stdin(self) -> None: ...

    def stop(self, timeout_s: float) -> tuple[int | None, str]: ...

    def kill_and_wait(self) -> None: ...

    def exit_cause(self, returncode: int | None) -> str: ...


class ProcessHost(Protocol):
    """Starts the runtime processes of a pool's workers (see the module contract)."""

    placement: Placement

    def start(
        self,
        spec: WorkerSpec,
        *,
        outbox_limit_bytes: int,
        inbox: StdoutInbox,
        actor_ref: Any,
        on_error_line: Callable[[str], None],
    ) -> RuntimeHandle: ...

    def kill_group(self, worker_id: int, pid: int | None) -> None: ...

    def close(self) -> None: ...


class LocalProcessHost:
    """Runtimes as child processes of this one (the default)."""

    placement: Placement = "local"

    def start(
        self,
        spec: WorkerSpec,
        *,
        outbox_limit_bytes: int,
        inbox: StdoutInbox,
        actor_ref: Any,
        on_error_line: Callable[[str], None],
    ) -> RuntimeHandle:
        return RuntimeProcess.start(
            spec, outbox_limit_bytes=outbox_limit_bytes, inbox=inbox, actor_ref=actor_ref, on_error_line=on_error_line
        )

    def kill_group(self, worker_id: int, pid: int | None) -> None:
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        """Nothing to release: each runtime is stopped by its worker."""


LOCAL = LocalProcessHost()


def open_process_host(
    placement: Placement,
    *,
    ray_address: str | None = None,
    resources: RayResources | None = None,
    root: Path | None = None,
) -> ProcessHost:
    """The process host for `placement` (see the module contract); `PlacementError` when it cannot be opened."""
    if placement == "local":
        return LOCAL
    if ray_address is None or root is None:
        raise PlacementError("placement 'ray' needs a ray_address and the storage root")
    if ray_address.startswith(LOOPBACK) and "ray" not in sys.modules:
        # Ray rewrites a loopback address to this machine's network address unless it is told the cluster is this
        # one machine; a cluster bound to 127.0.0.1 is exactly that (see README "Running on a cluster")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        from agenthost.actors._ray_placement import RayProcessHost
    except ImportError as exc:
        raise PlacementError(
            f"placement 'ray' (ray_address {ray_address!r}) needs the ray package ({exc}); install it with: "
            "pip install 'agenthost[ray]'"
        ) from None
    return RayProcessHost.connect(ray_address, resources or RayResources(), root)
