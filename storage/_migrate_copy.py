"""Planning, copying and verifying what a storage migration copies from OLD to NEW.

Contract:
- ``plan_copy(old)`` lists what is copied: every file and folder under ``projects/``, ``global/`` and ``system/``
  (runtime state, logs, quarantine), but in ``system/`` not the database files, ``MOVED``, the journal, the lock or
  the temp files of ``MOVED`` and the journal; plus the layout folders. A symlink or special file raises
  ``MigrationError`` naming it.
- The database is copied with the SQLite backup API from a read-only connection (the WAL's committed content is
  included; a file copy could miss it), ``BACKUP_PAGES_PER_STEP`` pages per step, into a fresh target (its old
  files deleted first); ``backup_database`` redoes it whole on every call.
- A file is copied via ``.<name>.migrating.tmp`` next to its target + fsync + mode of the source + rename + folder
  fsync; with ``check_existing`` a target whose SHA-256 equals the source's is left alone (0 bytes written).
- Verifying raises ``Inconsistent`` unless the copy passes ``integrity_check``, has the same tables with the same
  row counts and ``user_version`` as the source, and every copied file's SHA-256 equals its source's.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import apsw
import msgspec

from ._dbfiles import DB_SUFFIXES
from ._lock import LOCK_NAME
from ._migrate_journal import JOURNAL_NAME, MOVED_NAME, is_atomic_temp
from ._migrate_steps import MigrationError, MigrationHooks
from ._paths import StorageRoot, private_mkdir
from ._transcripts import AtomicFs

__all__ = [
    "BACKUP_PAGES_PER_STEP",
    "DB_NAMES",
    "Inconsistent",
    "Plan",
    "backup_database",
    "copy_target",
    "copy_temp_path",
    "copy_unless_same",
    "is_copy_temp",
    "is_transcript",
    "make_dir",
    "plan_copy",
    "verify_database",
    "verify_files",
]

BACKUP_PAGES_PER_STEP = 32
DB_NAMES: tuple[str, ...] = tuple(f"agenthost.db{suffix}" for suffix in DB_SUFFIXES)  # in system/
_SYSTEM_SKIPPED: frozenset[str] = frozenset({*DB_NAMES, MOVED_NAME, JOURNAL_NAME, LOCK_NAME})
_COPIED_TOPS: tuple[str, ...] = ("projects", "global", "system")
_LAYOUT_DIRS: tuple[str, ...] = ("projects", "global", "system", "system/runtime-state")
_COPY_TEMP_SUFFIX = ".migrating.tmp"
_CHUNK = 1 << 20


class Plan(msgspec.Struct, frozen=True):
    files: tuple[str, ...]
    dirs: tuple[str, ...]


class Inconsistent(Exception):
    """Verification failed: NEW does not hold a faithful copy of OLD."""


# --- plan ----------------------------------------------------------------------------------------------------


def plan_copy(old: StorageRoot) -> Plan:
    files: list[str] = []
    dirs: list[str] = list(_LAYOUT_DIRS)
    for top in _COPIED_TOPS:
        base = old.root / top
        if not base.exists():
            continue
        _require_plain_dir(base)
        for directory, dir_names, file_names in os.walk(base):
            for name in dir_names:
                _require_plain_dir(Path(directory) / name)
                dirs.append((Path(directory) / name).relative_to(old.root).as_posix())
            for name in file_names:
                path = Path(directory) / name
                if Path(directory) == old.system_dir and _skipped_system_file(name):
                    continue
                if path.is_symlink() or not path.is_file():
                    raise MigrationError(f"cannot migrate {str(path)!r}: only regular files and folders are copied")
                files.append(path.relative_to(old.root).as_posix())
    return Plan(files=tuple(sorted(files)), dirs=tuple(sorted(set(dirs))))


def _skipped_system_file(name: str) -> bool:
    our_temp = is_atomic_temp(name, MOVED_NAME) or is_atomic_temp(name, JOURNAL_NAME)
    return name in _SYSTEM_SKIPPED or our_temp


def _require_plain_dir(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        raise MigrationError(f"cannot migrate {str(path)!r}: only regular files and folders are copied")


def is_transcript(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 4 and parts[0] == "projects" and parts[2] == "threads" and parts[3].endswith(".md")


# --- copy ----------------------------------------------------------------------------------------------------


def make_dir(path: Path, hooks: MigrationHooks) -> None:
    if not path.is_dir():
        hooks.before("mkdir", path)
        private_mkdir(path)


def backup_database(source: Path, target: Path, hooks: MigrationHooks) -> int:
    """Copy with the backup API into a fresh ``target``; return its size in bytes."""
    for name in DB_NAMES:
        target.with_name(name).unlink(missing_ok=True)
    source_conn = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        target_conn = apsw.Connection(str(target))
        try:
            with target_conn.backup("main", source_conn, "main") as backup:
                while not backup.done:
                    hooks.before("backup_db", target)
                    backup.step(BACKUP_PAGES_PER_STEP)
        finally:
            target_conn.close()
    finally:
        source_conn.close()
    AtomicFs().fsync_file(target)
    AtomicFs().fsync_dir(target.parent)
    return target.stat().st_size


def copy_unless_same(source: Path, target: Path, hooks: MigrationHooks, *, check_existing: bool) -> int:
    """Copy ``source`` over ``target`` (temp, fsync, rename, fsync folder); return the bytes written."""
    if check_existing and target.is_file() and _sha256(target) == _sha256(source):
        return 0
    temp = copy_temp_path(target)
    hooks.before("write_temp", temp)
    size = 0
    with source.open("rb") as reader, temp.open("wb") as writer:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    os.chmod(temp, stat.S_IMODE(source.stat().st_mode))
    hooks.before("rename", target)
    os.replace(temp, target)
    AtomicFs().fsync_dir(target.parent)
    return size


def copy_temp_path(target: Path) -> Path:
    """Where ``copy_unless_same`` writes ``target`` before renaming it into place."""
    return target.with_name(f".{target.name}{_COPY_TEMP_SUFFIX}")


def is_copy_temp(name: str) -> bool:
    return name.endswith(_COPY_TEMP_SUFFIX)


def copy_target(temp_rel: str) -> str:
    """The relative path a copy temp file (relative path ``temp_rel``) stands for."""
    path = Path(temp_rel)
    return path.with_name(path.name[1 : -len(_COPY_TEMP_SUFFIX)]).as_posix()


# --- verify --------------------------------------------------------------------------------------------------


def verify_database(source: Path, copy: Path) -> int:
    """Check the copy (integrity, tables, row counts, user_version); return its page count."""
    source_conn = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
    copy_conn = apsw.Connection(str(copy))
    try:
        integrity = [str(row[0]) for row in copy_conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            raise Inconsistent(f"database copy {str(copy)!r} failed integrity_check: {integrity[:3]!r}")
        source_counts, copy_counts = _table_counts(source_conn), _table_counts(copy_conn)
        if source_counts != copy_counts:
            raise Inconsistent(f"database copy row counts {copy_counts!r} differ from the source's {source_counts!r}")
        versions = (source_conn.pragma("user_version"), copy_conn.pragma("user_version"))
        if versions[0] != versions[1]:
            raise Inconsistent(f"database copy user_version {versions[1]!r} differs from the source's {versions[0]!r}")
        return int(copy_conn.pragma("page_count"))
    except apsw.Error as error:
        raise Inconsistent(f"database copy {str(copy)!r} cannot be read: {type(error).__name__}: {error}") from error
    finally:
        copy_conn.close()
        source_conn.close()


def _table_counts(conn: apsw.Connection) -> dict[str, int]:
    names = [str(row[0]) for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
    return {name: int(conn.execute(f'SELECT count(*) FROM "{_quoted(name)}"').get) for name in names}


def _quoted(name: str) -> str:
    return name.replace('"', '""')


def verify_files(old: StorageRoot, new: StorageRoot, plan: Plan) -> None:
    for rel in plan.files:
        target = new.root / rel
        if not target.is_file() or _sha256(target) != _sha256(old.root / rel):
            raise Inconsistent(f"copy of {rel!r} differs from the source (SHA-256)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
