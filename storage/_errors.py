"""Exception classes of the storage package.

Contract: every error raised by ``storage`` derives from ``StorageError``. Errors caused by bad input name the bad
value (``repr``) in their message. Real I/O failures (disk full, EIO, cannot open, fsync/rename failures) are raised
as ``StorageIOError`` with the original exception as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "InvalidIdError",
    "SchemaError",
    "StorageCorruptError",
    "StorageError",
    "StorageFullError",
    "StorageIOError",
    "TurnAlreadyFinishedError",
    "UnknownThreadError",
    "UnknownTurnError",
]


class StorageError(Exception):
    """Base class of every storage error."""


class InvalidIdError(StorageError, ValueError):
    """An id is not a str matching ``ID_PATTERN``; the message names the kind and the bad value."""


class UnknownThreadError(StorageError, KeyError):
    """No thread with this id exists."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownTurnError(StorageError, KeyError):
    """No turn with this id exists."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TurnAlreadyFinishedError(StorageError):
    """The turn already reached a terminal state; terminal states are final."""


class SchemaError(StorageError):
    """The database schema is newer than the code, or a required pragma could not be applied."""


class StorageIOError(StorageError):
    """A real I/O failure (SQLite I/O/full/cannot-open errors, failed fsync or rename); see ``__cause__``."""


class StorageCorruptError(StorageIOError):
    """The database file is not a sound SQLite database (corrupt, not a database, failed quick_check)."""


class StorageFullError(StorageIOError):
    """The disk (or a quota) is full: the write was refused and nothing of it was committed."""
