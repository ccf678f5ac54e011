"""Reconciliation after runtime restarts and coordinator/host restarts: order, nothing lost, callers told."""

from __future__ import annotations

import pytest
from conftest import wait_until, worker

from agenthost import AgentHost, HostConfig
from agenthost.actors import FakeClock, WorkerWatch
from agenthost.chaos import RuntimeFaults, kill_process_group
from agenthost.protocol import ApprovalRequested, ApprovalReset, Delta
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(60)

ORDER = (
    "turns.approvals_reset",
    "turns.finished",
    "turns.runtime_cache_cleared",
    "mapping.pins_moved",
    "turns.resuming",
)


def test_worker_restart_reconciles_in_the_contract_order(make_host, clock: FakeClock) -> None:
    host = make_host(workers=2)
    thread_id = host.create_thread()
    with capture_events(*ORDER) as log:
        handle = host.send(thread_id, "RUN: make deploy")
        handle.wait_for(ApprovalRequested, 20.0)
        kill_process_group(worker(host, host.status().pins[thread_id]).pid)
        handle.wait_for(ApprovalReset, 20.0)
        assert handle.wait(20.0).status == "failed"
        assert host.send(thread_id, "again").wait(20.0).status == "completed"  # resumed lazily on next use
    names = [event["event"] for event in log.events]
    first = [names.index(name) for name in ORDER]
    assert first == sorted(first), names


def test_a_crashed_coordinator_is_replaced_and_callers_hear_how_their_turn_ended(make_host, clock: FakeClock) -> None:
    from agenthost.protocol._messages import GetChildren

    host = make_host(workers=1, worker_faults={1: RuntimeFaults(delta_delay_s=0.2)}, deltas_per_reply=50)
    thread_id = host.create_thread()
    handle = host.send(thread_id, "long answer")
    handle.wait_for(Delta, 20.0)
    host._host.ask(GetChildren())["turns"].tell(object())  # crash the coordinator mid-turn
    wait_until("host restarting", lambda: host.status().state == "recovering")
    clock.advance(1.0)
    finished = handle.wait(20.0)
    assert finished.status == "failed" and "restart" in (finished.error or "")
    assert host.turns(thread_id)[-1].status == "failed"
    wait_until(
        "running", lambda: (s := host.status()).state == "running" and s.workers and s.workers[0].state == "ready"
    )
    assert host.send(thread_id, "after the crash").wait(20.0).status == "completed"


_DOOMED_HOST = """
import sys
from agenthost import AgentHost, HostConfig
from agenthost._logging import configure
configure("warning")
from agenthost.chaos import RuntimeFaults
config = HostConfig(storage_root=sys.argv[1], workers=1, worker_faults={1: RuntimeFaults(hang_on="turn/start")})
host = AgentHost(config).start()
thread_id = host.create_thread(thread_id="doomed")
host.send(thread_id, "never answered")
assert host.send(thread_id, "queued behind it").queued
assert host.send(thread_id, "queued behind that").queued
print("READY", flush=True)
sys.stdin.read()
"""


def test_a_new_host_fails_orphaned_turns_and_dispatches_queued_followups(tmp_path) -> None:
    import signal
    import subprocess
    import sys

    root = str(tmp_path / "root")
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_HOST, root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert doomed.stdout.readline().strip() == "READY"
    finally:
        doomed.send_signal(signal.SIGKILL)  # the whole host process dies: no shutdown bookkeeping at all
        doomed.wait(10)
    config = HostConfig(storage_root=root, workers=1)
    assert [t.status for t in _turns(config)] == ["pending"]

    with AgentHost(config, clock=FakeClock()) as host:
        turns = wait_until(  # both, in order: the thread found queued at start is fetched after each of its turns
            "follow-ups dispatched and done",
            lambda: (t := host.turns("doomed")) and len(t) == 3 and t[2].status == "completed" and t,
        )
        assert (turns[0].user_text, turns[0].status) == ("never answered", "failed")
        assert "agenthost restarted" in (turns[0].error or "")
        assert [(t.user_text, t.status) for t in turns[1:]] == [
            ("queued behind it", "completed"),
            ("queued behind that", "completed"),
        ]


def _turns(config: HostConfig):
    from agenthost.storage import Database, StorageRoot

    db = Database.open(StorageRoot(config.storage_root).db_path)
    try:
        return [t for thread in db.list_threads() for t in db.list_turns(thread.thread_id)]
    finally:
        db.close()


def test_degraded_worker_gets_no_new_pins_and_is_killed_after_repeated_timeouts(
    make_host, clock: FakeClock, events
) -> None:
    host = make_host(
        workers=2,
        request_timeout_s=5.0,
        worker_watch=WorkerWatch(max_consecutive_timeouts=2),
        worker_faults={1: RuntimeFaults(hang_on="thread/start")},
    )
    first = host.send(host.create_thread(thread_id="a"), "one")  # least loaded: worker 1 (hangs)
    wait_until("call sent", lambda: host.status().active_turns[0].phase == "thread_start")
    wait_until("deadline armed", lambda: clock.now() + 5.0 in clock.pending_due_times("call-deadline"))
    clock.advance(5.0)
    assert first.wait(20.0).status == "failed"
    degrade = wait_until("degrade", lambda: events.of(child="worker-1", decision="degrade"))[0]
    assert "thread/start timed out after 5 s" in degrade["reason"]
    assert wait_until("degraded", lambda: worker(host, 1).state == "degraded")
    second = host.send(host.create_thread(thread_id="b"), "two")  # worker 1 is degraded: goes to worker 2
    assert second.wait(20.0).status == "completed" and host.status().pins["b"] == 2
    third = host.send("a", "three")  # still pinned to degraded worker 1: times out again -> kill
    wait_until(
        "call sent", lambda: host.status().active_turns and host.status().active_turns[0].phase == "thread_start"
    )
    wait_until("deadline armed", lambda: clock.now() + 5.0 in clock.pending_due_times("call-deadline"))
    clock.advance(5.0)
    assert third.wait(20.0).status == "failed"
    kill = wait_until("kill", lambda: events.of(child="worker-1", decision="kill"))[0]
    assert "2 calls in a row timed out (max 2)" in kill["reason"]
    restart = wait_until("restart", lambda: events.of(child="worker-1", decision="restart"))[0]
    assert "2 calls in a row timed out" in restart["reason"]


@pytest.mark.parametrize(("restart", "restarted"), [("temporary", False), ("transient", True), ("permanent", True)])
def test_restart_types_after_a_kill(make_host, events, restart: str, restarted: bool) -> None:
    host = make_host(workers=1, worker_restart=restart)
    kill_process_group(worker(host, 1).pid)
    decision = wait_until("decision", lambda: events.of(child="worker-1"))[0]
    assert (decision["decision"] == "restart") is restarted
    if not restarted:
        assert decision["decision"] == "no_restart" and worker(host, 1).state == "stopped"
