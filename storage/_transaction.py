"""Transactions of the agenthost database, and the translation of apsw errors into storage errors.

Contract:
- `Transaction(db, action)` is one storage operation's block: BEGIN DEFERRED ... COMMIT when no transaction is open,
  otherwise a savepoint inside the open one (ours, or one the caller opened on the connection itself). An exception
  leaving the block rolls back what the block wrote, and is raised translated (`raise_translated`).
- `Transaction(db, action, all_or_nothing=True)` is a group (`DatabaseCore.batch`): a transaction or savepoint of its
  own, inside which the operations open NO savepoint of their own (each costs two statements, and a statement is
  where apsw hands the GIL to the host's other threads). A refused operation inside the group therefore cannot be
  undone alone, so the group is refused as a whole: the exception leaving it rolls it all back, and so does a
  refusal that a caller inside caught, at the group's end (`StorageError` naming the group). A group nested inside
  a group is a savepoint again, refused as a whole in the same way; the enclosing group goes on.
- Every statement goes through `execute`, which lets other Python threads run while SQLite works: apsw's own
  `with connection` holds the GIL through the commit, fsync included (measured: another thread made 1 step during
  a 66-90 ms commit against ~1,000 with these), so every commit stopped the host's other actors.
- Any rollback forgets everything the database kept (thread rows, next seqs): it may hold what was undone. So does
  the end of a block inside a transaction the caller opened on the connection itself, which may yet roll back.
- `translate_errors(action)` re-raises apsw errors as `StorageCorruptError`, `StorageFullError`, `StorageIOError`
  (I/O) or `StorageError` (anything else), chained; other exceptions pass unchanged.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import apsw

from ._errors import StorageCorruptError, StorageError, StorageFullError, StorageIOError

if TYPE_CHECKING:
    from ._dbcore import DatabaseCore

__all__ = ["Transaction", "raise_translated", "translate_errors"]

_IO_ERRORS: tuple[type[apsw.Error], ...] = (
    apsw.IOError,
    apsw.FullError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.CorruptError,
    apsw.NotADBError,
)
_NO_STATEMENT = ""  # a block inside a group: it opens no savepoint, its refusal refuses the group


class Transaction:
    """One block (see the module contract). A class, not a generator: every storage operation opens one."""

    __slots__ = ("_action", "_db", "_enclosing", "_group", "_savepoint")
    _enclosing: tuple[int, bool]  # a group's, set as it opens: the enclosing group's (flat depth, refused) to restore

    def __init__(self, db: DatabaseCore, action: str, *, all_or_nothing: bool = False) -> None:
        self._db, self._action, self._group = db, action, all_or_nothing
        self._savepoint: str | None = None  # None: the transaction itself; _NO_STATEMENT: a block inside a group

    def __enter__(self) -> None:
        db = self._db
        depth = db._depth
        db._depth += 1
        try:
            if depth == 0 and not db._conn.in_transaction:
                db._conn.execute("BEGIN DEFERRED")
            elif db._flat_from and depth >= db._flat_from and not self._group:
                self._savepoint = _NO_STATEMENT
            else:
                self._savepoint = f'"agenthost-{depth}"'
                db._conn.execute(f"SAVEPOINT {self._savepoint}")
        except BaseException as error:
            db._depth -= 1
            raise_translated(error, self._action)
            raise
        if self._group:
            self._enclosing = (db._flat_from, db._refused)
            db._flat_from, db._refused = depth + 1, False

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        db = self._db
        refusal = self._end_group() if self._group else None
        if self._savepoint == _NO_STATEMENT:
            db._depth -= 1
            if error is not None:
                db._refused = True  # the enclosing group rolls back what this block wrote
                db._forget_kept()
                raise_translated(error, self._action)
            return
        failed = error is not None or refusal is not None
        try:
            if not failed:
                db._conn.execute("COMMIT" if self._savepoint is None else f"RELEASE SAVEPOINT {self._savepoint}")
            else:
                self._undo()
        except BaseException as commit_error:  # the commit (or rollback) itself failed: nothing of it stands
            with contextlib.suppress(apsw.Error):
                self._undo()
            db._forget_kept()
            raise_translated(commit_error, self._action)
            raise
        finally:
            db._depth -= 1
        if failed or (self._savepoint is not None and not db._depth):
            db._forget_kept()  # rolled back, or inside the caller's own transaction, which may yet roll back
        if error is not None:
            raise_translated(error, self._action)
        elif refusal is not None:
            raise refusal

    def _end_group(self) -> StorageError | None:
        """Restore the enclosing group's state; the refusal when an operation inside was refused and caught."""
        db = self._db
        refused = db._refused
        db._flat_from, db._refused = self._enclosing
        if not refused:
            return None
        return StorageError(f"{self._action}: an operation in it was refused, so none of it was applied")

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


class translate_errors:
    """Re-raise apsw errors as storage errors (see the module contract). A class, not a generator: every read
    opens one."""

    __slots__ = ("_action",)

    def __init__(self, action: str) -> None:
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        if error is not None:
            raise_translated(error, self._action)


def raise_translated(error: BaseException, action: str) -> None:
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
