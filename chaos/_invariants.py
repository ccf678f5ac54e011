"""Invariant checkers run after a chaos campaign, over the recorded `History` and the storage root (read-only).

Contract (each checker returns a list of `Violation`; none means the invariant held):
- `check_restarts(history, worker_policy, host_policy, tolerance_s)`: every "supervisor.decision" "restart" has
  1 <= attempt <= max_attempts and delay_s == schedule(policy)[attempt-1] (no jitter); a decision past the cap is
  never "restart". For the pool, the next "pool.worker_restarting" of that worker in the same host incarnation
  (with no other decision about it in between) comes at or after decision time + delay_s - `tolerance_s` (the
  events are stamped when logged, a few microseconds after the decision was taken; default 0.002 s).
- `check_deadlines(history, turn_timeout_s, slack_s)`: every "turns.dispatched" turn ends in the same host
  incarnation ("turns.finished", "turns.reconciled_pending" or a TurnFinished event) within turn_timeout_s +
  slack_s, unless that incarnation was killed (then the storage check covers it) or failed (its storage refused
  every write) and a later incarnation settled the turn ("turns.reconciled_pending").
- `check_approvals(history, storage)`: an approval the runner did not answer and whose turn did not end at its
  deadline must have been reset with a message: an ApprovalReset event, or (after a host kill, when no caller was
  left to tell) an "approval reset" card naming it in the thread's transcript.
- `check_storage(history, storage)`: every acknowledged send is a turn in the DB (or, if it was queued, a durable
  follow-up) and terminal; no turn at all is left pending ("turns_terminal"); every transcript parses with exactly
  one marker per DB turn whose phase matches the DB status; `integrity_check` is "ok".
- `check_final_status(history)`: in the last "final_status" note no thread is pinned to a worker that is not ready
  or degraded.
- `check_leaks(history, root)`: no runtime or host process of the storage root is alive (after the campaign), and
  the host process's open fd count at the end is at most its first sample + `fd_slack` (default 16).
- `read_storage(root)` opens the database with SQLITE_OPEN_READONLY (never migrates or writes).
- Each violation names the invariant, says what broke (ids, times) and carries `at_fault`: the index of the last
  fault injected at or before the evidence, the prefix a reproducer needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import apsw
import msgspec

from agenthost.actors._events import (
    PendingReconciled,
    SupervisorDecision,
    TurnDispatched,
    TurnEnded,
    WorkerRestarting,
)
from agenthost.chaos._history import Entry, History

__all__ = [
    "INVARIANTS",
    "StorageView",
    "Violation",
    "check_all",
    "check_approvals",
    "check_deadlines",
    "check_final_status",
    "check_leaks",
    "check_restarts",
    "check_storage",
    "processes_under",
    "read_storage",
]

INVARIANTS: tuple[str, ...] = (
    "acknowledged_turns_durable",
    "transcripts_not_torn",
    "integrity_check",
    "restart_caps_and_delays",
    "turn_deadlines",
    "approvals_reset",
    "pins_healthy",
    "no_leaks",
    "turns_terminal",
)
_PHASE = {"pending": "pending", "completed": "completed", "failed": "failed", "interrupted": "failed"}


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    invariant: str
    message: str
    at_fault: int | None = None  # index of the last fault injected before the evidence (None: before any)


class StorageView(msgspec.Struct, frozen=True, kw_only=True):
    turns: dict[str, dict[str, Any]]  # turn id -> row (thread_id, seq, status, error)
    threads: dict[str, str]  # thread id -> project id
    followups: dict[str, str]  # follow-up id -> state
    transcripts: dict[str, str | None]  # thread id -> text (None: missing)
    integrity: list[str]


def read_storage(root: str | Path) -> StorageView:
    """The DB rows and transcripts under `root`, read without writing anything."""
    root = Path(root)
    conn = apsw.Connection(str(root / "system" / "agenthost.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        turns = {
            row[0]: {"thread_id": row[1], "seq": row[2], "status": row[3], "error": row[4]}
            for row in conn.execute("SELECT turn_id, thread_id, seq, status, error FROM turns")
        }
        threads = {row[0]: row[1] for row in conn.execute("SELECT thread_id, project_id FROM threads")}
        followups = {row[0]: row[1] for row in conn.execute("SELECT followup_id, state FROM followups")}
        integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    transcripts: dict[str, str | None] = {}
    for thread_id, project_id in threads.items():
        path = root / "projects" / project_id / "threads" / f"{thread_id}.md"
        transcripts[thread_id] = path.read_text(encoding="utf-8") if path.exists() else None
    return StorageView(turns=turns, threads=threads, followups=followups, transcripts=transcripts, integrity=integrity)


def _fault_index_at(history: History, t: float) -> int | None:
    """Index of the last injected fault at or before time `t`."""
    last = None
    for entry in history.entries("fault"):
        if entry.t <= t and entry.data.get("injected"):
            last = entry.data["index"]
    return last


def _violation(history: History, invariant: str, message: str, t: float | None = None) -> Violation:
    at = _fault_index_at(history, t) if t is not None else _last_fault(history)
    return Violation(invariant=invariant, message=message, at_fault=at)


def _last_fault(history: History) -> int | None:
    faults = [e.data["index"] for e in history.entries("fault") if e.data.get("injected")]
    return faults[-1] if faults else None


# --- supervision ------------------------------------------------------------------------------------------------
def check_restarts(
    history: History, worker_policy: Any, host_policy: Any, tolerance_s: float = 0.002
) -> list[Violation]:
    from agenthost.actors import schedule

    delays = {"pool": schedule(worker_policy), "host": schedule(host_policy)}
    caps = {"pool": worker_policy.max_attempts, "host": host_policy.max_attempts}
    decisions = [(e, d) for e, d in history.typed(SupervisorDecision) if d.supervisor in delays]
    violations = [v for e, d in decisions for v in _check_decision(history, e, d, delays, caps)]
    for (entry, decision), start in _pool_restarts(history):
        due = entry.t + decision.delay_s
        if start.t < due - tolerance_s:
            violations.append(
                _violation(
                    history,
                    "restart_caps_and_delays",
                    f"{decision.child} restarted {due - start.t:.4f} s before its delay of {decision.delay_s} s "
                    f"(decision at {entry.t:.4f}, start at {start.t:.4f}, host {entry.host})",
                    start.t,
                )
            )
    return violations


def _check_decision(
    history: History,
    entry: Entry,
    decision: SupervisorDecision,
    delays: dict[str, tuple[float, ...]],
    caps: dict[str, int],
) -> list[Violation]:
    supervisor = decision.supervisor
    if decision.decision != "restart":
        return []
    attempt, delay_s = decision.attempt, decision.delay_s
    who = f"{supervisor} decision for {decision.child} (host {entry.host}, t={entry.t:.4f})"
    if not 1 <= attempt <= caps[supervisor]:
        return [
            _violation(
                history,
                "restart_caps_and_delays",
                f"{who}: restart attempt {attempt} is outside 1..{caps[supervisor]}",
                entry.t,
            )
        ]
    expected = delays[supervisor][attempt - 1]
    if abs(delay_s - expected) > 1e-9:
        return [
            _violation(
                history,
                "restart_caps_and_delays",
                f"{who}: attempt {attempt} delay {delay_s} s, schedule says {expected} s",
                entry.t,
            )
        ]
    return []


def _pool_restarts(history: History) -> list[tuple[tuple[Entry, SupervisorDecision], Entry]]:
    """(pool "restart" decision, the WorkerRestarting that acted on it), in history (emission) order: the first
    start of that worker recorded after the decision, in the same host, before any other decision on it."""
    pairs = []
    waiting: dict[tuple[int, str], tuple[Entry, SupervisorDecision]] = {}  # (host, child) -> open restart decision
    for entry, event in history.typed_many(SupervisorDecision, WorkerRestarting):
        if isinstance(event, SupervisorDecision) and event.supervisor == "pool":
            key = (entry.host, event.child)
            if event.decision == "restart":
                waiting[key] = (entry, event)
            elif event.decision in ("give_up", "escalate", "no_restart"):
                waiting.pop(key, None)
        elif isinstance(event, WorkerRestarting):
            decision = waiting.pop((entry.host, f"worker-{event.worker}"), None)
            if decision is not None:
                pairs.append((decision, entry))
    return pairs


# --- turns ------------------------------------------------------------------------------------------------------
def _killed_hosts(history: History) -> set[int]:
    return {e.host for e in history.entries("host_kill")}


def check_deadlines(history: History, turn_timeout_s: float, slack_s: float = 2.0) -> list[Violation]:
    reconciled = history.typed(PendingReconciled)
    finished: dict[tuple[int, Any], Entry] = {(e.host, event.turn): e for e, event in reconciled}
    finished.update(
        {(e.host, e.data.get("turn_id")): e for e in history.entries("turn") if e.data.get("event") == "TurnFinished"}
    )
    finished.update({(e.host, event.turn): e for e, event in history.typed(TurnEnded)})
    killed = _killed_hosts(history)
    failed = {e.host for e in history.entries("host_stop") if not e.data.get("clean", True)}
    settled_later = {(e.host, event.turn) for e, event in reconciled}
    violations = []
    for entry, dispatched in history.typed(TurnDispatched):
        key = (entry.host, dispatched.turn)
        end = finished.get(key)
        if end is None:
            # a host that FAILED (its storage refused every write) cannot settle its turns; the next host does
            if entry.host in failed and any(t == key[1] and h > entry.host for h, t in settled_later):
                continue
            if entry.host not in killed:
                violations.append(
                    _violation(
                        history,
                        "turn_deadlines",
                        f"turn {key[1]} dispatched at {entry.t:.3f} (host {entry.host}) never finished",
                        entry.t,
                    )
                )
            continue
        took = end.t - entry.t
        if took > turn_timeout_s + slack_s:
            violations.append(
                _violation(
                    history,
                    "turn_deadlines",
                    f"turn {key[1]} took {took:.3f} s, over its deadline {turn_timeout_s:g} s + {slack_s:g} s",
                    end.t,
                )
            )
    return violations


def check_approvals(history: History, storage: StorageView) -> list[Violation]:
    """Approval ids are per host process, so everything is keyed by (host incarnation, approval id)."""
    answered = {(e.host, e.data.get("approval_id")) for e in history.entries("answer")}
    turn_events = history.entries("turn")
    resets = {
        (e.host, e.data.get("approval_id"))
        for e in turn_events
        if e.data.get("event") == "ApprovalReset" and e.data.get("message")
    }
    violations = []
    for entry in turn_events:
        if entry.data.get("event") != "ApprovalRequested":
            continue
        key, turn_id = (entry.host, entry.data.get("approval_id")), str(entry.data.get("turn_id"))
        if key in answered or key in resets:
            continue
        thread_id = storage.turns.get(turn_id, {}).get("thread_id")
        if _turn_section_has_reset(storage.transcripts.get(thread_id) if thread_id else None, turn_id, str(key[1])):
            continue
        violations.append(
            _violation(
                history,
                "approvals_reset",
                f"approval {key[1]} of turn {turn_id} (thread {thread_id}, host {entry.host}) was pending at an "
                "interruption and never reset with a message (no ApprovalReset, no card in the transcript)",
                entry.t,
            )
        )
    return violations


def _turn_section_has_reset(text: str | None, turn_id: str, approval_id: str) -> bool:
    """The turn's section of the transcript holds an "approval reset" card naming `approval_id`."""
    if not text:
        return False
    start = text.find(f"<!-- checkpoint turn={turn_id} ")
    if start < 0:
        return False
    end = text.find("\n## Turn ", start)
    section = text[start:] if end < 0 else text[start:end]
    return f"**approval reset:** {approval_id}: " in section


# --- storage ----------------------------------------------------------------------------------------------------
def check_storage(history: History, storage: StorageView) -> list[Violation]:
    violations = []
    if storage.integrity != ["ok"]:
        violations.append(_violation(history, "integrity_check", f"integrity_check: {storage.integrity[:5]}"))
    for entry in history.entries("send"):
        turn_id = str(entry.data["turn_id"])
        row = storage.turns.get(turn_id)
        if row is None:
            if entry.data.get("queued") and turn_id in storage.followups:
                continue
            violations.append(
                _violation(
                    history,
                    "acknowledged_turns_durable",
                    f"acknowledged turn {turn_id} (thread {entry.data.get('thread_id')}, op {entry.data.get('op')}) "
                    "is not in the database",
                    entry.t,
                )
            )
        elif row["status"] == "pending":
            violations.append(
                _violation(
                    history,
                    "acknowledged_turns_durable",
                    f"turn {turn_id} is still pending after the campaign",
                    entry.t,
                )
            )
    acknowledged = {str(e.data["turn_id"]) for e in history.entries("send")}
    for turn_id, row in sorted(storage.turns.items()):
        if row["status"] == "pending" and turn_id not in acknowledged:
            violations.append(
                _violation(
                    history,
                    "turns_terminal",
                    f"turn {turn_id} (thread {row['thread_id']}, seq {row['seq']}) was never acknowledged to a caller "
                    "and is still pending after the campaign",
                )
            )
    for thread_id, text in storage.transcripts.items():
        violations.extend(_check_transcript(history, storage, thread_id, text))
    return violations


def _check_transcript(history: History, storage: StorageView, thread_id: str, text: str | None) -> list[Violation]:
    from agenthost.storage import parse_checkpoints

    db_turns = {tid: row for tid, row in storage.turns.items() if row["thread_id"] == thread_id}
    if text is None:
        if not db_turns:
            return []
        return [_violation(history, "transcripts_not_torn", f"thread {thread_id} has turns but no transcript")]
    markers = parse_checkpoints(text)
    problems = []
    seen = [turn_id for turn_id, _ in markers]
    duplicates = sorted({turn_id for turn_id in seen if seen.count(turn_id) > 1})
    if duplicates:
        problems.append(f"duplicate markers for {duplicates}")
    missing = sorted(set(db_turns) - set(seen))
    if missing:
        problems.append(f"no marker for DB turns {missing}")
    extra = sorted(set(seen) - set(db_turns))
    if extra:
        problems.append(f"markers for turns not in the DB {extra}")
    for turn_id, phase in markers:
        row = db_turns.get(turn_id)
        if row is not None and _PHASE[row["status"]] != phase:
            problems.append(f"turn {turn_id} marker phase {phase} but DB status {row['status']}")
    if not text.endswith("\n") or not text.startswith("# "):
        problems.append("transcript is cut off (no title or no final newline)")
    return [_violation(history, "transcripts_not_torn", f"thread {thread_id}: {p}") for p in problems]


# --- end state --------------------------------------------------------------------------------------------------
def check_final_status(history: History) -> list[Violation]:
    finals = [e for e in history.entries("note") if e.data.get("what") == "final_status"]
    if not finals:
        return []
    status = finals[-1].data
    states = {int(w["worker_id"]): w["state"] for w in status.get("workers", [])}
    violations = []
    for thread_id, worker_id in sorted(status.get("pins", {}).items()):
        state = states.get(int(worker_id))
        if state not in ("ready", "degraded"):
            violations.append(
                _violation(
                    history,
                    "pins_healthy",
                    f"thread {thread_id} is pinned to worker {worker_id} in state {state} at the end",
                    finals[-1].t,
                )
            )
    return violations


def processes_under(root: str | Path, exclude: frozenset[int] = frozenset()) -> list[tuple[int, str]]:
    """(pid, cmdline) of live processes started for `root`: runtimes (whose arguments name `<root>/system/`) and
    campaign host processes (whose config names the root)."""
    needles = (os.fsencode(str(Path(root) / "system") + os.sep), os.fsencode(f'"root": "{root}"'))
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append((int(name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def check_leaks(history: History, root: str | Path, fd_slack: int = 16) -> list[Violation]:
    violations = [
        _violation(history, "no_leaks", f"process {pid} still runs after the campaign: {cmd[:200]}")
        for pid, cmd in processes_under(root)
    ]
    samples: dict[int, list[int]] = {}
    for entry in history.entries("note"):
        if entry.data.get("what") == "fd_count":
            samples.setdefault(entry.host, []).append(int(entry.data["count"]))
    for host, counts in samples.items():
        if len(counts) >= 2 and counts[-1] > counts[0] + fd_slack:
            violations.append(
                _violation(
                    history,
                    "no_leaks",
                    f"host {host} fd count grew from {counts[0]} to {counts[-1]} (slack {fd_slack})",
                )
            )
    return violations


def check_all(
    history: History,
    root: str | Path,
    *,
    worker_policy: Any,
    host_policy: Any,
    turn_timeout_s: float,
    leaks: bool = True,
) -> list[Violation]:
    storage = read_storage(root)
    violations = [
        *check_storage(history, storage),
        *check_restarts(history, worker_policy, host_policy),
        *check_deadlines(history, turn_timeout_s),
        *check_approvals(history, storage),
        *check_final_status(history),
    ]
    if leaks:
        violations.extend(check_leaks(history, root))
    return violations
