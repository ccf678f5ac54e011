"""Let it crash, for asks too: an unexpected exception in any actor's handler stops that actor, its supervisor
decides by its policy, the caller gets HostUnavailableError (never a half-updated actor), and the host recovers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from conftest import wait_until, worker

from agenthost import AgentHost, Delta, HostConfig, HostUnavailableError, RuntimeFaults
from agenthost.actors import FakeClock, InjectedFault
from agenthost.protocol import kill_process_group

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
    ("mapping", "ResolveThreads", None, ["mapping", "turns", "pool"]),  # the send is accepted first (see below)
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
    accepted = None
    if trigger is None:  # the turn's begin was durable before the mapping was asked: the send returned a handle
        accepted = host.send(thread_id, "x")
    else:
        with pytest.raises(HostUnavailableError, match=f"{child} crashed handling {message}.*InjectedFault"):
            trigger(host, thread_id)
    decision = wait_until("host decision", lambda: events.of(supervisor="host"))[0]
    assert (decision["child"], decision["decision"], decision["restarts"]) == (child, "restart", restarted)
    assert "InjectedFault" in decision["reason"] and decision["delay_s"] == 1.0
    assert host.status().state == "recovering"
    clock.advance(1.0)
    wait_until("running", lambda: (s := host.status()).state == "running" and s.workers[0].state == "ready")
    if accepted is not None:  # the restarted coordinator settles it: failed and persisted, never lost
        finished = accepted.wait(20.0)
        assert finished.status == "failed"
        assert host.turns(thread_id)[-1].status == "failed"
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


def test_a_child_that_dies_while_others_restart_is_decided_first(crashing_host, clock: FakeClock, events) -> None:
    """Found by chaos (seed 2030): persistence crashed while mapping was being restarted; the restart chain then
    failed at mapping (it hydrates from persistence) and the host kept restarting mapping, never persistence."""
    host, hook = crashing_host
    thread_id = host.create_thread()
    hook.arm("mapping", "ResolveThreads")
    host.send(thread_id, "crash the mapping")  # accepted (durable) before the mapping is asked
    wait_until("mapping restart decided", lambda: events.of(supervisor="host", child="mapping"))
    hook.arm("persistence", "ListTurns")
    with pytest.raises(HostUnavailableError):
        host.turns(thread_id)  # persistence dies while the mapping's restart waits for its delay
    clock.advance(1.0)  # the restart chain starts mapping, which finds persistence dead
    decision = wait_until("persistence decided", lambda: events.of(supervisor="host", child="persistence"))[0]
    assert decision["decision"] == "restart" and decision["restarts"] == ["persistence", "mapping", "turns", "pool"]
    clock.advance(2.0)
    wait_until("running", lambda: (s := host.status()).state == "running" and s.workers[0].state == "ready")
    assert host.send(thread_id, "after").wait(20.0).status == "completed"


def test_a_completion_written_just_before_the_coordinator_crashed_is_still_told(
    crashing_host, clock: FakeClock, events
) -> None:
    """Found by chaos: the group commit wrote a completed turn, then the coordinator crashed before it could tell
    the caller; the next coordinator finds the caller registered and the turn over, and tells it."""
    host, hook = crashing_host
    thread_id = host.create_thread()
    hook.arm("turns", "TurnPersisted")
    handle = host.send(thread_id, "completes, then the coordinator crashes")
    wait_until("coordinator restart decided", lambda: events.of(supervisor="host", child="turns"))
    clock.advance(1.0)
    finished = handle.wait(20.0)
    assert (finished.status, finished.text) == (
        "completed",
        "Reference reply to: completes, then the coordinator crashes",
    )
    assert host.turns(thread_id)[-1].status == "completed"


def test_after_one_ask_times_out_a_message_asks_no_more(tmp_path, clock: FakeClock) -> None:
    """Found by chaos (SlowDisk): one coordinator message ran a chain of asks to a slow persistence, each waiting the
    full ask deadline while the coordinator's mailbox, turn deadlines included, waited behind it."""
    seen: list[str] = []
    slow = threading.Event()

    def slow_first_finish(child: str, message: Any) -> None:
        if child == "persistence" and type(message).__name__ == "FinishTurn":
            seen.append(message.turn_id)
            if len(seen) == 1:
                slow.wait(1.0)  # a slow fsync: longer than the coordinator's ask deadline

    config = HostConfig(
        storage_root=str(tmp_path / "root"),
        workers=1,
        ask_timeout_s=0.3,
        worker_faults={1: RuntimeFaults(delta_delay_s=5.0)},
    )
    host = AgentHost(config, clock=clock, fault_hook=slow_first_finish).start()
    try:
        first, second = host.create_thread(), host.create_thread()
        handles = [host.send(first, "one two three"), host.send(second, "four five six")]
        for handle in handles:
            handle.wait_for(Delta, 20.0)
        kill_process_group(worker(host, 1).pid)  # both turns end at once: two FinishTurn asks in one message
        ends = [handle.wait(20.0) for handle in handles]
        assert all(end.status == "failed" and "not persisted yet" in (end.error or "") for end in ends[1:])
        host.threads()  # persistence has handled everything sent to it so far
        assert len(seen) == 1  # the second end was refused at once, not asked into the same slow actor
        slow.set()
        clock.advance(1.0)  # PERSIST_RETRY writes what was refused
        wait_until("both ends durable", lambda: all(host.turns(t)[-1].status == "failed" for t in (first, second)))
    finally:
        slow.set()
        host.shutdown(drain_timeout_s=1.0)


def test_a_slow_actor_is_not_asked_again_until_it_answered(tmp_path, clock: FakeClock) -> None:
    """Found by chaos (SlowDisk, after begins were batched): every later message asked the slow persistence again,
    each waiting the full ask deadline, so a turn deadline behind them fired seconds late."""
    received: list[str] = []
    slow = threading.Event()

    def slow_first_finish(child: str, message: Any) -> None:
        if child == "persistence":
            received.append(type(message).__name__)
            if type(message).__name__ == "FinishTurn" and received.count("FinishTurn") == 1:
                slow.wait(5.0)  # a slow fsync: far longer than the coordinator's ask deadline

    config = HostConfig(
        storage_root=str(tmp_path / "root"),
        workers=1,
        ask_timeout_s=0.3,
        worker_faults={1: RuntimeFaults(delta_delay_s=5.0)},
    )
    host = AgentHost(config, clock=clock, fault_hook=slow_first_finish).start()
    try:
        first, later = host.create_thread(), host.create_thread()
        handle = host.send(first, "one two three")
        handle.wait_for(Delta, 20.0)
        kill_process_group(worker(host, 1).pid)  # its end: a FinishTurn the persistence sits on
        assert "not persisted yet" in (handle.wait(20.0).error or "")
        asked_before = len(received)
        with pytest.raises(HostUnavailableError, match="has not answered yet"):
            host.send(later, "refused at once: the persistence has not answered its last ask")
        assert received[asked_before:] == []  # nothing more was asked of the slow actor
        slow.set()
        wait_until("answered", lambda: host.threads() is not None)
        clock.advance(1.0)  # PERSIST_RETRY writes the refused end; the worker restarts
        wait_until("end durable", lambda: host.turns(first)[-1].status == "failed")
    finally:
        slow.set()
        host.shutdown(drain_timeout_s=1.0)
