"""The bookkeeping files of a storage migration: the journal in NEW and the ``MOVED`` pointer in OLD.

Contract:
- Journal ``NEW/system/migration.json`` (written by atomic replace): the OLD and NEW roots, the phase ("copying" ->
  "verified" -> "switched"), every NEW-relative file and folder the migration creates (and may remove on
  rollback), start and update times (wall seconds), and the database's page count and the number of transcripts.
- Pointer ``OLD/system/MOVED`` (written by atomic replace, by the switch): JSON
  ``{"moved_to": "<abs NEW>", "at": <wall seconds>}``.
- Reading: a missing file is None; an unreadable or undecodable one, or a journal listing a path that is empty,
  absolute or contains "..", raises ``MigrationError`` naming it.
- A crash during an atomic replace leaves a ``.<name>.<random>.tmp`` next to the file (``is_atomic_temp``);
  ``remove_journal_temps`` deletes those of the journal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from ._migrate_steps import MigrationError, MigrationHooks
from ._paths import StorageRoot
from ._transcripts import atomic_write

__all__ = [
    "JOURNAL_NAME",
    "MOVED_NAME",
    "Journal",
    "Moved",
    "is_atomic_temp",
    "journal_path",
    "moved_path",
    "read_journal",
    "read_moved",
    "remove_journal_temps",
    "write_journal",
    "write_moved",
]

JournalPhase = Literal["copying", "verified", "switched"]

JOURNAL_NAME = "migration.json"
MOVED_NAME = "MOVED"


class Journal(msgspec.Struct, frozen=True, kw_only=True):
    format: int = 1
    old_root: str
    new_root: str
    phase: JournalPhase
    files: tuple[str, ...]  # NEW-relative files this migration creates (and may delete on rollback)
    dirs: tuple[str, ...]  # NEW-relative folders it created (removed on rollback when empty)
    started_at: float
    updated_at: float
    db_pages: int = 0
    transcripts: int = 0


class Moved(msgspec.Struct, frozen=True):
    moved_to: str
    at: float


def journal_path(root: StorageRoot) -> Path:
    return root.system_dir / JOURNAL_NAME


def moved_path(root: StorageRoot) -> Path:
    return root.system_dir / MOVED_NAME


def is_atomic_temp(name: str, target_name: str) -> bool:
    """``name`` is a temp file that ``atomic_write`` of ``target_name`` (same folder) can leave behind."""
    return name.startswith(f".{target_name}.") and name.endswith(".tmp")


def write_journal(new: StorageRoot, journal: Journal, hooks: MigrationHooks) -> None:
    hooks.before("journal", journal_path(new))
    atomic_write(journal_path(new), msgspec.json.encode(journal))


def write_moved(old: StorageRoot, new: StorageRoot, at: float, hooks: MigrationHooks) -> None:
    """The switch: OLD's pointer to NEW."""
    hooks.before("switch", moved_path(old))
    atomic_write(moved_path(old), msgspec.json.encode(Moved(moved_to=str(new.root), at=at)))


def read_journal(root: StorageRoot) -> Journal | None:
    path = journal_path(root)
    try:
        journal = msgspec.json.decode(path.read_bytes(), type=Journal)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as error:
        raise MigrationError(f"migration journal {str(path)!r} cannot be read: {error}; inspect it by hand") from error
    unsafe = [rel for rel in (*journal.files, *journal.dirs) if not _is_safe_relative(rel)]
    if unsafe:
        raise MigrationError(f"migration journal {str(path)!r} lists paths outside its root: {unsafe[:3]!r}")
    return journal


def read_moved(root: StorageRoot) -> Moved | None:
    path = moved_path(root)
    try:
        return msgspec.json.decode(path.read_bytes(), type=Moved)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as error:
        raise MigrationError(f"move pointer {str(path)!r} cannot be read: {error}; inspect it by hand") from error


def remove_journal_temps(new: StorageRoot) -> None:
    if new.system_dir.is_dir():
        for temp in new.system_dir.glob(f".{JOURNAL_NAME}.*.tmp"):
            temp.unlink(missing_ok=True)


def _is_safe_relative(rel: str) -> bool:
    path = Path(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts
