"""No worker can wedge: a runtime that stops reading its stdin, a worker actor that stops answering, and a pool
with no worker up (messages wait instead of failing). Real runtime processes, driven by a FakeClock."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from conftest import process_gone, wait_until, worker

from agenthost.actors import FakeClock, WorkerWatch
from agenthost.protocol import ApprovalRequested, RuntimeFaults, kill_process_group
from agenthost.protocol._messages import Probe

pytestmark = pytest.mark.timeout(60)


def test_a_runtime_that_stops_reading_is_killed_and_its_thread_goes_on(make_host, clock: FakeClock, events) -> None:
    host = make_host(workers=1, request_timeout_s=5.0)
    thread_id = host.create_thread()
    assert host.send(thread_id, "warm up").wait(20.0).status == "completed"
    stopped = worker(host, 1).pid
    kill_process_group(stopped, signal.SIGSTOP)  # it reads nothing any more; 1 MB cannot fit in its pipe
    handle = host.send(thread_id, "x" * 1_000_000)
    wait_until("the request's deadline armed", lambda: clock.pending_due_times("call-deadline"))
    clock.advance(5.0)
    finished = handle.wait(20.0)
    assert finished.status == "failed" and "runtime stopped reading its stdin" in (finished.error or "")
    assert host.turns(thread_id)[-1].status == "failed"  # persisted before the caller heard it
    kill = wait_until("kill", lambda: events.of(child="worker-1", decision="kill"))[0]
    assert "runtime stopped reading its stdin" in kill["reason"]
    restart = wait_until("restart", lambda: events.of(child="worker-1", decision="restart"))[0]
    assert restart["delay_s"] == 1.0 and restart["reason"].startswith("runtime stopped reading its stdin")
    clock.advance(1.0)
    replaced = wait_until("a new runtime", lambda: (w := worker(host, 1)).state == "ready" and w.pid != stopped and w)
    assert replaced.generation == 2
    assert host.send(thread_id, "and after").wait(20.0).status == "completed"


class _Wedge:
    """A fault hook that blocks worker 1's actor on its next Probe (as a bug or a blocking call would)."""

    def __init__(self) -> None:
        import threading

        self.armed = False
        self.release = threading.Event()

    def __call__(self, child: str, message: Any) -> None:
        if self.armed and child == "worker-1" and isinstance(message, Probe):
            self.armed = False
            self.release.wait(30.0)


def test_a_wedged_worker_actor_is_killed_after_its_missed_probes(tmp_path, clock: FakeClock, events) -> None:
    from agenthost import AgentHost, HostConfig

    wedge = _Wedge()
    config = HostConfig(
        storage_root=str(tmp_path / "root"), workers=1, worker_watch=WorkerWatch(probe_interval_s=10.0, missed_probes=2)
    )
    host = AgentHost(config, clock=clock, fault_hook=wedge).start()
    try:
        pid = worker(host, 1).pid
        wedge.armed = True
        for tick in range(1, 4):  # probe 1 (wedges the actor), probe 2 (1 missed), probe 3 (2 missed: kill)
            wait_until(f"probe {tick} armed", lambda: clock.pending_due_times("probe"))
            clock.advance(10.0)
            if tick < 3:
                assert not events.of(child="worker-1", decision="kill")
        kill = wait_until("kill", lambda: events.of(child="worker-1", decision="kill"))[0]
        assert "did not answer 2 probes in a row (one every 10 s)" in kill["reason"]
        restart = wait_until("restart", lambda: events.of(child="worker-1", decision="restart"))[0]
        assert restart["delay_s"] == 1.0
        assert wait_until("old runtime gone", lambda: process_gone(pid))
        clock.advance(1.0)
        replaced = wait_until("replaced", lambda: (w := worker(host, 1)).state == "ready" and w.pid != pid and w)
        assert replaced.generation == 2
        thread_id = host.create_thread()
        assert host.send(thread_id, "served by the new worker").wait(20.0).status == "completed"
    finally:
        wedge.release.set()
        host.shutdown(drain_timeout_s=1.0)


def test_messages_wait_while_no_worker_is_up_and_run_in_order_once_one_is(make_host, clock: FakeClock, events) -> None:
    host = make_host(workers=1, worker_faults={1: RuntimeFaults(crash_on_start=True)})
    thread_id = host.create_thread()
    first, second = host.send(thread_id, "first"), host.send(thread_id, "second")
    assert first.queued and second.queued  # no worker is up: they wait, they do not fail
    assert wait_until("restart decided", lambda: events.of(child="worker-1", decision="restart"))
    with pytest.raises(TimeoutError):
        first.wait(0.2)
    host.set_worker_faults(1, None)
    clock.advance(1.0)
    assert first.wait(20.0).status == "completed" and second.wait(20.0).status == "completed"
    assert [t.user_text for t in host.turns(thread_id)] == ["first", "second"]


def test_a_failed_followup_keeps_its_error_and_can_be_retried(make_host, clock: FakeClock) -> None:
    host = make_host(workers=1, turn_timeout_s=30.0)
    thread_id = host.create_thread()
    first = host.send(thread_id, "RUN: first")  # asks for an approval nobody gives: fails at its deadline
    queued = host.send(thread_id, "RUN: second")  # the same, as a follow-up
    assert queued.queued
    first.wait_for(ApprovalRequested, 20.0)
    clock.advance(30.0)
    assert first.wait(20.0).status == "failed"
    queued.wait_for(ApprovalRequested, 20.0)
    clock.advance(30.0)
    failed = queued.wait(20.0)
    assert failed.status == "failed" and "deadline" in (failed.error or "")
    (row,) = host.followups(thread_id)
    assert (row.followup_id, row.state, row.turn_id) == (queued.turn_id, "failed", queued.turn_id)
    assert "turn deadline of 30 s exceeded" in (row.last_error or "")
    assert host.retry_followup(row.followup_id).state == "queued"
    retried = wait_until(
        "retried turn", lambda: (rows := host.followups(thread_id)) and rows[0].state == "dispatched" and rows[0]
    )
    assert retried.turn_id != queued.turn_id  # it runs as a new turn, in the same place of the queue
    turns = host.turns(thread_id)
    assert [t.user_text for t in turns] == ["RUN: first", "RUN: second", "RUN: second"]
    assert turns[-1].turn_id == retried.turn_id


def test_the_probe_of_a_healthy_worker_is_answered(make_host, clock: FakeClock, events) -> None:
    host = make_host(workers=1)
    for _ in range(5):
        wait_until("probe armed", lambda: clock.pending_due_times("probe"))
        clock.advance(5.0)
    assert not events.of(decision="kill")
    assert worker(host, 1).generation == 1
