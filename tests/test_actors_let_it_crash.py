"""Let it crash, for asks too: an unexpected exception in any actor's handler stops that actor, its supervisor
decides by its policy, the caller gets HostUnavailableError (never a half-updated actor), and the host recovers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import wait_until, worker

from agenthost import AgentHost, HostConfig, HostUnavailableError
from agenthost.actors import FakeClock, InjectedFault

pytestmark = pytest.mark.timeout(60)


class Armable:
    """A fault hook that raises InjectedFault once, in actor `child`, on its next message of type `message`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: tuple[str, str] | None = None
        self.fired = threading.Event()

    def arm(self, child: str, message: str) -> None:
        with self._lock:
            self._armed, self.fired = (child, message), threading.Event()

    def __call__(self, child: str, message: Any) -> None:
        with self._lock:
            if self._armed != (child, type(message).__name__):
                return
            self._armed = None
        self.fired.set()
        raise InjectedFault(f"injected into {child} handling {type(message).__name__}")


@pytest.fixture
def crashing_host(tmp_path, clock: FakeClock) -> Any:
    hook = Armable()
    host = AgentHost(HostConfig(storage_root=str(tmp_path / "root"), workers=1), clock=clock, fault_hook=hook).start()
    yield host, hook
    host.shutdown(drain_timeout_s=1.0)


# (child, message, how the caller triggers it, the children the host restarts)
CASES = [
    ("persistence", "ListTurns", lambda host, thread: host.turns(thread), ["persistence", "mapping", "turns", "pool"]),
    ("mapping", "ResolveThread", lambda host, thread: host.send(thread, "x"), ["mapping", "turns", "pool"]),
    ("turns", "SendMessage", lambda host, thread: host.send(thread, "x"), ["turns", "pool"]),
]


@pytest.mark.parametrize(("child", "message", "trigger", "restarted"), CASES, ids=[case[0] for case in CASES])
def test_an_exception_in_a_child_handler_reaches_the_host_and_the_caller(
    crashing_host, clock: FakeClock, events, child: str, message: str, trigger: Any, restarted: list[str]
) -> None:
    host, hook = crashing_host
    thread_id = host.create_thread()
    assert host.send(thread_id, "before").wait(20.0).status == "completed"
    hook.arm(child, message)
    with pytest.raises(HostUnavailableError, match=f"{child} crashed handling {message}.*InjectedFault"):
        trigger(host, thread_id)
    decision = wait_until("host decision", lambda: events.of(supervisor="host"))[0]
    assert (decision["child"], decision["decision"], decision["restarts"]) == (child, "restart", restarted)
    assert "InjectedFault" in decision["reason"] and decision["delay_s"] == 1.0
    assert host.status().state == "recovering"
    clock.advance(1.0)
    wait_until("running", lambda: (s := host.status()).state == "running" and s.workers[0].state == "ready")
    assert host.send(thread_id, "after").wait(20.0).status == "completed"
    assert [t.user_text for t in host.turns(thread_id)][-1] == "after"


def test_an_exception_in_the_pools_handler_restarts_the_pool(crashing_host, clock: FakeClock, events) -> None:
    host, hook = crashing_host
    old_pid = worker(host, 1).pid
    hook.arm("pool", "GetPoolStatus")
    status = host.status()  # the status read itself survives: the pool's part is missing
    assert hook.fired.is_set() and status.workers == ()
    decision = wait_until("host decision", lambda: events.of(supervisor="host"))[0]
    assert (decision["child"], decision["decision"], decision["restarts"]) == ("pool", "restart", ["pool"])
    clock.advance(1.0)
    replaced = wait_until("new pool", lambda: (s := host.status()).workers and s.workers[0].state == "ready" and s)
    assert replaced.workers[0].pid != old_pid  # the crashed pool stopped its runtime: none outlives its supervisor


def test_an_exception_in_a_workers_handler_is_decided_by_the_pool(crashing_host, clock: FakeClock, events) -> None:
    host, hook = crashing_host
    thread_id = host.create_thread()
    hook.arm("worker-1", "RuntimeCall")
    failed = host.send(thread_id, "crashes the worker actor").wait(20.0)
    assert failed.status == "failed" and "worker actor crashed" in (failed.error or "")
    restart = wait_until("pool decision", lambda: events.of(child="worker-1", decision="restart"))[0]
    assert "worker actor crashed: InjectedFault" in restart["reason"]
    assert not events.of(supervisor="host")  # the pool handled it: the host was not involved
    clock.advance(1.0)
    wait_until("worker back", lambda: worker(host, 1).state == "ready")
    assert host.send(thread_id, "after").wait(20.0).status == "completed"
