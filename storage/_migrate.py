"""Moving a storage root to a new folder: copy, verify, then switch in one atomic step; resumable after a crash.

Contract of ``migrate_storage(old, new)`` (stop the host first: SQLite cannot tell a copy from a live writer; if
``OLD/system/agenthost.lock`` exists and another process holds an flock on it, the migration is refused):
- Refused with ``MigrationError`` naming the paths when: OLD and NEW are the same folder or one is inside the
  other (compared after resolving symlinks); OLD has no ``system/agenthost.db``; OLD is in use; NEW holds files
  and no journal of ours (empty folders are fine); NEW's journal belongs to another migration; OLD already has
  ``system/MOVED`` (unless it points at NEW and NEW's journal says "verified": then only the bookkeeping of that
  finished switch is completed); OLD contains a symlink or a special file.
- Journal ``NEW/system/migration.json`` (atomic replace) lists, before anything else is written to NEW, every file
  and folder the migration will create, and the phase: "copying" -> "verified" -> "switched".
- Copying: the database with the SQLite backup API from a read-only connection (the WAL's committed content is
  included; a file copy could miss it), 32 pages per step; then every file under ``projects/``, ``global/`` and
  ``system/`` (runtime state, logs, quarantine; not the database files, ``MOVED``, the journal or the lock) via
  temp file + fsync + rename + folder fsync. A resumed run copies again only files whose SHA-256 differs, and
  always redoes the database backup.
- Verifying: ``integrity_check`` of the copy, the same tables with the same row counts and ``user_version`` as
  the source, and the SHA-256 of every copied file equal to its source's.
- Switch (the commit point): ``OLD/system/MOVED`` is written by atomic replace as JSON
  ``{"moved_to": "<abs NEW>", "at": <wall seconds>}``; then the journal says "switched". Nothing in OLD changes
  before the switch (a read-only SQLite connection may create OLD's ``-shm`` index file); after it OLD is kept,
  never deleted by us, for the user to check and remove.
- A crash (simulated by ``fs_hooks`` raising) leaves a state that the next call resumes (``resumed=True``). If a
  resumed attempt fails verification, NEW is rolled back (only the files and folders the journal lists) and the
  migration starts over once. A first attempt that fails verification is rolled back and reported with
  ``state="rolled_back"`` (OLD untouched and still the root to use). OS and SQLite errors raise
  ``MigrationError`` and leave the journal for a later resume; exceptions raised by hooks propagate as they are.
- ``resolve_root(root)`` follows ``MOVED`` pointers (chains too) and returns the root to open. A pointer is
  followed only when the target's journal names this root as its source and says "verified" (the crash window
  between MOVED and the journal update) or "switched"; otherwise ``MigrationError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import apsw
import msgspec

from ._errors import StorageError
from ._lock import LOCK_NAME
from ._paths import StorageRoot, private_mkdir
from ._transcripts import AtomicFs, atomic_write

__all__ = [
    "MigrationError",
    "MigrationHooks",
    "MigrationReport",
    "MigrationStep",
    "migrate_storage",
    "resolve_root",
    "root_in_use",
]

MigrationStep = Literal["mkdir", "journal", "backup_db", "write_temp", "rename", "verify", "switch"]
MigrationState = Literal["switched", "rolled_back"]
JournalPhase = Literal["copying", "verified", "switched"]

JOURNAL_NAME = "migration.json"
MOVED_NAME = "MOVED"
BACKUP_PAGES_PER_STEP = 32
_DB_NAMES: tuple[str, ...] = ("agenthost.db", "agenthost.db-wal", "agenthost.db-shm", "agenthost.db-journal")
_SYSTEM_SKIPPED: frozenset[str] = frozenset({*_DB_NAMES, MOVED_NAME, JOURNAL_NAME, LOCK_NAME})
_COPIED_TOPS: tuple[str, ...] = ("projects", "global", "system")
_LAYOUT_DIRS: tuple[str, ...] = ("projects", "global", "system", "system/runtime-state")
_COPY_TEMP_SUFFIX = ".migrating.tmp"
_CHUNK = 1 << 20


class MigrationError(StorageError):
    """The migration was refused or failed; the message names the paths and what to do."""


class MigrationReport(msgspec.Struct, frozen=True, kw_only=True):
    old_root: str
    new_root: str
    db_pages: int
    transcripts: int
    bytes_copied: int  # bytes written by this call (database copy + files not already verified in NEW)
    resumed: bool  # an earlier, interrupted attempt was found and continued
    state: MigrationState
    detail: str = ""


class MigrationHooks:
    """Called before each file-system step; tests raise from ``before`` to simulate a crash at that point."""

    def before(self, step: MigrationStep, path: Path) -> None:
        """``path`` is what the step is about to create or change (the NEW root for "verify")."""


class _Journal(msgspec.Struct, frozen=True, kw_only=True):
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


class _Moved(msgspec.Struct, frozen=True):
    moved_to: str
    at: float


class _Plan(msgspec.Struct, frozen=True):
    files: tuple[str, ...]
    dirs: tuple[str, ...]


class _Inconsistent(Exception):
    """Verification failed: NEW does not hold a faithful copy of OLD."""


# --- public --------------------------------------------------------------------------------------------------


def root_in_use(root: StorageRoot) -> bool:
    """True when ``system/agenthost.lock`` exists and some process holds an flock on it."""
    try:
        descriptor = os.open(root.system_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing also releases our own probe lock
    return False


def resolve_root(root: StorageRoot) -> StorageRoot:
    """The root to open: ``root`` itself, or where completed migrations moved it (see the module contract)."""
    current, seen = root, {root}
    while (moved := _read_moved(current)) is not None:
        target = StorageRoot(moved.moved_to)
        journal = _read_journal(target)
        if journal is None or not _same_path(journal.old_root, current.root) or journal.phase == "copying":
            raise MigrationError(
                f"storage root {str(current.root)!r} says it moved to {moved.moved_to!r}, but that folder holds no"
                f" finished migration from it ({_journal_path(target)}); run migrate-storage again or remove"
                f" {str(_moved_path(current))!r} if the move was abandoned"
            )
        if target in seen:
            raise MigrationError(f"storage root {str(root.root)!r}: MOVED pointers form a cycle at {moved.moved_to!r}")
        current = target
        seen.add(current)
    return current


def migrate_storage(
    old: StorageRoot,
    new: StorageRoot,
    *,
    fs_hooks: MigrationHooks | None = None,
    wall: Callable[[], float] = time.time,
) -> MigrationReport:
    """Copy OLD to NEW, verify, switch (see the module contract)."""
    hooks = fs_hooks if fs_hooks is not None else MigrationHooks()
    _check_roots(old, new)
    journal = _read_journal(new)
    moved = _read_moved(old)
    if moved is not None:
        return _complete_switch(old, new, moved, journal, hooks, wall)
    if journal is not None:
        _check_journal(journal, old, new)
    _refuse_foreign_files(new, journal)
    with _translated(old, new):
        try:
            return _attempt(old, new, journal, hooks, wall, resumed=journal is not None, detail="")
        except _Inconsistent as problem:
            _rollback(new, _read_journal(new))
            if journal is None:
                return _rolled_back(old, new, f"verification failed: {problem}; NEW was emptied, keep using OLD")
            detail = f"rolled back an inconsistent earlier attempt ({problem}) and started over"
        try:
            return _attempt(old, new, None, hooks, wall, resumed=True, detail=detail)
        except _Inconsistent as problem:
            _rollback(new, _read_journal(new))
            return _rolled_back(old, new, f"verification failed twice: {problem}; NEW was emptied, keep using OLD")


# --- checks --------------------------------------------------------------------------------------------------


def _check_roots(old: StorageRoot, new: StorageRoot) -> None:
    old_real, new_real = Path(os.path.realpath(old.root)), Path(os.path.realpath(new.root))
    if old_real == new_real:
        raise MigrationError(f"old and new storage roots are the same folder: {str(old_real)!r}")
    if new_real.is_relative_to(old_real):
        raise MigrationError(f"new storage root {str(new.root)!r} is inside the old root {str(old.root)!r}")
    if old_real.is_relative_to(new_real):
        raise MigrationError(f"old storage root {str(old.root)!r} is inside the new root {str(new.root)!r}")
    if new.root.exists() and not new.root.is_dir():
        raise MigrationError(f"new storage root {str(new.root)!r} exists and is not a folder")
    if not old.db_path.is_file():
        raise MigrationError(f"{str(old.root)!r} is not an agenthost storage root: no database at {str(old.db_path)!r}")
    if root_in_use(old):
        raise MigrationError(
            f"storage root {str(old.root)!r} is in use (a process holds {str(old.system_dir / LOCK_NAME)!r});"
            " stop the host first"
        )


def _check_journal(journal: _Journal, old: StorageRoot, new: StorageRoot) -> None:
    if not _same_path(journal.old_root, old.root) or not _same_path(journal.new_root, new.root):
        raise MigrationError(
            f"{str(new.root)!r} holds a migration from {journal.old_root!r} to {journal.new_root!r}, not from"
            f" {str(old.root)!r}; choose another new root"
        )
    if journal.phase == "switched":
        raise MigrationError(
            f"{str(new.root)!r} holds a finished migration from {str(old.root)!r}, but {str(_moved_path(old))!r} is"
            " missing; the new root may already be in use, so nothing was changed: check both roots by hand"
        )


def _refuse_foreign_files(new: StorageRoot, journal: _Journal | None) -> None:
    ours = set(journal.files) if journal is not None else set()
    foreign = []
    for rel in _walk_files(new.root):
        name = Path(rel).name
        is_ours = (
            rel in ours
            or rel == f"system/{JOURNAL_NAME}"
            or (rel.startswith("system/.") and name.startswith(f".{JOURNAL_NAME}.") and name.endswith(".tmp"))
            or (name.endswith(_COPY_TEMP_SUFFIX) and _copy_target(rel) in ours)
        )
        if not is_ours:
            foreign.append(rel)
    if foreign:
        owner = "files this migration did not create" if journal is not None else "files and no migration journal"
        raise MigrationError(f"new storage root {str(new.root)!r} holds {owner}: {foreign[:3]!r}; use an empty folder")


def _complete_switch(
    old: StorageRoot,
    new: StorageRoot,
    moved: _Moved,
    journal: _Journal | None,
    hooks: MigrationHooks,
    wall: Callable[[], float],
) -> MigrationReport:
    moved_path = str(_moved_path(old))
    if not _same_path(moved.moved_to, new.root):
        raise MigrationError(f"storage root {str(old.root)!r} was already moved to {moved.moved_to!r} ({moved_path})")
    if journal is None or not _same_path(journal.old_root, old.root) or journal.phase == "copying":
        raise MigrationError(
            f"{moved_path} points at {str(new.root)!r}, but that folder holds no verified migration from"
            f" {str(old.root)!r}; check both roots by hand"
        )
    if journal.phase == "switched":
        raise MigrationError(f"storage root {str(old.root)!r} was already migrated to {str(new.root)!r} ({moved_path})")
    with _translated(old, new):
        _write_journal(new, msgspec.structs.replace(journal, phase="switched", updated_at=wall()), hooks)
    return _report(old, new, journal, 0, resumed=True, detail="completed the bookkeeping of an earlier switch")


# --- the attempt ---------------------------------------------------------------------------------------------


def _attempt(
    old: StorageRoot,
    new: StorageRoot,
    journal: _Journal | None,
    hooks: MigrationHooks,
    wall: Callable[[], float],
    *,
    resumed: bool,
    detail: str,
) -> MigrationReport:
    plan = _plan(old)
    now = wall()
    created_dirs = {rel for rel in plan.dirs if not (new.root / rel).is_dir()}
    created_files = {*plan.files, *(f"system/{name}" for name in _DB_NAMES)}
    if journal is not None:
        created_dirs |= set(journal.dirs)
        created_files |= set(journal.files)
    journal = _Journal(
        old_root=str(old.root),
        new_root=str(new.root),
        phase="copying",
        files=tuple(sorted(created_files)),
        dirs=tuple(sorted(created_dirs)),
        started_at=journal.started_at if journal is not None else now,
        updated_at=now,
        transcripts=sum(1 for rel in plan.files if _is_transcript(rel)),
    )
    _make_dir(new.system_dir, hooks)
    _remove_journal_temps(new)
    _write_journal(new, journal, hooks)
    for rel in plan.dirs:
        _make_dir(new.root / rel, hooks)
    bytes_copied = _backup_database(old.db_path, new.db_path, hooks)
    for rel in plan.files:
        bytes_copied += _copy_unless_same(old.root / rel, new.root / rel, hooks, check_existing=resumed)
    hooks.before("verify", new.root)
    db_pages = _verify_database(old.db_path, new.db_path)
    _verify_files(old, new, plan)
    journal = msgspec.structs.replace(journal, phase="verified", updated_at=wall(), db_pages=db_pages)
    _write_journal(new, journal, hooks)
    at = wall()
    hooks.before("switch", _moved_path(old))
    atomic_write(_moved_path(old), msgspec.json.encode(_Moved(moved_to=str(new.root), at=at)))
    _write_journal(new, msgspec.structs.replace(journal, phase="switched", updated_at=at), hooks)
    return _report(old, new, journal, bytes_copied, resumed=resumed, detail=detail)


def _plan(old: StorageRoot) -> _Plan:
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
    return _Plan(files=tuple(sorted(files)), dirs=tuple(sorted(set(dirs))))


def _skipped_system_file(name: str) -> bool:
    our_temp = name.endswith(".tmp") and name.startswith((f".{MOVED_NAME}.", f".{JOURNAL_NAME}."))
    return name in _SYSTEM_SKIPPED or our_temp


def _require_plain_dir(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        raise MigrationError(f"cannot migrate {str(path)!r}: only regular files and folders are copied")


def _is_transcript(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 4 and parts[0] == "projects" and parts[2] == "threads" and parts[3].endswith(".md")


def _make_dir(path: Path, hooks: MigrationHooks) -> None:
    if not path.is_dir():
        hooks.before("mkdir", path)
        private_mkdir(path)


def _backup_database(source: Path, target: Path, hooks: MigrationHooks) -> int:
    """Copy with the backup API into a fresh ``target``; return its size in bytes."""
    for name in _DB_NAMES:
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
    _fsync_file(target)
    AtomicFs().fsync_dir(target.parent)
    return target.stat().st_size


def _copy_unless_same(source: Path, target: Path, hooks: MigrationHooks, *, check_existing: bool) -> int:
    """Copy ``source`` over ``target`` (temp, fsync, rename, fsync folder); return the bytes written."""
    if check_existing and target.is_file() and _sha256(target) == _sha256(source):
        return 0
    temp = target.with_name(f".{target.name}{_COPY_TEMP_SUFFIX}")
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


def _verify_database(source: Path, copy: Path) -> int:
    """Check the copy (integrity, tables, row counts, user_version); return its page count."""
    source_conn = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
    copy_conn = apsw.Connection(str(copy))
    try:
        integrity = [str(row[0]) for row in copy_conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            raise _Inconsistent(f"database copy {str(copy)!r} failed integrity_check: {integrity[:3]!r}")
        source_counts, copy_counts = _table_counts(source_conn), _table_counts(copy_conn)
        if source_counts != copy_counts:
            raise _Inconsistent(f"database copy row counts {copy_counts!r} differ from the source's {source_counts!r}")
        versions = (source_conn.pragma("user_version"), copy_conn.pragma("user_version"))
        if versions[0] != versions[1]:
            raise _Inconsistent(f"database copy user_version {versions[1]!r} differs from the source's {versions[0]!r}")
        return int(copy_conn.pragma("page_count"))
    except apsw.Error as error:
        raise _Inconsistent(f"database copy {str(copy)!r} cannot be read: {type(error).__name__}: {error}") from error
    finally:
        copy_conn.close()
        source_conn.close()


def _table_counts(conn: apsw.Connection) -> dict[str, int]:
    names = [str(row[0]) for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")]
    return {name: int(conn.execute(f'SELECT count(*) FROM "{_quoted(name)}"').get) for name in names}


def _quoted(name: str) -> str:
    return name.replace('"', '""')


def _verify_files(old: StorageRoot, new: StorageRoot, plan: _Plan) -> None:
    for rel in plan.files:
        target = new.root / rel
        if not target.is_file() or _sha256(target) != _sha256(old.root / rel):
            raise _Inconsistent(f"copy of {rel!r} differs from the source (SHA-256)")


# --- rollback, journal, pointer ------------------------------------------------------------------------------


def _rollback(new: StorageRoot, journal: _Journal | None) -> None:
    """Remove exactly what the journal says this migration created; the journal goes last but one (folders)."""
    if journal is None:
        return
    for rel in journal.files:
        target = new.root / rel
        target.unlink(missing_ok=True)
        target.with_name(f".{target.name}{_COPY_TEMP_SUFFIX}").unlink(missing_ok=True)
    _remove_journal_temps(new)
    _journal_path(new).unlink(missing_ok=True)
    for rel in sorted(journal.dirs, key=lambda rel: rel.count("/"), reverse=True):
        with contextlib.suppress(OSError):  # not empty (someone else's file) or already gone: keep it
            (new.root / rel).rmdir()


def _rolled_back(old: StorageRoot, new: StorageRoot, detail: str) -> MigrationReport:
    return MigrationReport(
        old_root=str(old.root),
        new_root=str(new.root),
        db_pages=0,
        transcripts=0,
        bytes_copied=0,
        resumed=False,
        state="rolled_back",
        detail=detail,
    )


def _report(
    old: StorageRoot, new: StorageRoot, journal: _Journal, bytes_copied: int, *, resumed: bool, detail: str
) -> MigrationReport:
    return MigrationReport(
        old_root=str(old.root),
        new_root=str(new.root),
        db_pages=journal.db_pages,
        transcripts=journal.transcripts,
        bytes_copied=bytes_copied,
        resumed=resumed,
        state="switched",
        detail=detail,
    )


def _journal_path(root: StorageRoot) -> Path:
    return root.system_dir / JOURNAL_NAME


def _moved_path(root: StorageRoot) -> Path:
    return root.system_dir / MOVED_NAME


def _write_journal(new: StorageRoot, journal: _Journal, hooks: MigrationHooks) -> None:
    hooks.before("journal", _journal_path(new))
    atomic_write(_journal_path(new), msgspec.json.encode(journal))


def _read_journal(root: StorageRoot) -> _Journal | None:
    path = _journal_path(root)
    try:
        journal = msgspec.json.decode(path.read_bytes(), type=_Journal)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as error:
        raise MigrationError(f"migration journal {str(path)!r} cannot be read: {error}; inspect it by hand") from error
    unsafe = [rel for rel in (*journal.files, *journal.dirs) if not _is_safe_relative(rel)]
    if unsafe:
        raise MigrationError(f"migration journal {str(path)!r} lists paths outside its root: {unsafe[:3]!r}")
    return journal


def _read_moved(root: StorageRoot) -> _Moved | None:
    path = _moved_path(root)
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Moved)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as error:
        raise MigrationError(f"move pointer {str(path)!r} cannot be read: {error}; inspect it by hand") from error


def _remove_journal_temps(new: StorageRoot) -> None:
    if new.system_dir.is_dir():
        for temp in new.system_dir.glob(f".{JOURNAL_NAME}.*.tmp"):
            temp.unlink(missing_ok=True)


# --- small helpers -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _translated(old: StorageRoot, new: StorageRoot) -> Iterator[None]:
    try:
        yield
    except (OSError, apsw.Error, StorageError) as error:
        if isinstance(error, MigrationError):
            raise
        raise MigrationError(
            f"migrating {str(old.root)!r} to {str(new.root)!r} failed: {type(error).__name__}: {error};"
            " run the migration again to resume"
        ) from error


def _walk_files(root: Path) -> Iterator[str]:
    if not root.is_dir():
        return
    for directory, dir_names, file_names in os.walk(root):
        for name in file_names + [d for d in dir_names if (Path(directory) / d).is_symlink()]:
            yield (Path(directory) / name).relative_to(root).as_posix()


def _copy_target(temp_rel: str) -> str:
    path = Path(temp_rel)
    return path.with_name(path.name[1 : -len(_COPY_TEMP_SUFFIX)]).as_posix()


def _is_safe_relative(rel: str) -> bool:
    path = Path(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


def _same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.abspath(a) == os.path.abspath(b) or os.path.realpath(a) == os.path.realpath(b)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    AtomicFs().fsync_file(path)
