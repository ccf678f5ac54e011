"""Durable turn completions/s: agenthost's group commit against raw batched APSW commits.

- `measure_raw`: one `apsw.Connection` on a fresh temp file with journal_mode=WAL, synchronous=FULL and automatic
  checkpoints off, with agenthost's own schema (its migrations). `completions` pending turns are inserted first
  (untimed); then the completions are UPDATEs, MAX_BATCH (256) per transaction (one fsync'd commit per batch): the
  floor for a durable batched write of the same rows.
- `measure_breakdown`: the storage parts of a host completion timed alone (no actors): `finish_turns` per
  completion, and one transcript append (the batch's end records, one fsync) per batch, amortised; the rest of the
  host's time per completion is actor messaging.
- `measure_host`: a `PersistenceActor` (actors._persistence) on a fresh `storage.StorageRoot`; every turn is begun
  first (untimed `BeginTurn` asks), then every completion is told at once as `CompleteTurn` and the clock stops when
  the last `TurnPersisted` reply arrives. A reply means the completion is durable: committed by the group commit
  (up to MAX_BATCH per transaction, synchronous=FULL) AND its end record appended to its thread's transcript (one
  append and one fsync per thread per batch).

Not measured: concurrent writers, turns spread over many threads (each thread in a batch costs one transcript
append with one fsync). Both sides write under the same temp folder, so the figures depend on that file system's
fsync cost (set TMPDIR to measure another one). Any storage error propagates to the caller.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import apsw
import msgspec

from agenthost.actors import SystemClock
from agenthost.actors._persistence import MAX_BATCH, PersistenceActor
from agenthost.protocol._messages import BeginTurn, CompleteTurn, CreateThread, TurnPersisted
from agenthost.storage import StorageRoot, TurnFinish
from agenthost.storage._schema import apply_migrations
from bench._rate import Run
from bench._store import direct_store, written

__all__ = ["Breakdown", "measure_breakdown", "measure_host", "measure_raw"]

USER_TEXT = "bench question"
ASSISTANT_TEXT = "Reference reply to: bench question"
ASK_TIMEOUT_S = 60.0


def _turn_id(index: int) -> str:
    return f"turn-{index:06d}"


# --- raw: one UPDATE + COMMIT per completion ----------------------------------------------------------------------
def _open_raw(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", "FULL")
    conn.wal_autocheckpoint(0)
    settings = (conn.pragma("journal_mode"), conn.pragma("synchronous"))
    if settings != ("wal", 2):
        raise RuntimeError(
            f"raw database {str(path)!r}: journal_mode/synchronous are {settings!r}, expected ('wal', 2)"
        )
    return conn


def _insert_pending(conn: apsw.Connection, completions: int) -> None:
    """agenthost's own schema (its migrations), one project and thread, `completions` pending turns."""
    apply_migrations(conn)
    rows = [(_turn_id(i), "bench-thread", i + 1, USER_TEXT, "pending", time.time()) for i in range(completions)]
    with conn:
        conn.execute("INSERT INTO projects (project_id, name, created_at) VALUES ('bench', 'bench', 0)")
        conn.execute(
            "INSERT INTO threads (thread_id, project_id, title, created_at) VALUES "
            "('bench-thread', 'bench', 'bench', 0)"
        )
        conn.executemany(
            "INSERT INTO turns (turn_id, thread_id, seq, user_text, status, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


def measure_raw(completions: int, work_dir: Path, *, batch: int = MAX_BATCH) -> Run:
    """Completions/s of bare APSW commits, `batch` updates per transaction (see the module docstring)."""
    conn = _open_raw(work_dir / "raw.db")
    try:
        _insert_pending(conn, completions)
        started = time.perf_counter()
        for first in range(0, completions, batch):
            with conn:
                for index in range(first, min(first + batch, completions)):
                    conn.execute(
                        "UPDATE turns SET status = ?, assistant_text = ?, finished_at = ? WHERE turn_id = ?",
                        ("completed", ASSISTANT_TEXT, time.time(), _turn_id(index)),
                    )
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    return Run(count=completions, seconds=seconds)


class _Replies:
    """reply_to for CompleteTurn: counts TurnPersisted and fails loudly on an error."""

    def __init__(self, expected: int) -> None:
        self._left = expected
        self._done = threading.Event()
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def tell(self, message: TurnPersisted) -> None:
        with self._lock:
            if message.error is not None:
                self.errors.append(message.error)
            self._left -= 1
            if self._left == 0:
                self._done.set()

    def wait(self, timeout_s: float) -> None:
        if not self._done.wait(timeout_s):
            raise TimeoutError(f"completions not all persisted within {timeout_s:g} s")
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} completions failed to persist: {self.errors[0]}")


# --- host: BeginTurn (untimed), then every CompleteTurn told at once and timed until all are durable -----------
def measure_host(completions: int, work_dir: Path, *, threads: int = 1) -> Run:
    """Completions/s through the persistence actor's group commit (see the module docstring)."""
    root = StorageRoot(work_dir / "host-root")
    actor = PersistenceActor.start(root=root, clock=SystemClock(), wall=time.time)
    try:
        thread_ids = [f"bench-thread-{n}" for n in range(threads)]
        for thread_id in thread_ids:
            actor.ask(CreateThread(thread_id=thread_id, project_id="bench", title=thread_id), timeout=ASK_TIMEOUT_S)
        turns = [(_turn_id(index), thread_ids[index % threads]) for index in range(completions)]
        for turn_id, thread_id in turns:
            actor.ask(BeginTurn(turn_id=turn_id, thread_id=thread_id, user_text=USER_TEXT), timeout=ASK_TIMEOUT_S)
        replies = _Replies(completions)
        started = time.perf_counter()
        for turn_id, _ in turns:
            actor.tell(CompleteTurn(turn_id=turn_id, assistant_text=ASSISTANT_TEXT, worker_id=1, reply_to=replies))
        replies.wait(ASK_TIMEOUT_S)
        seconds = time.perf_counter() - started
    finally:
        actor.stop(timeout=ASK_TIMEOUT_S)
    return Run(count=completions, seconds=seconds)


class Breakdown(msgspec.Struct, frozen=True, kw_only=True):
    """Where one host completion's time goes, in microseconds per completion (no actors involved)."""

    finish_rows_us: float  # Database.finish_turns (validation, update, group commit), per completion
    transcript_us: float  # one append of the batch's end records to the thread's transcript, amortised


def measure_breakdown(completions: int, work_dir: Path, *, batch: int = MAX_BATCH) -> Breakdown:
    """The storage parts of a completion timed alone: what the host pays before any actor messaging."""
    with direct_store(work_dir, "breakdown-root", "bench") as (db, writer):
        written(writer.thread_created(db.create_thread("bench-thread", "bench", "bench", time.time())))
        for index in range(completions):
            db.begin_turn(_turn_id(index), "bench-thread", USER_TEXT, time.time())
        written(writer.turns_written(db.list_turns("bench-thread")))
        finishes = [
            TurnFinish(_turn_id(i), "completed", ASSISTANT_TEXT, None, time.time(), 1) for i in range(completions)
        ]
        started = time.perf_counter()
        for first in range(0, completions, batch):
            db.finish_turns(finishes[first : first + batch])
        rows_s = time.perf_counter() - started
        finished = db.list_turns("bench-thread")
        started = time.perf_counter()
        for first in range(0, completions, batch):  # as many transcript appends as the host's group commits
            written(writer.turns_written(finished[first : first + batch]))
            written(writer.sync_appends())
        transcript_s = time.perf_counter() - started
    return Breakdown(finish_rows_us=1e6 * rows_s / completions, transcript_us=1e6 * transcript_s / completions)
