"""Shared fixtures: a host on a temporary storage root with an injected FakeClock, and event capture."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

from agenthost import AgentHost, HostConfig
from agenthost.actors import FakeClock
from agenthost.testing import CapturedEvents, capture_events

pytest_plugins = ["servicekit"]  # the `service` fixture: `agenthost serve` as a subprocess

settings.register_profile("agenthost", derandomize=True, print_blob=True)  # fixed examples: reproducible runs
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "agenthost"))


@pytest.fixture(autouse=True)
def no_actor_outlives_its_test() -> Iterator[None]:
    """A failing test must not leave a host running into the next test (or keep the interpreter alive)."""
    import pykka

    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=30)


FIXED_SEED = 20261129  # the default: every run (CI's too) replays the same schedules; override to explore


@pytest.fixture
def seed() -> int:
    """Randomness in tests comes from here: a fixed seed, printed, that AGENTHOST_TEST_SEED overrides."""
    value = int(os.environ.get("AGENTHOST_TEST_SEED", FIXED_SEED))
    print(f"AGENTHOST_TEST_SEED={value}")
    return value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> Iterator[CapturedEvents]:
    with capture_events(
        "supervisor.decision",
        "turns.resuming",
        "mapping.pins_moved",
        "worker.protocol_error",
        "worker.exited",
        "pool.worker_up",
    ) as log:
        yield log


@pytest.fixture
def make_host(tmp_path: Any, clock: FakeClock) -> Iterator[Callable[..., AgentHost]]:
    hosts: list[AgentHost] = []

    def make(root: Any = None, **overrides: Any) -> AgentHost:
        config = HostConfig(storage_root=str(root or tmp_path / "root"), **overrides)
        host = AgentHost(config, clock=clock).start()
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.shutdown(drain_timeout_s=1.0)


def wait_until(what: str, predicate: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """Poll `predicate` (real time, bounded) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.01)


def worker(host: AgentHost, worker_id: int) -> Any:
    return next(w for w in host.status().workers if w.worker_id == worker_id)


def process_gone(pid: int) -> bool:
    """True when process `pid` no longer runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True
