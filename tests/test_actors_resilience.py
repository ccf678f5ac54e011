"""Bugs the chaos campaigns found, each pinned by a test: approvals across a host kill, callers of a failed host,
turn ends the disk refused, transcripts that failed after their commit."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from conftest import wait_until

from agenthost import AgentHost, HostConfig
from agenthost.actors import FakeClock, RecoveryPolicy
from agenthost.chaos import FailingFs, FaultPlan, FaultyVFS, RuntimeFaults
from agenthost.protocol import Delta
from agenthost.protocol._messages import GetChildren
from agenthost.storage import parse_checkpoints

pytestmark = pytest.mark.timeout(60)

_HOST_WITH_OPEN_APPROVAL = """
import sys
from agenthost import AgentHost, HostConfig
from agenthost._logging import configure
from agenthost.protocol import ApprovalRequested
configure("warning")
host = AgentHost(HostConfig(storage_root=sys.argv[1], workers=1)).start()
thread_id = host.create_thread(thread_id="approval-thread")
request = host.send(thread_id, "RUN: rm -rf /tmp/never").wait_for(ApprovalRequested, 20)
print(request.approval_id, flush=True)
sys.stdin.read()
"""


def test_an_approval_left_open_by_a_killed_host_is_reset_with_a_card(tmp_path) -> None:
    root = str(tmp_path / "root")
    doomed = subprocess.Popen(
        [sys.executable, "-c", _HOST_WITH_OPEN_APPROVAL, root], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        approval_id = doomed.stdout.readline().strip()
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    assert approval_id.startswith("approval-")
    with AgentHost(HostConfig(storage_root=root, workers=1), clock=FakeClock()) as host:
        transcript = host.transcript("approval-thread")
        assert f"**approval requested:** {approval_id}: the runtime asks to run `rm -rf /tmp/never`" in transcript
        assert f"**approval reset:** {approval_id}: reset: agenthost restarted" in transcript
        assert host.turns("approval-thread")[0].status == "failed"


def test_callers_hear_their_turn_failed_when_the_host_gives_up(make_host, clock: FakeClock) -> None:
    host = make_host(
        workers=1, host_policy=RecoveryPolicy(max_attempts=1), worker_faults={1: RuntimeFaults(hang_on="turn/start")}
    )
    thread_id = host.create_thread()
    host._host.ask(GetChildren())["turns"].tell(object())  # first crash: restarted after 1 s
    wait_until("recovering", lambda: host.status().state == "recovering")
    clock.advance(1.0)
    wait_until(
        "running", lambda: (s := host.status()).state == "running" and s.workers and s.workers[0].state == "ready"
    )
    waiting = host.send(thread_id, "never answered")
    wait_until("dispatched", lambda: host.status().active_turns)
    host._host.ask(GetChildren())["turns"].tell(object())  # second crash: attempts exhausted
    finished = waiting.wait(20.0)
    assert finished.status == "failed" and "agenthost failed" in (finished.error or "")
    assert host.status().state == "failed"


def test_a_completion_the_full_disk_refused_is_retried_until_it_lands(tmp_path) -> None:
    clock = FakeClock()
    with FaultyVFS(None) as vfs:
        config = HostConfig(
            storage_root=str(tmp_path / "root"),
            workers=1,
            deltas_per_reply=4,
            worker_faults={1: RuntimeFaults(delta_delay_s=0.2)},
        )
        with AgentHost(config, clock=clock, storage_vfs=vfs.vfs_name) as host:
            thread_id = host.create_thread()
            handle = host.send(thread_id, "finish me")
            handle.wait_for(Delta, 20.0)
            vfs.plan = FaultPlan(op="write", nth=1, persistent=True, error="full")
            finished = handle.wait(20.0)
            assert finished.status == "failed" and "not persisted yet (retrying)" in (finished.error or "")
            assert host.turns(thread_id)[0].status == "pending"  # reads still work; the end is not lost
            vfs.plan = None  # disk space freed
            due = wait_until("retry armed", lambda: clock.pending_due_times("persist-retry"))
            assert due == [clock.now() + 1.0]  # PERSIST_RETRY's first delay
            clock.advance(1.0)
            row = wait_until("persisted", lambda: (t := host.turns(thread_id)[0]).status == "completed" and t)
            assert row.assistant_text == "Reference reply to: finish me"


def test_a_failed_transcript_write_keeps_the_commit_and_is_rewritten_later(tmp_path) -> None:
    fs = FailingFs(step="write", nth=3)  # 1: thread created, 2: turn begun (append), 3: turn completed (append)
    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1)
    with AgentHost(config, clock=FakeClock(), transcript_fs=fs) as host:
        thread_id = host.create_thread()
        assert host.send(thread_id, "one").wait(20.0).status == "completed"  # acknowledged: the DB has it
        first = host.turns(thread_id)[0]
        assert first.status == "completed"
        assert parse_checkpoints(host.transcript(thread_id)) == [(first.turn_id, "pending")]  # stale for now
        assert host.send(thread_id, "two").wait(20.0).status == "completed"
        phases = dict(parse_checkpoints(host.transcript(thread_id)))
        assert phases[first.turn_id] == "completed"
