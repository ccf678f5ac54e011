"""Placement settings and what happens around them without a cluster: HostConfig's validators (one per rule, each
naming the bad value), `agenthost serve --ray-address`, agenthost without ray installed, and where ray may be
imported at all (it is an optional dependency)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agenthost import HostConfig
from agenthost.actors._checks import PolicyError
from agenthost.actors._placement import RayResources

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parent.parent
RAY_MODULES = {"_ray_placement.py", "_ray_handle.py"}  # the only modules that import ray


def _agenthost(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "agenthost", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"placement": "ray"}, "HostConfig.ray_address is required when placement is 'ray', got None"),
        ({"ray_address": "10.0.0.1:6379"}, "ray_address '10.0.0.1:6379' is only used with placement 'ray'"),
        (
            {"placement": "ray", "ray_address": "head"},
            "ray_address must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT', got 'head'",
        ),
        ({"placement": "ray", "ray_address": "head:0"}, "got 'head:0'"),
        ({"placement": "ray", "ray_address": "ray://head:x"}, "got 'ray://head:x'"),
        ({"resources": RayResources(num_cpus=2)}, "HostConfig.resources {'num_cpus': 2"),
        ({"resources": {"num_cpus": 2}}, "HostConfig.resources must be of type RayResources, got {'num_cpus': 2}"),
    ],
)
def test_each_placement_rule_names_the_bad_value(fields: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        HostConfig(storage_root="/tmp/unused", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"num_cpus": -1}, "resources.num_cpus must be >= 0, got -1"),
        ({"custom": {"gpu_box": 0}}, "resources.custom['gpu_box'] must be > 0, got 0"),
        ({"custom": {"CPU": 1}}, "resources.custom names must be custom resource names, got 'CPU'"),
        ({"strategy": "random"}, "Invalid enum value 'random' - at `$.resources.strategy`"),
    ],
)
def test_resources_are_validated_when_decoded(resources: dict[str, object], message: str) -> None:
    document = {"storage_root": "/tmp/unused", "placement": "ray", "ray_address": "auto", "resources": resources}
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        msgspec.convert(document, HostConfig)


def test_valid_placements_are_accepted() -> None:
    for address in ("auto", "10.0.0.1:6379", "ray://head.example:10001", "[::1]:6379"):
        config = HostConfig(storage_root="/tmp/unused", placement="ray", ray_address=address)
        assert config.resources == RayResources(num_cpus=1.0, custom={}, strategy="spread")
    assert HostConfig(storage_root="/tmp/unused").placement == "local"


def test_serve_ray_address_flag_sets_the_placement_and_a_bad_one_exits_2(tmp_path: Path) -> None:
    run = _agenthost("serve", "--root", str(tmp_path), "--ray-address", "10.0.0.1:6379", "--check-config")
    assert run.returncode == 0, run.stderr
    host = json.loads(run.stdout)["host"]
    assert (host["placement"], host["ray_address"]) == ("ray", "10.0.0.1:6379")

    run = _agenthost("serve", "--root", str(tmp_path), "--ray-address", "head", "--check-config")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "agenthost: the flags: HostConfig.ray_address must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT', got 'head'"
    ]


def test_serve_on_an_unreachable_cluster_exits_1_naming_the_address(tmp_path: Path) -> None:
    run = _agenthost("serve", "--root", str(tmp_path), "--ray-address", "127.0.0.1:1")
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("agenthost: agenthost could not start on") and "127.0.0.1:1" in last, last


def test_agenthost_works_without_ray_and_says_how_to_get_it(tmp_path: Path) -> None:
    code = f"""
import sys
sys.modules["ray"] = None  # as if ray were not installed
from agenthost import AgentHost, HostConfig, HostStartError
with AgentHost(HostConfig(storage_root={str(tmp_path / "local")!r}, workers=1)) as host:
    thread_id = host.create_thread("local")
    assert host.send(thread_id, "hi").wait(30).status == "completed"
try:
    AgentHost(HostConfig(storage_root={str(tmp_path / "ray")!r}, placement="ray", ray_address="auto")).start()
except HostStartError as exc:
    print(exc)
"""
    run = _agenthost(code=code)
    assert run.returncode == 0, run.stderr
    assert "pip install 'agenthost[ray]'" in run.stdout, run.stdout


def test_only_the_ray_modules_import_ray() -> None:
    importers = set()
    for folder in ("protocol", "storage", "actors", "agenthost", "chaos"):
        for path in (REPO / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(name == "ray" or name.startswith("ray.") for name in names):
                    importers.add(path.name)
    assert importers == RAY_MODULES
