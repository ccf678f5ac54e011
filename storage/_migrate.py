"""Moving a storage root to a new folder: copy, verify, then switch in one atomic step; resumable after a crash.

Contract of ``migrate_storage(old, new)`` (stop the host first: SQLite cannot tell a copy from a live writer; if
``OLD/system/agenthost.lock`` exists and another process holds an flock on it, the migration is refused):
- Refused with ``MigrationError`` naming the paths when: OLD and NEW are the same folder or one is inside the
  other (compared after resolving symlinks); OLD has no ``system/agenthost.db``; OLD is in use; NEW holds files
  and no journal of ours (empty folders are fine); NEW's journal belongs to another migration; OLD already has
  ``system/MOVED`` (unless it points at NEW and NEW's journal says "verified": then only the bookkeeping of that
  finished switch is completed); OLD contains a symlink or a special file.
- The journal (storage._migrate_journal) lists, before anything else is written to NEW, every file and folder the
  migration will create, and the phase: "copying" -> "verified" -> "switched".
- Copying, then verifying: storage._migrate_copy. A resumed run copies again only files whose SHA-256 differs, and
  always redoes the database backup.
- Switch (the commit point): ``OLD/system/MOVED`` is written by atomic replace; then the journal says "switched".
  Nothing in OLD changes before the switch (a read-only SQLite connection may create OLD's ``-shm`` index file);
  after it OLD is kept, never deleted by us, for the user to check and remove.
- A crash (simulated by ``fs_hooks`` raising) leaves a state that the next call resumes (``resumed=True``). If a
  resumed attempt fails verification, NEW is rolled back (only the files and folders the journal lists) and the
  migration starts over once. A first attempt that fails verification is rolled back and reported with
  ``state="rolled_back"`` (OLD untouched and still the root to use). OS and SQLite errors raise
  ``MigrationError`` and leave the journal for a later resume; exceptions raised by hooks propagate as they are.
- ``resolve_root(root)`` follows ``MOVED`` pointers (chains too) and returns the root to open. A pointer is
  followed only when the target's journal names this root as its source and says "verified" (the crash window
  between MOVED and the journal update) or "switched"; otherwise ``MigrationError``.
- ``root_in_use(root)``: True when ``system/agenthost.lock`` exists and some process holds an flock on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import apsw
import msgspec

from ._errors import StorageError
from ._lock import LOCK_NAME
from ._migrate_copy import (
    DB_NAMES,
    Inconsistent,
    backup_database,
    copy_target,
    copy_temp_path,
    copy_unless_same,
    is_copy_temp,
    is_transcript,
    make_dir,
    plan_copy,
    verify_database,
    verify_files,
)
from ._migrate_journal import (
    JOURNAL_NAME,
    Journal,
    Moved,
    is_atomic_temp,
    journal_path,
    moved_path,
    read_journal,
    read_moved,
    remove_journal_temps,
    write_journal,
    write_moved,
)
from ._migrate_steps import MigrationError, MigrationHooks, MigrationStep
from ._paths import StorageRoot

__all__ = [
    "MigrationError",
    "MigrationHooks",
    "MigrationReport",
    "MigrationStep",
    "migrate_storage",
    "resolve_root",
    "root_in_use",
]

MigrationState = Literal["switched", "rolled_back"]


class MigrationReport(msgspec.Struct, frozen=True, kw_only=True):
    old_root: str
    new_root: str
    db_pages: int
    transcripts: int
    bytes_copied: int  # bytes written by this call (database copy + files not already verified in NEW)
    resumed: bool  # an earlier, interrupted attempt was found and continued
    state: MigrationState
    detail: str = ""


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
    while (moved := read_moved(current)) is not None:
        target = StorageRoot(moved.moved_to)
        journal = read_journal(target)
        if journal is None or not _same_path(journal.old_root, current.root) or journal.phase == "copying":
            raise MigrationError(
                f"storage root {str(current.root)!r} says it moved to {moved.moved_to!r}, but that folder holds no"
                f" finished migration from it ({journal_path(target)}); run migrate-storage again or remove"
                f" {str(moved_path(current))!r} if the move was abandoned"
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
    journal = read_journal(new)
    moved = read_moved(old)
    if moved is not None:
        return _complete_switch(old, new, moved, journal, hooks, wall)
    if journal is not None:
        _check_journal(journal, old, new)
    _refuse_foreign_files(new, journal)
    with _translated(old, new):
        try:
            return _attempt(old, new, journal, hooks, wall, resumed=journal is not None, detail="")
        except Inconsistent as problem:
            _rollback(new, read_journal(new))
            if journal is None:
                return _rolled_back(old, new, f"verification failed: {problem}; NEW was emptied, keep using OLD")
            detail = f"rolled back an inconsistent earlier attempt ({problem}) and started over"
        try:
            return _attempt(old, new, None, hooks, wall, resumed=True, detail=detail)
        except Inconsistent as problem:
            _rollback(new, read_journal(new))
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


def _check_journal(journal: Journal, old: StorageRoot, new: StorageRoot) -> None:
    if not _same_path(journal.old_root, old.root) or not _same_path(journal.new_root, new.root):
        raise MigrationError(
            f"{str(new.root)!r} holds a migration from {journal.old_root!r} to {journal.new_root!r}, not from"
            f" {str(old.root)!r}; choose another new root"
        )
    if journal.phase == "switched":
        raise MigrationError(
            f"{str(new.root)!r} holds a finished migration from {str(old.root)!r}, but {str(moved_path(old))!r} is"
            " missing; the new root may already be in use, so nothing was changed: check both roots by hand"
        )


def _refuse_foreign_files(new: StorageRoot, journal: Journal | None) -> None:
    ours = set(journal.files) if journal is not None else set()
    foreign = []
    for rel in _walk_files(new.root):
        name = Path(rel).name
        is_ours = (
            rel in ours
            or rel == f"system/{JOURNAL_NAME}"
            or (rel.startswith("system/.") and is_atomic_temp(name, JOURNAL_NAME))
            or (is_copy_temp(name) and copy_target(rel) in ours)
        )
        if not is_ours:
            foreign.append(rel)
    if foreign:
        owner = "files this migration did not create" if journal is not None else "files and no migration journal"
        raise MigrationError(f"new storage root {str(new.root)!r} holds {owner}: {foreign[:3]!r}; use an empty folder")


def _complete_switch(
    old: StorageRoot,
    new: StorageRoot,
    moved: Moved,
    journal: Journal | None,
    hooks: MigrationHooks,
    wall: Callable[[], float],
) -> MigrationReport:
    moved_file = str(moved_path(old))
    if not _same_path(moved.moved_to, new.root):
        raise MigrationError(f"storage root {str(old.root)!r} was already moved to {moved.moved_to!r} ({moved_file})")
    if journal is None or not _same_path(journal.old_root, old.root) or journal.phase == "copying":
        raise MigrationError(
            f"{moved_file} points at {str(new.root)!r}, but that folder holds no verified migration from"
            f" {str(old.root)!r}; check both roots by hand"
        )
    if journal.phase == "switched":
        raise MigrationError(f"storage root {str(old.root)!r} was already migrated to {str(new.root)!r} ({moved_file})")
    with _translated(old, new):
        write_journal(new, msgspec.structs.replace(journal, phase="switched", updated_at=wall()), hooks)
    return _report(old, new, journal, 0, resumed=True, detail="completed the bookkeeping of an earlier switch")


# --- the attempt ---------------------------------------------------------------------------------------------


def _attempt(
    old: StorageRoot,
    new: StorageRoot,
    journal: Journal | None,
    hooks: MigrationHooks,
    wall: Callable[[], float],
    *,
    resumed: bool,
    detail: str,
) -> MigrationReport:
    plan = plan_copy(old)
    now = wall()
    created_dirs = {rel for rel in plan.dirs if not (new.root / rel).is_dir()}
    created_files = {*plan.files, *(f"system/{name}" for name in DB_NAMES)}
    if journal is not None:
        created_dirs |= set(journal.dirs)
        created_files |= set(journal.files)
    journal = Journal(
        old_root=str(old.root),
        new_root=str(new.root),
        phase="copying",
        files=tuple(sorted(created_files)),
        dirs=tuple(sorted(created_dirs)),
        started_at=journal.started_at if journal is not None else now,
        updated_at=now,
        transcripts=sum(1 for rel in plan.files if is_transcript(rel)),
    )
    make_dir(new.system_dir, hooks)
    remove_journal_temps(new)
    write_journal(new, journal, hooks)
    for rel in plan.dirs:
        make_dir(new.root / rel, hooks)
    bytes_copied = backup_database(old.db_path, new.db_path, hooks)
    for rel in plan.files:
        bytes_copied += copy_unless_same(old.root / rel, new.root / rel, hooks, check_existing=resumed)
    hooks.before("verify", new.root)
    db_pages = verify_database(old.db_path, new.db_path)
    verify_files(old, new, plan)
    journal = msgspec.structs.replace(journal, phase="verified", updated_at=wall(), db_pages=db_pages)
    write_journal(new, journal, hooks)
    at = wall()
    write_moved(old, new, at, hooks)
    write_journal(new, msgspec.structs.replace(journal, phase="switched", updated_at=at), hooks)
    return _report(old, new, journal, bytes_copied, resumed=resumed, detail=detail)


def _rollback(new: StorageRoot, journal: Journal | None) -> None:
    """Remove exactly what the journal says this migration created; the journal goes last but one (folders)."""
    if journal is None:
        return
    for rel in journal.files:
        target = new.root / rel
        target.unlink(missing_ok=True)
        copy_temp_path(target).unlink(missing_ok=True)
    remove_journal_temps(new)
    journal_path(new).unlink(missing_ok=True)
    for rel in sorted(journal.dirs, key=lambda rel: rel.count("/"), reverse=True):
        with contextlib.suppress(OSError):  # not empty (someone else's file) or already gone: keep it
            (new.root / rel).rmdir()


# --- reports and small helpers -------------------------------------------------------------------------------


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
    old: StorageRoot, new: StorageRoot, journal: Journal, bytes_copied: int, *, resumed: bool, detail: str
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


def _same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.abspath(a) == os.path.abspath(b) or os.path.realpath(a) == os.path.realpath(b)
