"""Chaos campaigns: deterministic schedules, live runtime faults, checkers that catch injected bugs, a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agenthost import chaos
from agenthost.actors import Backoff, RecoveryPolicy
from agenthost.actors._events import (
    SupervisorDecision,
    TurnDispatched,
    TurnEnded,
    WorkerEofMidLine,
    WorkerProtocolError,
    WorkerRestarting,
)
from agenthost.chaos import FAULT_KINDS, History, generate_schedule
from agenthost.chaos._campaign import git_commit
from agenthost.chaos._invariants import (
    StorageView,
    check_approvals,
    check_deadlines,
    check_restarts,
    check_storage,
    processes_under,
)

POLICY = RecoveryPolicy(backoff=Backoff(initial_s=0.01, max_s=0.08), max_attempts=8)
HOST_POLICY = RecoveryPolicy(backoff=Backoff(initial_s=0.01, max_s=0.08), max_attempts=4)


# --- schedules ----------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_schedule_json(seed: int) -> None:
    first = chaos.encode_schedule(generate_schedule(seed, 50))
    assert chaos.encode_schedule(generate_schedule(seed, 50)) == first
    assert chaos.encode_schedule(generate_schedule(seed + 1, 50)) != first
    schedule = chaos.decode_schedule(first)
    assert set(schedule.kinds()) == set(FAULT_KINDS)  # >= len(kinds) faults deal every kind
    assert [e.at for e in schedule.events] == sorted(e.at for e in schedule.events)
    assert all(0 <= e.at < len(schedule.ops) for e in schedule.events)


def test_schedule_arguments_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match="fault kind 'Meteor' is unknown"):
        generate_schedule(1, 5, ["Meteor"])
    with pytest.raises(ValueError, match="faults -1 is invalid"):
        generate_schedule(1, -1)
    with pytest.raises(ValueError, match="workers 0 is invalid"):
        generate_schedule(1, 5, workers=0)


# --- the checkers catch injected bugs -----------------------------------------------------------------------------
def _decision(history: History, t: float, attempt: int, delay_s: float, worker: int = 1) -> None:
    decision = SupervisorDecision(
        supervisor="pool", child=f"worker-{worker}", decision="restart", reason="test", attempt=attempt, delay_s=delay_s
    )
    history.record(decision, t=t)


def test_restart_checker_reports_an_early_restart_a_wrong_delay_and_a_broken_cap() -> None:
    history = History()
    _decision(history, 10.0, 3, 0.04)
    history.record(WorkerRestarting(worker=1, attempt=3), t=10.01)  # 30 ms early
    _decision(history, 20.0, 2, 0.05, worker=2)  # schedule says 0.02
    _decision(history, 30.0, 9, 0.08, worker=2)  # past the cap of 8
    messages = [v.message for v in check_restarts(history, POLICY, HOST_POLICY)]
    assert len(messages) == 3, messages
    assert any("restarted 0.0300 s before its delay" in m for m in messages)
    assert any("attempt 2 delay 0.05 s, schedule says 0.02 s" in m for m in messages)
    assert any("restart attempt 9 is outside 1..8" in m for m in messages)


def test_restart_checker_accepts_a_restart_on_schedule() -> None:
    history = History()
    _decision(history, 10.0, 3, 0.04)
    history.record(WorkerRestarting(worker=1, attempt=3), t=10.0401)
    assert check_restarts(history, POLICY, HOST_POLICY) == []


def test_deadline_and_approval_checkers_report_what_was_never_settled() -> None:
    history = History()
    history.record(TurnDispatched(turn="turn-a", thread="t", worker=1), t=1.0)
    history.record(TurnEnded(turn="turn-a", thread="t", status="failed", error="boom"), t=9.0)
    history.record(TurnDispatched(turn="turn-b", thread="t", worker=1), t=1.0)  # never finished, host not killed
    history.add("turn", t=2.0, event="ApprovalRequested", turn_id="turn-a", approval_id="approval-1")
    deadlines = check_deadlines(history, turn_timeout_s=2.0)
    assert {v.message.split(" ")[1] for v in deadlines} == {"turn-a", "turn-b"}
    storage = StorageView(
        turns={"turn-a": {"thread_id": "t", "seq": 1, "status": "failed", "error": "boom"}},
        threads={"t": "default"},
        followups={},
        transcripts={"t": "# t\n"},
        integrity=["ok"],
    )
    [approval] = check_approvals(history, storage)
    assert "approval approval-1 of turn turn-a" in approval.message


def test_storage_checker_reports_a_lost_turn_and_a_torn_transcript() -> None:
    history = History()
    history.add("fault", t=0.5, index=0, fault="HostKill9", injected=True)
    history.add("send", t=1.0, turn_id="turn-lost", thread_id="t", queued=False, op=3)
    marker = "<!-- checkpoint turn=turn-x phase=pending status=pending -->"
    storage = StorageView(
        turns={"turn-x": {"thread_id": "t", "seq": 1, "status": "completed", "error": None}},
        threads={"t": "default"},
        followups={},
        transcripts={"t": f"# t\n\n## Turn 1\n{marker}\n"},
        integrity=["ok"],
    )
    violations = check_storage(history, storage)
    assert {v.invariant for v in violations} == {"acknowledged_turns_durable", "transcripts_not_torn"}
    lost = next(v for v in violations if v.invariant == "acknowledged_turns_durable")
    assert "turn-lost" in lost.message and lost.at_fault == 0
    assert any("marker phase pending but DB status completed" in v.message for v in violations)


# --- live runtime faults -------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_faults_file_is_reread_live_and_eof_mid_line_cuts_a_line(tmp_path: Path) -> None:
    faults_file = tmp_path / "faults.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agenthost.protocol.reference_runtime",
            "--state-dir",
            str(tmp_path / "state"),
            "--faults-file",
            str(faults_file),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdin and proc.stdout

    def call(request_id: int, method: str, params: dict) -> dict:
        proc.stdin.write(json.dumps({"id": request_id, "method": method, "params": params}).encode() + b"\n")
        proc.stdin.flush()
        while True:
            message = json.loads(proc.stdout.readline())
            if message.get("id") == request_id:
                return message

    try:
        call(1, "initialize", {"clientInfo": {"name": "t", "version": "1"}})
        thread_id = call(2, "thread/start", {})["result"]["thread"]["id"]
        faults_file.write_text('{"eof_mid_line": true}')
        call(3, "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "hi"}]})
        rest = proc.stdout.read()
        assert proc.wait(10) == 0
        assert rest and not rest.endswith(b"\n")  # half a JSON line, then exit 0
        json_lines = rest.split(b"\n")
        with pytest.raises(ValueError):
            json.loads(json_lines[-1])
    finally:
        proc.kill()
        proc.wait(10)


# --- real campaigns -------------------------------------------------------------------------------------------------
CI_KINDS = [
    "WorkerKill9",
    "WorkerHang",
    "StdoutGarbage",
    "EofMidLine",
    "SlowStream",
    "CrashOnStart",
    "ApprovalNeverAnswered",
]
# agenthost bugs the full campaign finds (reported, not fixed here); each pattern names one:
KNOWN_BUGS: dict[str, str] = {}  # invariant -> message pattern of a bug not fixed yet (the four found are fixed)


def _campaign(tmp_path: Path, seed: int, faults: int, kinds: list[str]) -> tuple[chaos.CampaignResult, History]:
    schedule = generate_schedule(seed, faults, kinds)
    print(f"chaos seed={seed} commit={git_commit()} faults={faults} kinds={kinds}")
    result = chaos.run_campaign(schedule, tmp_path / "root", shrink=False, history_path=tmp_path / "history.jsonl")
    assert set(result.faults_injected) == set(kinds), result.faults_skipped
    assert result.turns_acknowledged > 0
    assert processes_under(tmp_path / "root") == []  # no runtime or host process outlived the campaign
    return result, History.load(tmp_path / "history.jsonl")


@pytest.mark.timeout(180)
def test_short_campaign_of_runtime_faults_injects_every_kind_and_the_invariants_hold(tmp_path: Path, seed: int) -> None:
    result, history = _campaign(tmp_path, seed, 100, CI_KINDS)
    assert result.violations == [], json.dumps(result.violations, indent=1)[:4000]
    assert result.turns_by_status.get("pending", 0) == 0
    assert any(d.decision == "restart" for _, d in history.typed(SupervisorDecision))  # the faults made the pool decide
    assert history.typed(WorkerEofMidLine) and history.typed(WorkerProtocolError)


@pytest.mark.timeout(180)
def test_campaign_with_every_fault_kind_keeps_every_invariant(tmp_path: Path, seed: int) -> None:
    import re

    result, _ = _campaign(tmp_path, seed, 120, list(FAULT_KINDS))
    assert result.host_processes >= 1 + result.faults_injected["HostKill9"] + result.faults_injected["StorageCrash"]
    for violation in result.violations:
        print("known bug:", violation["invariant"], violation["message"])
        pattern = KNOWN_BUGS.get(violation["invariant"])
        assert pattern and re.search(pattern, violation["message"]), violation


@pytest.mark.timeout(120)
def test_run_schedule_against_an_embedded_host_returns_no_violations(chaos_host, seed: int) -> None:
    kinds = ["WorkerKill9", "StdoutGarbage", "SlowStream", "ApprovalNeverAnswered", "HostKill9"]
    schedule = generate_schedule(seed, 10, kinds)
    print(f"chaos seed={seed}")
    history = History()
    violations = chaos.run_schedule(chaos_host, schedule, history=history)
    assert violations == []
    injected = {e.data["fault"] for e in history.entries("fault") if e.data["injected"]}
    skipped = {e.data["fault"] for e in history.entries("fault") if not e.data["injected"]}
    assert "HostKill9" in skipped and "HostKill9" not in injected  # an embedded host cannot be killed
    assert len(history.entries("send")) == len(schedule.ops)
