"""What an operator can do to a running host: replace or repair a worker, and work the follow-up queue."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import wait_until, worker

from agenthost.actors import FakeClock
from agenthost.protocol import ApprovalRequested, TurnFinished

pytestmark = pytest.mark.timeout(60)


def test_restart_worker_replaces_the_runtime_at_once_without_counting_a_failure(make_host, clock, events) -> None:
    host = make_host(workers=1)
    old = worker(host, 1)
    assert host.restart_worker(1, "new settings") == 2
    back = wait_until("replaced", lambda: (w := worker(host, 1)).state == "ready" and w.generation == 2 and w)
    assert back.pid != old.pid and back.attempt == 0 and back.restarts == 1
    kill, restart = events.of(child="worker-1", decision="kill")[0], events.of(child="worker-1", decision="restart")[0]
    assert "restart requested by the operator: new settings" in kill["reason"]
    assert restart["delay_s"] == 0.0 and "requested by the operator" in restart["reason"]
    assert host.send(host.create_thread(), "after").wait(20.0).status == "completed"


def test_a_given_up_worker_can_be_brought_back_by_the_operator(make_host, clock: FakeClock) -> None:
    from agenthost.actors import RecoveryPolicy
    from agenthost.protocol import RuntimeFaults

    host = make_host(
        workers=2, worker_policy=RecoveryPolicy(max_attempts=1), worker_faults={1: RuntimeFaults(crash_on_start=True)}
    )
    clock.advance(1.0)
    wait_until("given up", lambda: worker(host, 1).state == "given_up")
    host.set_worker_faults(1, None)
    host.restart_worker(1)
    assert wait_until("back", lambda: (w := worker(host, 1)).state == "ready" and w.attempt == 0 and w)


def test_repair_worker_writes_a_report_and_restarts_it(make_host) -> None:
    host = make_host(workers=1)
    summary = host.repair_worker(1)
    assert summary.startswith("worker 1: moved nothing; the built-in runtime keeps one state folder")
    report_path = re.search(r"report: (\S+)\)", summary).group(1)
    report = json.loads(Path(report_path).read_text())
    assert (report["worker_id"], report["runtime"], report["moved"]) == (1, "builtin", [])
    assert worker(host, 1).generation == 2


def test_the_followup_queue_can_be_reordered_edited_cancelled_and_sent_by_hand(make_host) -> None:
    host = make_host(workers=1)
    thread_id = host.create_thread()
    blocker = host.send(thread_id, "RUN: wait")  # holds the thread while we work the queue
    blocker.wait_for(ApprovalRequested, 20.0)
    first, second, third = (host.send(thread_id, text) for text in ("first", "second", "third"))
    assert first.queued and second.queued and third.queued
    assert host.queue_depths() == {thread_id: 3}
    assert [f.text for f in host.move_followup(third.turn_id, 0)] == ["third", "first", "second"]
    host.edit_followup(first.turn_id, "first, edited")
    host.cancel_followup(second.turn_id)
    cancelled = second.wait(5.0)
    assert (cancelled.status, cancelled.error) == (
        "interrupted",
        "cancelled: the message was removed from the queue before it ran",
    )
    host.set_dispatch_mode(thread_id, "manual")
    approval = host.approvals()[0]
    assert (approval.thread_id, approval.command) == (thread_id, "wait")
    host.answer_approval(approval.approval_id, "accept")
    assert blocker.wait(20.0).status == "completed"
    with pytest.raises(TimeoutError):
        third.wait(0.3)  # manual mode: nothing runs by itself
    host.send_next(thread_id)
    assert third.wait(20.0).status == "completed"
    host.set_dispatch_mode(thread_id, "auto")
    done = first.wait(20.0)
    assert isinstance(done, TurnFinished) and done.text == "Reference reply to: first, edited"
    assert [t.user_text for t in host.turns(thread_id)] == ["RUN: wait", "third", "first, edited"]
