"""Storage-side invariant checkers (over the recorded `History` and the storage root, read-only), and the leak check.

Contract (each checker returns a list of `Violation`; none means the invariant held):
- `check_storage(history, storage)`: every acknowledged send is a turn in the DB (or, if it was queued, a durable
  follow-up) and terminal ("acknowledged_turns_durable"); no turn at all is left pending ("turns_terminal"); every
  transcript, as a reader sees it (up to its last complete record), starts with its title, ends with a newline,
  parses (v2: complete records only), and has markers for exactly the DB's turns: one (v1) or a pending one then
  at most one more (v2), the last one's phase matching the DB status ("transcripts_not_torn"); `integrity_check`
  is "ok" ("integrity_check").
- `check_approvals(history, storage)`: an approval the runner did not answer and whose turn did not end at its
  deadline must have been reset with a message: an ApprovalReset event, or (after a host kill, when no caller was
  left to tell) an "approval reset" card of its turn naming it in the thread's transcript ("approvals_reset"). An
  answer the host resolved counts as answered even when the runner's request failed (e.g. its caller timed out
  while the coordinator waited on a slow disk, and the answer was handled after): the host says so with
  ApprovalResolved.
- `check_leaks(history, root)`: no runtime or host process of the storage root is alive (after the campaign), and
  the host process's open fd count at the end is at most its first sample + `fd_slack` (default 16) ("no_leaks").
- `read_storage(root)` opens the database with SQLITE_OPEN_READONLY (never migrates or writes) and reads each
  transcript as a reader does (a torn tail after its last complete record is not part of it; `torn` counts its
  bytes); `processes_under(root)` lists the live processes started for a root.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import apsw
import msgspec

from agenthost.chaos._history import History
from agenthost.chaos._violations import Violation, violation

__all__ = [
    "StorageView",
    "check_approvals",
    "check_leaks",
    "check_storage",
    "processes_under",
    "read_storage",
]

_PHASE = {"pending": "pending", "completed": "completed", "failed": "failed", "interrupted": "failed"}
_V2_TRAILER = "\n<!-- agenthost:v2 "


class StorageView(msgspec.Struct, frozen=True, kw_only=True):
    turns: dict[str, dict[str, Any]]  # turn id -> row (thread_id, seq, status, error)
    threads: dict[str, str]  # thread id -> project id
    followups: dict[str, str]  # follow-up id -> state
    transcripts: dict[str, str | None]  # thread id -> text as a reader sees it (None: missing)
    integrity: list[str]
    torn: dict[str, int] = {}  # thread id -> bytes after its last complete record (readers ignore them)


def read_storage(root: str | Path) -> StorageView:
    """The DB rows and transcripts under `root`, read without writing anything."""
    root = Path(root)
    conn = apsw.Connection(str(root / "system" / "agenthost.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        turns = {
            row[0]: {"thread_id": row[1], "seq": row[2], "status": row[3], "error": row[4], "user_text": row[5]}
            for row in conn.execute("SELECT turn_id, thread_id, seq, status, error, user_text FROM turns")
        }
        threads = {row[0]: row[1] for row in conn.execute("SELECT thread_id, project_id FROM threads")}
        followups = {row[0]: row[1] for row in conn.execute("SELECT followup_id, state FROM followups")}
        integrity = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    from agenthost.storage import readable

    transcripts: dict[str, str | None] = {}
    torn: dict[str, int] = {}
    for thread_id, project_id in threads.items():
        path = root / "projects" / project_id / "threads" / f"{thread_id}.md"
        data = path.read_bytes() if path.exists() else None
        visible = None if data is None else readable(data)
        transcripts[thread_id] = None if visible is None else visible.decode("utf-8", errors="replace")
        if data is not None and visible is not None and len(visible) < len(data):
            torn[thread_id] = len(data) - len(visible)
    return StorageView(
        turns=turns, threads=threads, followups=followups, transcripts=transcripts, integrity=integrity, torn=torn
    )


def check_storage(history: History, storage: StorageView) -> list[Violation]:
    violations = []
    if storage.integrity != ["ok"]:
        violations.append(violation(history, "integrity_check", f"integrity_check: {storage.integrity[:5]}"))
    for entry in history.entries("send"):
        turn_id = str(entry.data["turn_id"])
        row = storage.turns.get(turn_id)
        if row is None:
            if entry.data.get("queued") and turn_id in storage.followups:
                continue
            violations.append(
                violation(
                    history,
                    "acknowledged_turns_durable",
                    f"acknowledged turn {turn_id} (thread {entry.data.get('thread_id')}, op {entry.data.get('op')}) "
                    "is not in the database",
                    entry.t,
                )
            )
        elif row["status"] == "pending":
            violations.append(
                violation(
                    history,
                    "acknowledged_turns_durable",
                    f"turn {turn_id} is still pending after the campaign",
                    entry.t,
                )
            )
    acknowledged = {str(e.data["turn_id"]) for e in history.entries("send")}
    send_errors = {str(e.data.get("op")): str(e.data.get("error")) for e in history.entries("send_failed")}
    for turn_id, row in sorted(storage.turns.items()):
        if row["status"] == "pending" and turn_id not in acknowledged:
            message = (
                f"turn {turn_id} (thread {row['thread_id']}, seq {row['seq']}) was never acknowledged to a caller "
                "and is still pending after the campaign"
            )
            op = re.match(r"op (\d+):", str(row["user_text"]))
            if op is not None and op.group(1) in send_errors:
                message += f"; its send (op {op.group(1)}) failed: {send_errors[op.group(1)]}"
            violations.append(violation(history, "turns_terminal", message))
    for thread_id, text in storage.transcripts.items():
        violations.extend(_check_transcript(history, storage, thread_id, text))
    return violations


def _check_transcript(history: History, storage: StorageView, thread_id: str, text: str | None) -> list[Violation]:
    from agenthost.storage import StorageError, parse_checkpoints, parse_transcript

    db_turns = {tid: row for tid, row in storage.turns.items() if row["thread_id"] == thread_id}
    if text is None:
        if not db_turns:
            return []
        return [violation(history, "transcripts_not_torn", f"thread {thread_id} has turns but no transcript")]
    phases: dict[str, list[str]] = {}
    for turn_id, phase in parse_checkpoints(text):
        phases.setdefault(turn_id, []).append(phase)
    problems = []
    duplicates = sorted(t for t, seen in phases.items() if len(seen) > 2 or (len(seen) == 2 and seen[0] != "pending"))
    if duplicates:
        problems.append(f"duplicate markers for {duplicates}")
    missing = sorted(set(db_turns) - set(phases))
    if missing:
        problems.append(f"no marker for DB turns {missing}")
    extra = sorted(set(phases) - set(db_turns))
    if extra:
        problems.append(f"markers for turns not in the DB {extra}")
    for turn_id, seen in phases.items():
        row = db_turns.get(turn_id)
        if row is not None and _PHASE[row["status"]] != seen[-1]:
            problems.append(f"turn {turn_id} marker phase {seen[-1]} but DB status {row['status']}")
    if not text.endswith("\n") or not text.startswith("# "):
        problems.append("transcript is cut off (no title or no final newline)")
    elif _V2_TRAILER in text:
        try:
            parse_transcript(text)
        except StorageError as error:
            problems.append(f"transcript does not parse: {error}")
    return [violation(history, "transcripts_not_torn", f"thread {thread_id}: {p}") for p in problems]


def check_approvals(history: History, storage: StorageView) -> list[Violation]:
    """Approval ids are per host process, so everything is keyed by (host incarnation, approval id)."""
    answered = {(e.host, e.data.get("approval_id")) for e in history.entries("answer")}
    turn_events = history.entries("turn")
    answered |= {(e.host, e.data.get("approval_id")) for e in turn_events if e.data.get("event") == "ApprovalResolved"}
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
            violation(
                history,
                "approvals_reset",
                f"approval {key[1]} of turn {turn_id} (thread {thread_id}, host {entry.host}) was pending at an "
                "interruption and never reset with a message (no ApprovalReset, no card in the transcript)",
                entry.t,
            )
        )
    return violations


def _turn_section_has_reset(text: str | None, turn_id: str, approval_id: str) -> bool:
    """The transcript holds an "approval reset" card of the turn naming `approval_id` (v2: a card record tied to the
    turn, wherever it was appended; v1: a card in the turn's section)."""
    if not text:
        return False
    if _V2_TRAILER in text:
        from agenthost.storage import StorageError, parse_transcript

        try:
            cards = parse_transcript(text).cards
        except StorageError:
            return False
        prefix = f"{approval_id}: "
        return any(c.turn_id == turn_id and c.kind == "approval reset" and c.text.startswith(prefix) for c in cards)
    start = text.find(f"<!-- checkpoint turn={turn_id} ")
    if start < 0:
        return False
    end = text.find("\n## Turn ", start)
    section = text[start:] if end < 0 else text[start:end]
    return f"**approval reset:** {approval_id}: " in section


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
        violation(history, "no_leaks", f"process {pid} still runs after the campaign: {cmd[:200]}")
        for pid, cmd in processes_under(root)
    ]
    samples: dict[int, list[int]] = {}
    for entry in history.entries("note"):
        if entry.data.get("what") == "fd_count":
            samples.setdefault(entry.host, []).append(int(entry.data["count"]))
    for host, counts in samples.items():
        if len(counts) >= 2 and counts[-1] > counts[0] + fd_slack:
            violations.append(
                violation(
                    history,
                    "no_leaks",
                    f"host {host} fd count grew from {counts[0]} to {counts[-1]} (slack {fd_slack})",
                )
            )
    return violations
