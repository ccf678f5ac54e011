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
from agenthost.chaos._campaign_report import git_commit
from agenthost.chaos._campaign_settings import campaign_host_config
from agenthost.chaos._invariants import (
    StorageView,
    check_approvals,
    check_deadlines,
    check_events_recorded,
    check_liveness,
    check_restarts,
    check_storage,
    liveness_bound_s,
    processes_under,
)
from agenthost.protocol._live_faults import _CUT_OFF_LINE

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


def test_new_fault_kinds_have_bounded_fields_and_matching_targets(seed: int) -> None:
    kinds = ["RuntimeStopsReading", "ActorCrash", "SlowDisk"]
    schedule = generate_schedule(seed, 90, kinds, workers=3)
    assert chaos.decode_schedule(chaos.encode_schedule(schedule)) == schedule
    assert schedule.kinds() == {kind: 30 for kind in kinds}
    for event in schedule.events:
        fault = event.fault
        if isinstance(fault, chaos.RuntimeStopsReading):
            assert event.target in ("worker:1", "worker:2", "worker:3")
            assert 512 <= fault.size_kib <= 1024 and 1 <= fault.ops <= 2  # far more than a 64 KiB pipe holds
        elif isinstance(fault, chaos.ActorCrash):
            child = fault.child if not fault.child.startswith("worker-") else "worker"
            assert (child, fault.message) in chaos._schedule.ACTOR_CRASH_POINTS
            expected = f"worker:{fault.child.split('-')[1]}" if child == "worker" else "host"
            assert event.target == expected
        else:
            assert isinstance(fault, chaos.SlowDisk) and event.target == "storage"
            assert fault.delay_s > chaos.CampaignSettings().ask_timeout_s and 1 <= fault.syncs <= 2
    assert {type(e.fault).__name__ for e in schedule.events if e.target.startswith("worker:")} == {
        "RuntimeStopsReading",
        "ActorCrash",
    }


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


def test_restart_checker_counts_the_delay_from_the_decision_not_from_its_event() -> None:
    history = History()
    for worker, started_at in ((1, 10.0401), (2, 10.03)):  # on time from the decision; 10 ms early
        decision = SupervisorDecision(
            supervisor="pool",
            child=f"worker-{worker}",
            decision="restart",
            reason="test",
            attempt=3,
            delay_s=0.04,
            decided_at=10.0,
        )
        history.record(decision, t=10.005)  # emitted 5 ms after the decision (a thread switch in between)
        history.record(WorkerRestarting(worker=worker, attempt=3), t=started_at)
    messages = [v.message for v in check_restarts(history, POLICY, HOST_POLICY)]
    assert messages == [
        "worker-2 restarted 0.0100 s before its delay of 0.04 s (decision at 10.0000, start at 10.0300, host 1)"
    ]


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


def test_approval_checker_counts_an_answer_the_host_resolved_after_its_caller_gave_up() -> None:
    history = History()
    history.add("turn", t=2.0, event="ApprovalRequested", turn_id="turn-a", approval_id="approval-1")
    history.add("note", t=3.0, what="answer_failed", approval_id="approval-1", error="turns did not answer within 1 s")
    storage = StorageView(turns={}, threads={}, followups={}, transcripts={}, integrity=["ok"])
    assert len(check_approvals(history, storage)) == 1  # nobody answered it, as far as the runner knows
    history.add("turn", t=3.5, event="ApprovalResolved", turn_id="turn-a", approval_id="approval-1")
    assert check_approvals(history, storage) == []  # the host handled the answer after the caller's deadline


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


def _liveness_history(results: list[dict]) -> History:
    history = History()
    history.add("send", t=1.0, turn_id="turn-0", thread_id="a", queued=False, op=0)
    history.add("liveness_begin", t=10.0, bound_s=7.62, threads=["a", "b", "c", "d"])
    for result in results:
        history.add("liveness", t=18.0, bound_s=7.62, **result)
    return history


def test_liveness_checker_reports_a_thread_that_never_completes_after_healing() -> None:
    history = _liveness_history(
        [
            {"thread_id": "a", "turn_id": "turn-a", "status": "completed", "took_s": 0.4, "error": None},
            {"thread_id": "b", "turn_id": "turn-b", "status": "unfinished", "took_s": None, "error": None},
            {"thread_id": "c", "turn_id": "turn-c", "status": "completed", "took_s": 9.5, "error": None},
            # d: no result at all
        ]
    )
    messages = sorted(v.message for v in check_liveness(history))
    assert len(messages) == 3, messages
    assert messages[0].startswith("thread b: the new turn turn-b after healing ended unfinished")
    assert messages[1].startswith("thread c: the new turn turn-c after healing ended completed after 9.5 s")
    assert messages[2] == "thread d: no new turn was recorded after healing (bound 7.62 s)"
    assert all(v.invariant == "liveness" for v in check_liveness(history))
    healthy = _liveness_history(
        [{"thread_id": t, "turn_id": f"turn-{t}", "status": "completed", "took_s": 0.3, "error": None} for t in "abcd"]
    )
    assert check_liveness(healthy) == []
    no_phase = History()
    no_phase.add("send", t=1.0, turn_id="turn-0", thread_id="a", queued=False, op=0)
    [missing] = check_liveness(no_phase)
    assert "ran no liveness phase" in missing.message


def test_liveness_bound_is_the_policies_worst_case_recovery_time() -> None:
    # worker: 0.01 + 0.02 + 0.04 + 5 * 0.08 = 0.47 s; host: 0.01 + 0.02 + 0.04 + 0.08 = 0.15 s; turn: 2 s; slack 5 s
    assert liveness_bound_s(POLICY, HOST_POLICY, turn_timeout_s=2.0) == pytest.approx(7.62)
    assert liveness_bound_s(POLICY, HOST_POLICY, turn_timeout_s=2.0, slack_s=0.0) == pytest.approx(2.62)
    config = campaign_host_config("/nonexistent", 2, chaos.CampaignSettings())
    assert config.ask_timeout_s == chaos.CampaignSettings().ask_timeout_s < 2.0  # a SlowDisk sync outlasts it


def _seen_everything(history: History) -> None:
    history.add("send", t=1.0, turn_id="turn-a", thread_id="t", queued=False, op=0)
    history.add("fault", t=0.5, index=0, fault="WorkerKill9", injected=True)
    history.record(TurnDispatched(turn="turn-a", thread="t", worker=1), t=1.1)
    history.record(TurnEnded(turn="turn-a", thread="t", status="completed"), t=1.5)
    history.add("turn", t=1.6, event="TurnFinished", turn_id="turn-a", status="completed")


def test_events_recorded_checker_reports_a_blind_history() -> None:
    history = History()
    _seen_everything(history)
    _decision(history, 2.0, 1, 0.01)
    history.record(WorkerRestarting(worker=1, attempt=1), t=2.02)
    assert check_events_recorded(history) == []
    # the same campaign, but every event the checkers consume was renamed (or is no longer emitted)
    blind = History()
    blind.add("send", t=1.0, turn_id="turn-a", thread_id="t", queued=False, op=0)
    blind.add("fault", t=0.5, index=0, fault="WorkerKill9", injected=True)
    blind.add("log", t=1.1, event="turns.started", turn="turn-a", thread="t", worker=1)
    blind.add("log", t=1.5, event="turns.done", turn="turn-a", thread="t", status="completed")
    blind.add("log", t=2.0, event="supervisor.verdict", supervisor="pool", child="worker-1", decision="restart")
    blind.add("turn", t=1.6, event="TurnEnd", turn_id="turn-a", status="completed")
    violations = check_events_recorded(blind)
    assert {v.invariant for v in violations} == {"events_recorded"}
    text = "\n".join(v.message for v in violations)
    for missing in ("TurnDispatched", "TurnEnded", "TurnFinished", "SupervisorDecision"):
        assert f"no {missing}" in text, text
    assert all(v.at_fault == 0 for v in violations)
    # pool restarts decided, but the restarts they scheduled were never seen: the delay check would be blind
    unpaired = History()
    _seen_everything(unpaired)
    _decision(unpaired, 2.0, 1, 0.01)
    [violation] = check_events_recorded(unpaired)
    assert "no WorkerRestarting" in violation.message
    # a fired actor crash forces a decision too, even without a runtime kill
    crashed = History()
    crashed.add("send", t=1.0, turn_id="turn-a", thread_id="t", queued=False, op=0)
    crashed.record(TurnDispatched(turn="turn-a", thread="t", worker=1), t=1.1)
    crashed.record(TurnEnded(turn="turn-a", thread="t", status="failed"), t=1.5)
    crashed.add("turn", t=1.6, event="TurnFinished", turn_id="turn-a", status="failed")
    crashed.add("note", t=2.0, what="actor_crash_fired", fault=0, child="turns", message="SendMessage")
    [violation] = check_events_recorded(crashed)
    assert "no SupervisorDecision" in violation.message and "1 fired actor crashes" in violation.message
    assert check_events_recorded(History()) == []  # nothing acknowledged: nothing to see


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
        assert json_lines[-1] == _CUT_OFF_LINE[: len(_CUT_OFF_LINE) // 2]  # the first half of a whole line
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
    "RuntimeStopsReading",
    "ActorCrash",
]
# agenthost bugs the full campaign finds (reported, not fixed here); each pattern names one:
KNOWN_BUGS: dict[str, str] = {  # invariant -> message pattern of a bug not fixed yet (the five found before are fixed)
    # SlowDisk: while a sync holds the persistence actor, the turn coordinator handles one message with a chain of
    # storage asks (actors/_turnstore.py) that each wait the whole ask deadline and absorb the Timeout as a refusal;
    # TurnDeadline waits in its mailbox meanwhile, so a turn can end up to the slow sync's length past its deadline.
    "turn_deadlines": r"took .* over its deadline .*faults injected meanwhile: .*SlowDisk",
}


def _campaign(tmp_path: Path, seed: int, faults: int, kinds: list[str]) -> tuple[chaos.CampaignResult, History]:
    schedule = generate_schedule(seed, faults, kinds)
    print(f"chaos seed={seed} commit={git_commit()} faults={faults} kinds={kinds}")
    result = chaos.run_campaign(schedule, tmp_path / "root", shrink=False, history_path=tmp_path / "history.jsonl")
    assert set(result.faults_injected) == set(kinds), result.faults_skipped
    assert result.turns_acknowledged > 0
    assert processes_under(tmp_path / "root") == []  # no runtime or host process outlived the campaign
    history = History.load(tmp_path / "history.jsonl")
    liveness = history.entries("liveness")  # after healing, every thread completed a new turn in time
    assert [e.data["status"] for e in liveness] == ["completed"] * len(liveness) and len(liveness) == 4
    return result, history


def _notes(history: History, what: str) -> list[chaos.Entry]:
    return [e for e in history.entries("note") if e.data.get("what") == what]


@pytest.mark.timeout(180)
def test_short_campaign_of_runtime_faults_injects_every_kind_and_the_invariants_hold(tmp_path: Path, seed: int) -> None:
    result, history = _campaign(tmp_path, seed, 7 * len(CI_KINDS), CI_KINDS)
    assert result.violations == [], json.dumps(result.violations, indent=1)[:4000]
    assert result.turns_by_status.get("pending", 0) == 0
    assert any(d.decision == "restart" for _, d in history.typed(SupervisorDecision))  # the faults made the pool decide
    assert history.typed(WorkerEofMidLine) and history.typed(WorkerProtocolError)
    # a runtime that stopped reading was found out by its stalled stdin, and killed
    assert _notes(history, "stall_detected")
    assert any(
        "stopped reading its stdin" in d.reason for _, d in history.typed(SupervisorDecision) if d.decision == "kill"
    )
    # an injected crash of an actor was decided by a supervisor
    assert _notes(history, "actor_crash_fired")
    assert any("InjectedFault" in d.reason for _, d in history.typed(SupervisorDecision))


@pytest.mark.timeout(180)
def test_campaign_with_every_fault_kind_keeps_every_invariant(tmp_path: Path, seed: int) -> None:
    import re

    result, _history = _campaign(tmp_path, seed, 6 * len(FAULT_KINDS), list(FAULT_KINDS))
    assert result.host_processes >= 1 + result.faults_injected["HostKill9"] + result.faults_injected["StorageCrash"]
    # (a SlowDisk sync longer than the ask deadline makes the coordinator refuse what it cannot store and retry it by
    # policy, or an actor crash its supervisor decides: whether an ask falls into the slow sync is timing, so the
    # invariants above, not a particular event, are what this proves; S22's tests pin the refusal itself)
    for violation in result.violations:
        print("known bug:", violation["invariant"], violation["message"])
        pattern = KNOWN_BUGS.get(violation["invariant"])
        assert pattern and re.search(pattern, violation["message"]), violation


@pytest.mark.timeout(120)
def test_run_schedule_against_an_embedded_host_returns_no_violations(chaos_host, seed: int) -> None:
    kinds = ["WorkerKill9", "StdoutGarbage", "SlowStream", "ApprovalNeverAnswered", "HostKill9", "ActorCrash"]
    schedule = generate_schedule(seed, 12, kinds)
    print(f"chaos seed={seed}")
    history = History()
    violations = chaos.run_schedule(chaos_host, schedule, history=history)
    assert violations == [], [(v.invariant, v.message) for v in violations]
    injected = {e.data["fault"] for e in history.entries("fault") if e.data["injected"]}
    skipped = {e.data["fault"] for e in history.entries("fault") if not e.data["injected"]}
    assert "HostKill9" in skipped and "HostKill9" not in injected  # an embedded host cannot be killed
    assert "ActorCrash" in injected  # the chaos_host fixture's host has an armable fault hook
    workload = [
        e
        for e in [*history.entries("send"), *history.entries("send_failed")]
        if isinstance(e.data["op"], int) and "fault" not in e.data
    ]
    assert len(workload) == len(schedule.ops)
    liveness = history.entries("liveness")
    assert len(liveness) == schedule.threads and {e.data["status"] for e in liveness} == {"completed"}
