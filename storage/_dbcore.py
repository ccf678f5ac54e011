"""The core of the agenthost database: one APSW connection in WAL mode, its lifecycle, and the helpers the
repository methods share (transactions that translate apsw errors, row mapping, value checks).

Contract: see storage._database for the whole database's contract; this module holds what every part of it uses.
``DatabaseCore.open(path)`` opens (creating if absent; the parent folder must exist), configures and verifies the
pragmas (journal_mode=WAL, synchronous=FULL, automatic WAL checkpoints off, busy timeout 5000 ms,
foreign_keys=ON; ``SchemaError`` names a pragma that did not take), then migrates (storage._schema).
Thread rows read to check a thread (``_require_thread``, every write of the turn path) are kept for the next check:
the last THREAD_ROWS_KEPT (4,096), least recently used dropped first. A method that changes a thread row forgets it
(``_forget_thread``), and every rolled-back transaction or savepoint forgets them all, so a row kept is always
the committed one or one this open transaction wrote. The connection must be the database's only writer (the
persistence actor's, with the root locked). Transactions are BEGIN DEFERRED ... COMMIT, nested ones savepoints,
all issued through `execute` so that other Python threads run during a commit (see `_Transaction`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import apsw
import msgspec

from ._errors import (
    SchemaError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
    StorageIOError,
    UnknownThreadError,
    UnknownTurnError,
)
from ._rows import ActionCardRow, FollowUpRow, MappingRow, ProjectRow, ThreadRow, TurnRow
from ._schema import apply_migrations

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
_IO_ERRORS: tuple[type[apsw.Error], ...] = (
    apsw.IOError,
    apsw.FullError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.CorruptError,
    apsw.NotADBError,
)
_PRAGMA_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

RowT = TypeVar("RowT", bound=msgspec.Struct)

THREAD_ROWS_KEPT = 4096  # thread rows kept for the next check of the same thread


class DatabaseCore:
    """The connection and the helpers; `Database` adds the repository methods."""

    __slots__ = ("_closed", "_conn", "_depth", "_path", "_thread_rows")

    def __init__(self, conn: apsw.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path
        self._closed = False
        self._depth = 0  # transactions open through _transaction (the inner ones are savepoints)
        self._thread_rows: collections.OrderedDict[str, ThreadRow] = collections.OrderedDict()  # see the docstring

    # --- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, vfs: str | None = None) -> Self:
        """Open (creating if needed), verify the pragmas and migrate. `vfs` names a registered APSW VFS (used by
        fault-injection tests); None is SQLite's default."""
        db_path = Path(os.fspath(path))
        on_disk = os.fspath(path) not in ("", ":memory:") and not os.fspath(path).startswith("file:")
        if vfs is None and on_disk and db_path.parent.is_dir() and not db_path.exists():
            os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only: its -wal and -shm inherit it
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
            with _translate_errors(f"closing database {str(self._path)!r}"):
                self._conn.close()
        except BaseException:
            _close_quietly(self._conn)  # SQLite's own checkpoint at close failed (disk full): the handle still goes
            raise

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

    @contextlib.contextmanager
    def batch(self, action: str) -> Iterator[None]:
        """One transaction around several operations (a group commit): each operation's own transaction becomes a
        savepoint inside it, so all of them are committed together, or none when an exception leaves the block
        (``StorageError`` naming ``action``)."""
        with self._transaction(action):
            yield

    # --- private helpers -------------------------------------------------------------------------------------

    def _transaction(self, action: str) -> _Transaction:
        """One transaction, or a savepoint inside the open one. SQLite rolls a whole transaction back by itself on
        some errors (SQLITE_FULL, SQLITE_IOERR ...): a savepoint opened after that would silently be a transaction
        of its own and commit alone, so it is refused instead, and the enclosing block fails as a whole."""
        if self._depth and not self._conn.in_transaction:
            raise StorageError(f"{action}: the enclosing transaction was already rolled back by SQLite")
        return _Transaction(self, action)

    def _require_thread(self, thread_id: str) -> ThreadRow:
        kept = self._thread_rows
        row = kept.get(thread_id)
        if row is not None:
            kept.move_to_end(thread_id)
            return row
        row = self._select_one(ThreadRow, "thread_id", thread_id)
        if row is None:
            raise UnknownThreadError(f"unknown thread id {thread_id!r}")
        kept[thread_id] = row
        if len(kept) > THREAD_ROWS_KEPT:
            kept.popitem(last=False)
        return row

    def _forget_thread(self, thread_id: str) -> None:
        """The thread's row changed (in the open transaction): the next check reads it again."""
        self._thread_rows.pop(thread_id, None)

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
        self._conn.execute(_insert_sql(table, type(row)), _values(row))

    def _select_one(self, row_type: type[RowT], key: str, value: str) -> RowT | None:
        for values in self._conn.execute(_select_one_sql(row_type, key), (value,)):
            return _row(row_type, values)
        return None

    def _select_all(
        self, row_type: type[RowT], table: str, where: str, bindings: tuple[Any, ...], order_by: str
    ) -> list[RowT]:
        sql = f"SELECT {_columns(row_type)} FROM {table} {where} ORDER BY {order_by}"
        with _translate_errors(f"listing {table}"):
            return [_row(row_type, values) for values in self._conn.execute(sql, bindings)]

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
        conn.close(True)  # force: the handle is released whatever SQLite says
    except apsw.Error:
        pass


class _Transaction:
    """`DatabaseCore._transaction`'s block: a transaction, or a savepoint inside the open one (ours, or one the
    caller opened on the connection itself), apsw errors translated. (A class, not a generator: every storage
    operation opens one.) Its statements go through `execute`, which lets other Python threads run while SQLite
    works: apsw's own `with connection` holds the GIL through the commit, fsync included (measured: another thread
    made 1 step during a 66-90 ms commit against ~1,000 with these), so every commit stopped the host's other
    actors."""

    __slots__ = ("_action", "_db", "_savepoint")

    def __init__(self, db: DatabaseCore, action: str) -> None:
        self._db, self._action = db, action
        self._savepoint: str | None = None  # None: this block is the transaction itself

    def __enter__(self) -> None:
        db = self._db
        depth = db._depth
        db._depth += 1
        try:
            if depth == 0 and not db._conn.in_transaction:
                db._conn.execute("BEGIN DEFERRED")
            else:
                self._savepoint = f'"agenthost-{depth}"'
                db._conn.execute(f"SAVEPOINT {self._savepoint}")
        except BaseException as error:
            db._depth -= 1
            _raise_translated(error, self._action)
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        db = self._db
        try:
            if error is None:
                db._conn.execute("COMMIT" if self._savepoint is None else f"RELEASE SAVEPOINT {self._savepoint}")
            else:
                self._undo()
        except BaseException as commit_error:  # the commit (or rollback) itself failed: nothing of it stands
            with contextlib.suppress(apsw.Error):
                self._undo()
            db._thread_rows.clear()
            _raise_translated(commit_error, self._action)
            raise
        finally:
            db._depth -= 1
        if error is not None:
            db._thread_rows.clear()  # rolled back: a row kept may hold what it wrote
            _raise_translated(error, self._action)

    def _undo(self) -> None:
        """Roll this block back (a savepoint: to where it began, then release it); nothing when SQLite already
        rolled the whole transaction back by itself (SQLITE_FULL, SQLITE_IOERR ...)."""
        conn = self._db._conn
        if not conn.in_transaction:
            return
        if self._savepoint is None:
            conn.execute("ROLLBACK")
            return
        conn.execute(f"ROLLBACK TO SAVEPOINT {self._savepoint}")
        conn.execute(f"RELEASE SAVEPOINT {self._savepoint}")


class _translate_errors:
    """Re-raise apsw errors as StorageIOError (I/O) or StorageError (anything else), chained. (A class, not a
    generator: every read opens one.)"""

    __slots__ = ("_action",)

    def __init__(self, action: str) -> None:
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if error is not None:
            _raise_translated(error, self._action)


def _raise_translated(error: BaseException, action: str) -> None:
    """Raise the storage error an apsw error means (chained to it); return for anything else."""
    if isinstance(error, apsw.CorruptError | apsw.NotADBError):
        why = f"{action} failed: the database is corrupt: {type(error).__name__}: {error}"
        raise StorageCorruptError(why) from error
    if isinstance(error, apsw.FullError):
        raise StorageFullError(f"{action} failed: the disk is full: {type(error).__name__}: {error}") from error
    if isinstance(error, _IO_ERRORS):
        raise StorageIOError(f"{action} failed with an I/O error: {type(error).__name__}: {error}") from error
    if isinstance(error, apsw.Error):
        raise StorageError(f"{action} failed: {type(error).__name__}: {error}") from error


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
