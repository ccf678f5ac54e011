"""The agenthost SQLite database: one APSW connection in WAL mode plus typed repository methods.

Contract:
- ``Database.open(path)`` opens (creating if absent; the parent folder must exist) and configures the connection,
  then verifies each setting by reading it back, raising ``SchemaError`` naming the pragma if it did not take:
  journal_mode=WAL, synchronous=FULL (2), automatic WAL checkpoints off (0), busy timeout 5000 ms,
  foreign_keys=ON. It then runs the schema migrations (see ``_schema``). An in-memory database is refused
  (its journal mode cannot be WAL).
- The object is not thread-safe by design: the persistence actor owns it and uses it from one thread.
- Every write runs in exactly one transaction; ``finish_turns`` finishes many turns in one transaction (all or
  nothing). Times are caller-supplied wall-clock float seconds (``now``).
- Bad input raises ``StorageError`` (or ``InvalidIdError`` / ``UnknownThreadError`` / ``UnknownTurnError``) naming
  the bad value; the transaction is rolled back. SQLite I/O failures (IOError, FullError, CantOpenError,
  ReadOnlyError, CorruptError, NotADBError) raise ``StorageIOError`` with the apsw exception as ``__cause__``; any
  other apsw error raises ``StorageError``, also chained.
- Terminal states are final: a turn that is completed/failed/interrupted cannot be finished again nor get a worker;
  a follow-up that is done/failed cannot change state.
- Listing order: projects and threads by (created_at, id); turns and follow-ups by seq; action cards by card_id
  (insertion order); pending turns by (created_at, thread_id, seq); mappings by thread_id.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import apsw
import msgspec

from ._errors import (
    SchemaError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
    StorageIOError,
    TurnAlreadyFinishedError,
    UnknownThreadError,
    UnknownTurnError,
)
from ._ids import validate_id
from ._rows import (
    FOLLOWUP_STATES,
    TERMINAL_TURN_STATUSES,
    ActionCardRow,
    FollowUpRow,
    FollowUpState,
    MappingRow,
    ProjectRow,
    ThreadRow,
    TurnFinish,
    TurnRow,
)
from ._schema import apply_migrations

__all__ = ["BUSY_TIMEOUT_MS", "CheckpointMode", "Database"]

BUSY_TIMEOUT_MS: int = 5000
CheckpointMode = Literal["PASSIVE", "FULL", "RESTART", "TRUNCATE"]

_CHECKPOINT_MODES: dict[str, int] = {
    "PASSIVE": apsw.SQLITE_CHECKPOINT_PASSIVE,
    "FULL": apsw.SQLITE_CHECKPOINT_FULL,
    "RESTART": apsw.SQLITE_CHECKPOINT_RESTART,
    "TRUNCATE": apsw.SQLITE_CHECKPOINT_TRUNCATE,
}
_REQUIRED_PRAGMAS: tuple[tuple[str, object], ...] = (
    ("journal_mode", "wal"),
    ("synchronous", 2),
    ("wal_autocheckpoint", 0),
    ("busy_timeout", BUSY_TIMEOUT_MS),
    ("foreign_keys", 1),
)
_IO_ERRORS: tuple[type[apsw.Error], ...] = (
    apsw.IOError,
    apsw.FullError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.CorruptError,
    apsw.NotADBError,
)
_TERMINAL_FOLLOWUP_STATES: tuple[str, ...] = ("done", "cancelled")
_PRAGMA_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

RowT = TypeVar("RowT", bound=msgspec.Struct)


class Database:
    """Typed access to the agenthost database. Create with ``Database.open(path)``."""

    __slots__ = ("_closed", "_conn", "_path")

    def __init__(self, conn: apsw.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, vfs: str | None = None) -> Database:
        """Open (creating if needed), verify the pragmas and migrate. `vfs` names a registered APSW VFS (used by
        fault-injection tests); None is SQLite's default."""
        db_path = Path(os.fspath(path))
        with _translate_errors(f"opening database {str(db_path)!r}"):
            conn = apsw.Connection(str(db_path)) if vfs is None else apsw.Connection(str(db_path), vfs=vfs)
        try:
            with _translate_errors(f"configuring database {str(db_path)!r}"):
                _configure(conn)
                apply_migrations(conn)
        except BaseException:
            _close_quietly(conn)  # the error being raised says why; a close error must not replace it
            raise
        return cls(conn, db_path)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def schema_version(self) -> int:
        with _translate_errors("reading the schema version"):
            return int(self._conn.pragma("user_version"))

    def close(self, *, checkpoint: bool = True) -> None:
        """TRUNCATE-checkpoint the WAL (when ``checkpoint``) and close; closing twice is a no-op."""
        if self._closed:
            return
        try:
            if checkpoint:
                self.checkpoint("TRUNCATE")
        except BaseException:
            self._closed = True
            _close_quietly(self._conn)  # keep the checkpoint's error, not a follow-on close error
            raise
        self._closed = True
        with _translate_errors(f"closing database {str(self._path)!r}"):
            self._conn.close()

    def quick_check(self) -> list[str]:
        """`PRAGMA quick_check`: ["ok"] for a sound database, otherwise the problems found (at most 100)."""
        with _translate_errors("running quick_check"):
            return [str(row[0]) for row in self._conn.execute("PRAGMA quick_check(100)")]

    def set_wal_hook(self, hook: Callable[[int], None] | None) -> None:
        """Call `hook(wal_pages)` after every commit with the WAL's size in pages (None removes it)."""
        if hook is None:
            self._conn.set_wal_hook(None)
            return

        def on_commit(_conn: apsw.Connection, _dbname: str, pages: int) -> int:
            hook(pages)
            return apsw.SQLITE_OK

        self._conn.set_wal_hook(on_commit)

    def checkpoint(self, mode: CheckpointMode = "PASSIVE") -> tuple[int, int]:
        """Run a WAL checkpoint; return (frames in the WAL, frames checkpointed)."""
        if mode not in _CHECKPOINT_MODES:
            raise StorageError(f"checkpoint mode {mode!r} is invalid: expected one of {tuple(_CHECKPOINT_MODES)}")
        with _translate_errors(f"{mode} checkpoint"):
            wal_frames, checkpointed_frames = self._conn.wal_checkpoint(mode=_CHECKPOINT_MODES[mode])
        return int(wal_frames), int(checkpointed_frames)

    def pragma(self, name: str) -> object:
        """Read the current value of pragma ``name`` (reading only; no value is ever set)."""
        if not isinstance(name, str) or not _PRAGMA_NAME_RE.fullmatch(name):
            raise StorageError(f"pragma name {name!r} is invalid: expected an identifier")
        with _translate_errors(f"reading pragma {name}"):
            return self._conn.pragma(name)

    # --- projects --------------------------------------------------------------------------------------------

    def ensure_project(self, project_id: str, name: str, now: float) -> ProjectRow:
        """Insert the project if absent; return the stored row (an existing row keeps its name and time)."""
        validate_id("project id", project_id)
        values = (project_id, _text("project name", name), _time("now", now))
        with self._transaction(f"ensuring project {project_id!r}"):
            self._conn.execute(
                "INSERT INTO projects (project_id, name, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (project_id) DO NOTHING",
                values,
            )
            return self._require_row(ProjectRow, "project_id", project_id)

    def list_projects(self) -> list[ProjectRow]:
        return self._select_all(ProjectRow, "projects", "", (), "created_at, project_id")

    # --- threads ---------------------------------------------------------------------------------------------

    def create_thread(self, thread_id: str, project_id: str, title: str, now: float) -> ThreadRow:
        validate_id("thread id", thread_id)
        validate_id("project id", project_id)
        row = ThreadRow(
            thread_id=thread_id, project_id=project_id, title=_text("thread title", title), created_at=_time("now", now)
        )
        with self._transaction(f"creating thread {thread_id!r}"):
            if self._select_one(ProjectRow, "project_id", project_id) is None:
                raise StorageError(
                    f"unknown project id {project_id!r} for thread {thread_id!r}: call ensure_project first"
                )
            if self._select_one(ThreadRow, "thread_id", thread_id) is not None:
                raise StorageError(f"thread id {thread_id!r} already exists")
            self._insert("threads", row)
        return row

    def get_thread(self, thread_id: str) -> ThreadRow:
        validate_id("thread id", thread_id)
        with _translate_errors(f"reading thread {thread_id!r}"):
            return self._require_thread(thread_id)

    def list_threads(self) -> list[ThreadRow]:
        return self._select_all(ThreadRow, "threads", "", (), "created_at, thread_id")

    # --- runtime-thread mappings -----------------------------------------------------------------------------

    def save_mapping(self, thread_id: str, worker_id: int, runtime_thread_id: str | None, now: float) -> MappingRow:
        """Insert or replace the thread's single mapping row."""
        validate_id("thread id", thread_id)
        row = MappingRow(
            thread_id=thread_id,
            worker_id=_integer("worker id", worker_id),
            runtime_thread_id=_optional_text("runtime thread id", runtime_thread_id),
            updated_at=_time("now", now),
        )
        with self._transaction(f"saving mapping of thread {thread_id!r}"):
            self._require_thread(thread_id)
            self._conn.execute(
                "INSERT INTO runtime_thread_mappings (thread_id, worker_id, runtime_thread_id, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (thread_id) DO UPDATE SET worker_id = excluded.worker_id, "
                "runtime_thread_id = excluded.runtime_thread_id, updated_at = excluded.updated_at",
                _values(row),
            )
        return row

    def delete_mapping(self, thread_id: str) -> None:
        """Remove the thread's mapping; no-op when it has none."""
        validate_id("thread id", thread_id)
        with self._transaction(f"deleting mapping of thread {thread_id!r}"):
            self._conn.execute("DELETE FROM runtime_thread_mappings WHERE thread_id = ?", (thread_id,))

    def load_mappings(self) -> list[MappingRow]:
        return self._select_all(MappingRow, "runtime_thread_mappings", "", (), "thread_id")

    # --- turns -----------------------------------------------------------------------------------------------

    def begin_turn(self, turn_id: str, thread_id: str, user_text: str, now: float) -> TurnRow:
        """Insert a pending turn with seq = 1 + the thread's highest seq."""
        validate_id("turn id", turn_id)
        validate_id("thread id", thread_id)
        text = _text("user text", user_text)
        created_at = _time("now", now)
        with self._transaction(f"beginning turn {turn_id!r}"):
            return self._begin_turn_row(turn_id, thread_id, text, created_at)

    def _begin_turn_row(self, turn_id: str, thread_id: str, text: str, created_at: float) -> TurnRow:
        """Insert a pending turn; the caller holds the transaction."""
        self._require_thread(thread_id)
        if self._select_one(TurnRow, "turn_id", turn_id) is not None:
            raise StorageError(f"turn id {turn_id!r} already exists")
        row = TurnRow(
            turn_id=turn_id,
            thread_id=thread_id,
            seq=self._next_seq("turns", thread_id),
            user_text=text,
            assistant_text="",
            status="pending",
            error=None,
            worker_id=None,
            created_at=created_at,
            finished_at=None,
        )
        self._insert("turns", row)
        return row

    def set_turn_worker(self, turn_id: str, worker_id: int) -> None:
        """Record which worker runs the pending turn; a finished turn raises ``StorageError``."""
        validate_id("turn id", turn_id)
        worker = _integer("worker id", worker_id)
        with self._transaction(f"setting worker of turn {turn_id!r}"):
            turn = self._require_turn(turn_id)
            if turn.status != "pending":
                raise TurnAlreadyFinishedError(f"turn {turn_id!r} is already {turn.status}; terminal states are final")
            self._conn.execute("UPDATE turns SET worker_id = ? WHERE turn_id = ?", (worker, turn_id))

    def finish_turn(
        self,
        turn_id: str,
        status: Literal["completed", "failed", "interrupted"],
        assistant_text: str,
        error: str | None,
        now: float,
    ) -> TurnRow:
        return self.finish_turns([TurnFinish(turn_id, status, assistant_text, error, now)])[0]

    def finish_turns(self, finishes: Sequence[TurnFinish]) -> list[TurnRow]:
        """Finish every turn in one transaction (group commit): all are applied, or none and the error is raised."""
        if not finishes:
            return []
        turn_ids = [getattr(finish, "turn_id", finish) for finish in finishes]
        with self._transaction(f"finishing turns {turn_ids!r}"):
            return [self._finish_one(finish) for finish in finishes]

    def get_turn(self, turn_id: str) -> TurnRow:
        validate_id("turn id", turn_id)
        with _translate_errors(f"reading turn {turn_id!r}"):
            return self._require_turn(turn_id)

    def list_turns(self, thread_id: str) -> list[TurnRow]:
        self.get_thread(thread_id)
        return self._select_all(TurnRow, "turns", "WHERE thread_id = ?", (thread_id,), "seq")

    def pending_turns(self) -> list[TurnRow]:
        return self._select_all(TurnRow, "turns", "WHERE status = 'pending'", (), "created_at, thread_id, seq")

    # --- action cards ----------------------------------------------------------------------------------------

    def add_action_card(self, thread_id: str, turn_id: str | None, kind: str, text: str, now: float) -> ActionCardRow:
        """Append a user-facing note to the thread, optionally tied to one of its turns."""
        validate_id("thread id", thread_id)
        if turn_id is not None:
            validate_id("turn id", turn_id)
        values = (thread_id, turn_id, _card_kind(kind), _text("action card text", text), _time("now", now))
        with self._transaction(f"adding action card to thread {thread_id!r}"):
            self._require_thread(thread_id)
            if turn_id is not None:
                self._require_turn_of_thread(turn_id, thread_id)
            self._conn.execute(
                "INSERT INTO action_cards (thread_id, turn_id, kind, text, created_at) VALUES (?, ?, ?, ?, ?)", values
            )
            return ActionCardRow(card_id=self._conn.last_insert_rowid(), **_fields_of(ActionCardRow, values, skip=1))

    def list_action_cards(self, thread_id: str) -> list[ActionCardRow]:
        self.get_thread(thread_id)
        return self._select_all(ActionCardRow, "action_cards", "WHERE thread_id = ?", (thread_id,), "card_id")

    # --- follow-up queue -------------------------------------------------------------------------------------

    def enqueue_followup(self, followup_id: str, thread_id: str, text: str, now: float) -> FollowUpRow:
        """Queue a message for the thread with seq = 1 + the thread's highest follow-up seq."""
        validate_id("follow-up id", followup_id)
        validate_id("thread id", thread_id)
        message = _text("follow-up text", text)
        created_at = _time("now", now)
        with self._transaction(f"enqueueing follow-up {followup_id!r}"):
            self._require_thread(thread_id)
            if self._select_one(FollowUpRow, "followup_id", followup_id) is not None:
                raise StorageError(f"follow-up id {followup_id!r} already exists")
            row = FollowUpRow(
                followup_id=followup_id,
                thread_id=thread_id,
                seq=self._next_seq("followups", thread_id),
                text=message,
                state="queued",
                created_at=created_at,
            )
            self._insert("followups", row)
        return row

    def next_followup(self, thread_id: str) -> FollowUpRow | None:
        """The oldest (lowest seq) queued follow-up of the thread, or None."""
        self.get_thread(thread_id)
        rows = self._select_all(
            FollowUpRow, "followups", "WHERE thread_id = ? AND state = 'queued'", (thread_id,), "seq LIMIT 1"
        )
        return rows[0] if rows else None

    def set_followup_state(self, followup_id: str, state: FollowUpState, error: str | None = None) -> FollowUpRow:
        """Move a follow-up to `state` ("failed" keeps `error`, the reason of its last turn); "done" and "cancelled"
        are final, a "failed" one can be queued again (`retry_followup`)."""
        validate_id("follow-up id", followup_id)
        if state not in FOLLOWUP_STATES:
            raise StorageError(f"follow-up state {state!r} is invalid: expected one of {FOLLOWUP_STATES}")
        with self._transaction(f"setting state of follow-up {followup_id!r}"):
            row = self._select_one(FollowUpRow, "followup_id", followup_id)
            if row is None:
                raise StorageError(f"unknown follow-up id {followup_id!r}")
            if row.state in _TERMINAL_FOLLOWUP_STATES:
                raise StorageError(f"follow-up {followup_id!r} is already {row.state}; terminal states are final")
            last_error = _optional_text("follow-up error", error) if state == "failed" else row.last_error
            self._conn.execute(
                "UPDATE followups SET state = ?, last_error = ? WHERE followup_id = ?", (state, last_error, followup_id)
            )
        return msgspec.structs.replace(row, state=state, last_error=last_error)

    def retry_followup(self, followup_id: str) -> FollowUpRow:
        """Queue a failed follow-up again, keeping its place (seq); it runs as a new turn. Only "failed" ones."""
        validate_id("follow-up id", followup_id)
        with self._transaction(f"retrying follow-up {followup_id!r}"):
            row = self._require_row(FollowUpRow, "followup_id", followup_id)
            if row.state != "failed":
                raise StorageError(f"follow-up {followup_id!r} is {row.state}; only a failed one can be retried")
            self._conn.execute("UPDATE followups SET state = 'queued' WHERE followup_id = ?", (followup_id,))
        return msgspec.structs.replace(row, state="queued")

    def begin_followup_turn(self, followup_id: str, now: float, turn_id: str | None = None) -> TurnRow:
        """Mark a queued follow-up dispatched AND begin its turn in ONE transaction, so a crash can never leave a
        follow-up dispatched without its turn, or run it twice. The turn's id is `turn_id`, by default the
        follow-up's own id (a retried follow-up runs under a new one)."""
        validate_id("follow-up id", followup_id)
        turn = validate_id("turn id", turn_id if turn_id is not None else followup_id)
        created_at = _time("now", now)
        with self._transaction(f"dispatching follow-up {followup_id!r}"):
            followup = self._require_row(FollowUpRow, "followup_id", followup_id)
            if followup.state != "queued":
                raise StorageError(f"follow-up {followup_id!r} is {followup.state}, not queued; it runs only once")
            self._conn.execute(
                "UPDATE followups SET state = 'dispatched', turn_id = ? WHERE followup_id = ?", (turn, followup_id)
            )
            return self._begin_turn_row(turn, followup.thread_id, followup.text, created_at)

    def list_followups(self, thread_id: str) -> list[FollowUpRow]:
        self.get_thread(thread_id)
        return self._select_all(FollowUpRow, "followups", "WHERE thread_id = ?", (thread_id,), "seq")

    # --- private helpers -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[None]:
        with _translate_errors(action), self._conn:
            yield

    def _finish_one(self, finish: TurnFinish) -> TurnRow:
        if not isinstance(finish, TurnFinish):
            raise StorageError(f"expected a TurnFinish, got {finish!r}")
        validate_id("turn id", finish.turn_id)
        if finish.status not in TERMINAL_TURN_STATUSES:
            raise StorageError(
                f"turn status {finish.status!r} is not terminal: expected one of {TERMINAL_TURN_STATUSES}"
            )
        assistant_text = _text("assistant text", finish.assistant_text)
        error = _optional_text("turn error", finish.error)
        finished_at = _time("now", finish.now)
        turn = self._require_turn(finish.turn_id)
        if turn.status != "pending":
            raise TurnAlreadyFinishedError(
                f"turn {finish.turn_id!r} is already {turn.status}; terminal states are final"
            )
        worker_id = turn.worker_id if finish.worker_id is None else _integer("worker id", finish.worker_id)
        self._conn.execute(
            "UPDATE turns SET status = ?, assistant_text = ?, error = ?, finished_at = ?, worker_id = ?"
            " WHERE turn_id = ?",
            (finish.status, assistant_text, error, finished_at, worker_id, finish.turn_id),
        )
        return msgspec.structs.replace(
            turn,
            status=finish.status,
            assistant_text=assistant_text,
            error=error,
            finished_at=finished_at,
            worker_id=worker_id,
        )

    def _require_thread(self, thread_id: str) -> ThreadRow:
        row = self._select_one(ThreadRow, "thread_id", thread_id)
        if row is None:
            raise UnknownThreadError(f"unknown thread id {thread_id!r}")
        return row

    def _require_turn(self, turn_id: str) -> TurnRow:
        row = self._select_one(TurnRow, "turn_id", turn_id)
        if row is None:
            raise UnknownTurnError(f"unknown turn id {turn_id!r}")
        return row

    def _require_turn_of_thread(self, turn_id: str, thread_id: str) -> TurnRow:
        turn = self._require_turn(turn_id)
        if turn.thread_id != thread_id:
            raise StorageError(f"turn {turn_id!r} belongs to thread {turn.thread_id!r}, not {thread_id!r}")
        return turn

    def _require_row(self, row_type: type[RowT], key: str, value: str) -> RowT:
        row = self._select_one(row_type, key, value)
        if row is None:  # only reachable if a concurrent writer deleted it
            raise StorageError(f"{key} {value!r} vanished during the transaction")
        return row

    def _next_seq(self, table: str, thread_id: str) -> int:
        cursor = self._conn.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table} WHERE thread_id = ?", (thread_id,))
        return int(cursor.get)

    def _insert(self, table: str, row: msgspec.Struct) -> None:
        fields = row.__struct_fields__
        placeholders = ", ".join("?" for _ in fields)
        self._conn.execute(f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({placeholders})", _values(row))

    def _select_one(self, row_type: type[RowT], key: str, value: str) -> RowT | None:
        sql = f"SELECT {_columns(row_type)} FROM {_TABLES[row_type]} WHERE {key} = ?"
        for values in self._conn.execute(sql, (value,)):
            return _row(row_type, values)
        return None

    def _select_all(
        self, row_type: type[RowT], table: str, where: str, bindings: tuple[Any, ...], order_by: str
    ) -> list[RowT]:
        sql = f"SELECT {_columns(row_type)} FROM {table} {where} ORDER BY {order_by}"
        with _translate_errors(f"listing {table}"):
            return [_row(row_type, values) for values in self._conn.execute(sql, bindings)]


_TABLES: dict[type[msgspec.Struct], str] = {
    ProjectRow: "projects",
    ThreadRow: "threads",
    MappingRow: "runtime_thread_mappings",
    TurnRow: "turns",
    ActionCardRow: "action_cards",
    FollowUpRow: "followups",
}


def _configure(conn: apsw.Connection) -> None:
    conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", "FULL")
    conn.wal_autocheckpoint(0)
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    conn.pragma("foreign_keys", "ON")
    for name, expected in _REQUIRED_PRAGMAS:
        _verify_pragma(conn, name, expected)


def _verify_pragma(conn: apsw.Connection, name: str, expected: object) -> None:
    actual = conn.pragma(name)
    if isinstance(actual, str):
        actual = actual.lower()
    if actual != expected:
        raise SchemaError(f"pragma {name} was not applied: expected {expected!r}, got {actual!r}")


def _close_quietly(conn: apsw.Connection) -> None:
    """Close while another error is already being raised: the connection ends up closed either way."""
    try:
        conn.close()
    except apsw.Error:
        pass


@contextlib.contextmanager
def _translate_errors(action: str) -> Iterator[None]:
    """Re-raise apsw errors as StorageIOError (I/O) or StorageError (anything else), chained."""
    try:
        yield
    except (apsw.CorruptError, apsw.NotADBError) as error:
        raise StorageCorruptError(
            f"{action} failed: the database is corrupt: {type(error).__name__}: {error}"
        ) from error
    except apsw.FullError as error:
        raise StorageFullError(f"{action} failed: the disk is full: {type(error).__name__}: {error}") from error
    except _IO_ERRORS as error:
        raise StorageIOError(f"{action} failed with an I/O error: {type(error).__name__}: {error}") from error
    except apsw.Error as error:
        raise StorageError(f"{action} failed: {type(error).__name__}: {error}") from error


def _columns(row_type: type[msgspec.Struct]) -> str:
    return ", ".join(row_type.__struct_fields__)


def _row(row_type: type[RowT], values: Sequence[Any]) -> RowT:
    return row_type(**dict(zip(row_type.__struct_fields__, values, strict=True)))


def _values(row: msgspec.Struct) -> tuple[Any, ...]:
    return tuple(getattr(row, field) for field in row.__struct_fields__)


def _fields_of(row_type: type[msgspec.Struct], values: Sequence[Any], *, skip: int) -> dict[str, Any]:
    return dict(zip(row_type.__struct_fields__[skip:], values, strict=True))


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise StorageError(f"{field} {value!r} is invalid: must be a str, got {type(value).__name__}")
    return value


def _optional_text(field: str, value: object) -> str | None:
    return None if value is None else _text(field, value)


def _integer(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StorageError(f"{field} {value!r} is invalid: must be an int")
    return value


def _time(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StorageError(f"{field} {value!r} is invalid: must be finite float seconds")
    return float(value)


def _card_kind(kind: object) -> str:
    text = _text("action card kind", kind)
    if not text or len(text.splitlines()) != 1 or text.splitlines()[0] != text:
        raise StorageError(f"action card kind {kind!r} is invalid: must be one non-empty line")
    return text
