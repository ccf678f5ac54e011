"""The core of the agenthost database: one APSW connection in WAL mode, its lifecycle, and the helpers the
repository methods share (transactions that translate apsw errors, row mapping, value checks).

Contract: see storage._database for the whole database's contract; this module holds what every part of it uses.
``DatabaseCore.open(path)`` opens (creating if absent; the parent folder must exist), configures and verifies the
pragmas (journal_mode=WAL, synchronous=FULL, automatic WAL checkpoints off, busy timeout 5000 ms,
foreign_keys=ON; ``SchemaError`` names a pragma that did not take), then migrates (storage._schema).
Thread rows read to check a thread (``_require_thread``, every write of the turn path) are kept for the next check:
the last THREAD_ROWS_KEPT (4,096), least recently used dropped first. A method that changes a thread row forgets it
(``_forget_thread``), and every rolled-back transaction or savepoint forgets them all, so a row kept is always
the committed one or one this open transaction wrote. The next seq of a thread's turns and of its follow-ups is kept
the same way (known once the thread is created here or its seq was read; the last 2 x THREAD_ROWS_KEPT), so an
insert of the turn path reads no MAX(seq). The connection must be the database's only writer (the
persistence actor's, with the root locked). Transactions are BEGIN DEFERRED ... COMMIT, nested ones savepoints,
all issued through `execute` so that other Python threads run during a commit; inside a group (`batch`) the
operations open no savepoints (see storage._transaction).
"""

from __future__ import annotations

import collections
import functools
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import apsw
import msgspec

from ._errors import (
    SchemaError,
    StorageError,
    UnknownThreadError,
    UnknownTurnError,
)
from ._rows import ActionCardRow, FollowUpRow, MappingRow, ProjectRow, ThreadRow, TurnRow
from ._schema import apply_migrations
from ._transaction import Transaction, translate_errors

__all__ = ["BUSY_TIMEOUT_MS", "CheckpointMode", "DatabaseCore"]

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
_PRAGMA_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

RowT = TypeVar("RowT", bound=msgspec.Struct)
SeqRowT = TypeVar("SeqRowT", TurnRow, FollowUpRow)  # the rows numbered per thread (seq)
Key = TypeVar("Key")
Value = TypeVar("Value")

THREAD_ROWS_KEPT = 4096  # thread rows kept for the next check of the same thread


class DatabaseCore:
    """The connection and the helpers; `Database` adds the repository methods."""

    __slots__ = ("_closed", "_conn", "_depth", "_flat_from", "_next_seqs", "_path", "_refused", "_thread_rows")

    def __init__(self, conn: apsw.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path
        self._closed = False
        self._depth = 0  # transactions open through _transaction (the inner ones are savepoints)
        self._flat_from = 0  # inside a group (`batch`): the depth from which blocks open no savepoint; 0 outside
        self._refused = False  # inside a group: an operation in it was refused (see storage._transaction)
        self._thread_rows: collections.OrderedDict[str, ThreadRow] = collections.OrderedDict()  # see the docstring
        self._next_seqs: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()  # (table, thread)

    # --- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, vfs: str | None = None) -> Self:
        """Open (creating if needed), verify the pragmas and migrate. `vfs` names a registered APSW VFS (used by
        fault-injection tests); None is SQLite's default."""
        db_path = Path(os.fspath(path))
        on_disk = os.fspath(path) not in ("", ":memory:") and not os.fspath(path).startswith("file:")
        if vfs is None and on_disk and db_path.parent.is_dir() and not db_path.exists():
            os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only: its -wal and -shm inherit it
        with translate_errors(f"opening database {str(db_path)!r}"):
            conn = apsw.Connection(str(db_path)) if vfs is None else apsw.Connection(str(db_path), vfs=vfs)
        try:
            with translate_errors(f"configuring database {str(db_path)!r}"):
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
        with translate_errors("reading the schema version"):
            return int(self._conn.pragma("user_version"))

    def close(self, *, checkpoint: bool = True) -> None:
        """TRUNCATE-checkpoint the WAL (when ``checkpoint``) and close; closing twice is a no-op. The connection is
        closed even when the storage refuses the checkpoint or the close (then the error is raised)."""
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
        try:
            with translate_errors(f"closing database {str(self._path)!r}"):
                self._conn.close()
        except BaseException:
            _close_quietly(self._conn)  # SQLite's own checkpoint at close failed (disk full): the handle still goes
            raise

    def quick_check(self) -> list[str]:
        """`PRAGMA quick_check`: ["ok"] for a sound database, otherwise the problems found (at most 100)."""
        with translate_errors("running quick_check"):
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
        with translate_errors(f"{mode} checkpoint"):
            wal_frames, checkpointed_frames = self._conn.wal_checkpoint(mode=_CHECKPOINT_MODES[mode])
        return int(wal_frames), int(checkpointed_frames)

    def pragma(self, name: str) -> object:
        """Read the current value of pragma ``name`` (reading only; no value is ever set)."""
        if not isinstance(name, str) or not _PRAGMA_NAME_RE.fullmatch(name):
            raise StorageError(f"pragma name {name!r} is invalid: expected an identifier")
        with translate_errors(f"reading pragma {name}"):
            return self._conn.pragma(name)

    def batch(self, action: str) -> Transaction:
        """One transaction around several operations (a group commit), all of them committed together or none: the
        operations inside open no savepoint of their own, so one refused (even when its caller caught the error)
        refuses the whole group, ``StorageError`` naming ``action`` (see storage._transaction)."""
        return self._transaction(action, all_or_nothing=True)

    # --- private helpers -------------------------------------------------------------------------------------

    def _transaction(self, action: str, *, all_or_nothing: bool = False) -> Transaction:
        """One transaction, or a savepoint inside the open one. SQLite rolls a whole transaction back by itself on
        some errors (SQLITE_FULL, SQLITE_IOERR ...): a savepoint opened after that would silently be a transaction
        of its own and commit alone, so it is refused instead, and the enclosing block fails as a whole."""
        if self._depth and not self._conn.in_transaction:
            raise StorageError(f"{action}: the enclosing transaction was already rolled back by SQLite")
        return Transaction(self, action, all_or_nothing=all_or_nothing)

    def _require_thread(self, thread_id: str) -> ThreadRow:
        kept = self._thread_rows
        row = kept.get(thread_id)
        if row is not None:
            kept.move_to_end(thread_id)
            return row
        row = self._select_one(ThreadRow, "thread_id", thread_id)
        if row is None:
            raise UnknownThreadError(f"unknown thread id {thread_id!r}")
        _keep(kept, thread_id, row, THREAD_ROWS_KEPT)
        return row

    def _forget_thread(self, thread_id: str) -> None:
        """The thread's row changed (in the open transaction): the next check reads it again."""
        self._thread_rows.pop(thread_id, None)

    def _forget_kept(self) -> None:
        """A transaction or savepoint was rolled back: what is kept may hold what it wrote."""
        self._thread_rows.clear()
        self._next_seqs.clear()

    def _keep_next_seq(self, table: str, thread_id: str, seq: int) -> None:
        _keep(self._next_seqs, (table, thread_id), seq, 2 * THREAD_ROWS_KEPT)

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

    def _insert_next(self, row: SeqRowT, kind: str, key: str) -> SeqRowT:
        """Insert `row` (a TurnRow or FollowUpRow) with seq = 1 + its thread's highest; a used `key` (its primary
        key) is refused naming the `kind` of id, found by the insert itself. (Two statements: a seq computed inside
        the insert makes SQLite copy through a temporary table, measured ~2x slower.)"""
        table = _TABLES[type(row)]
        seq = self._next_seqs.pop((table, row.thread_id), None)  # popped: kept again only once the insert is in
        if seq is None:
            seq = _integer("seq", self._conn.execute(_NEXT_SEQ_SQL[table], (row.thread_id,)).get)
        numbered = msgspec.structs.replace(row, seq=seq)
        try:
            self._insert(table, numbered)
        except apsw.ConstraintError:
            if self._select_one(type(row), key, getattr(row, key)) is not None:
                raise StorageError(f"{kind} {getattr(row, key)!r} already exists") from None
            raise
        self._keep_next_seq(table, row.thread_id, seq + 1)
        return numbered

    def _insert(self, table: str, row: msgspec.Struct) -> None:
        self._conn.execute(_insert_sql(table, type(row)), _values(row))

    def _select_one(self, row_type: type[RowT], key: str, value: str) -> RowT | None:
        for values in self._conn.execute(_select_one_sql(row_type, key), (value,)):
            return _row(row_type, values)
        return None

    def _select_all(
        self, row_type: type[RowT], table: str, where: str, bindings: tuple[Any, ...], order_by: str
    ) -> list[RowT]:
        sql = f"SELECT {_columns(row_type)} FROM {table} {where} ORDER BY {order_by}"
        with translate_errors(f"listing {table}"):
            return [_row(row_type, values) for values in self._conn.execute(sql, bindings)]

    def _begin_turn_row(self, turn_id: str, thread_id: str, text: str, created_at: float) -> TurnRow:
        """Insert a pending turn; the caller holds the transaction."""
        self._require_thread(thread_id)
        row = TurnRow(
            turn_id=turn_id,
            thread_id=thread_id,
            seq=0,  # set by the insert
            user_text=text,
            assistant_text="",
            status="pending",
            error=None,
            worker_id=None,
            created_at=created_at,
            finished_at=None,
        )
        return self._insert_next(row, "turn id", "turn_id")


_NEXT_SEQ_SQL: dict[str, str] = {
    table: f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table} WHERE thread_id = ?" for table in ("turns", "followups")
}
_TABLES: dict[type[msgspec.Struct], str] = {
    ProjectRow: "projects",
    ThreadRow: "threads",
    MappingRow: "runtime_thread_mappings",
    TurnRow: "turns",
    ActionCardRow: "action_cards",
    FollowUpRow: "followups",
}


def _keep(kept: collections.OrderedDict[Key, Value], key: Key, value: Value, limit: int) -> None:
    """Keep `value` as the most recently used; past `limit` entries the least recently used one goes."""
    kept[key] = value
    if len(kept) > limit:
        kept.popitem(last=False)


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
        conn.close(True)  # force: the handle is released whatever SQLite says
    except apsw.Error:
        pass


@functools.cache
def _columns(row_type: type[msgspec.Struct]) -> str:
    return ", ".join(row_type.__struct_fields__)


@functools.cache
def _select_one_sql(row_type: type[msgspec.Struct], key: str) -> str:
    return f"SELECT {_columns(row_type)} FROM {_TABLES[row_type]} WHERE {key} = ?"


@functools.cache
def _insert_sql(table: str, row_type: type[msgspec.Struct]) -> str:
    fields = row_type.__struct_fields__
    return f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({', '.join('?' for _ in fields)})"


def _row(row_type: type[RowT], values: Sequence[Any]) -> RowT:
    return row_type(**dict(zip(row_type.__struct_fields__, values, strict=True)))


def _values(row: msgspec.Struct) -> tuple[Any, ...]:
    return msgspec.structs.astuple(row)


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
