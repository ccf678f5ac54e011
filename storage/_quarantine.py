"""Quarantine of damaged storage files, and opening a database that quarantines and rebuilds it when corrupt.

Contract:
- ``quarantine(root, paths, reason, now)`` moves every existing path of ``paths`` (files or folders, in order) with
  ``os.rename`` (same filesystem, so each move is atomic) into
  ``<root>/system/quarantine/<UTC YYYYmmddTHHMMSSZ of now>-<reason slug>/``, keeping each path relative to the
  root (``system/agenthost.db`` stays ``system/agenthost.db`` inside the folder, so names never clash). Missing
  paths are skipped; when none exists no folder is made and ``into`` is "". A taken folder name gets ``-2``,
  ``-3``... A path outside the root, or inside ``system/quarantine``, raises ``StorageError`` naming it; a failed
  move raises ``StorageIOError`` naming it (paths moved before it stay moved). ``moved`` holds root-relative POSIX
  paths. The slug is the reason lower-cased, runs of other characters than ``a-z0-9`` as ``-``, at most 40.
- ``quarantine_runtime_state(root, now, reason)`` moves ``system/runtime-state`` aside in one rename and recreates
  it empty; ``moved`` lists the entries it held (nothing to move: nothing moved, the folder is still ensured).
- ``open_or_quarantine(root, now)`` = ``Database.open`` + ``quick_check``. On corruption only (``StorageCorruptError``
  or an apsw CorruptError / NotADBError cause; NOT a newer schema, NOT permission or other I/O errors, which
  propagate untouched) it quarantines ``agenthost.db`` and its ``-wal``/``-shm``/``-journal`` (reason "corrupt
  database") and rebuilds the database from the transcripts (storage._rebuild: the rebuild file exists from before
  the quarantine until it is renamed over ``agenthost.db``). A crash anywhere leaves either the corrupt DB
  (quarantined again next time) or no DB plus the rebuild file, which the next call takes as "finish the
  interrupted rebuild" (report reason says so, ``moved`` empty). What a transcript cannot give back, and which
  transcripts are skipped: storage._transcript_parser and storage._rebuild.

The transcript parser and the rebuild helpers are re-exported here for the modules that import them from here.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import apsw
import msgspec

from ._database import Database
from ._dbfiles import database_files
from ._errors import StorageCorruptError, StorageError, StorageIOError
from ._paths import StorageRoot, private_mkdir
from ._rebuild import (
    mark_rebuild_started,
    rebuild_database,
    rebuild_interrupted,
)
from ._transcripts import AtomicFs

__all__ = ["QuarantineReport", "open_or_quarantine", "quarantine", "quarantine_dir", "quarantine_runtime_state"]

_SLUG_RE = re.compile(r"[^a-z0-9]+")
_SLUG_MAX = 40


class QuarantineReport(msgspec.Struct, frozen=True, kw_only=True):
    """What was moved aside (root-relative paths) into which folder, and what a rebuild recovered."""

    moved: tuple[str, ...]
    into: str
    reason: str
    rebuilt_threads: int = 0
    rebuilt_turns: int = 0
    skipped: tuple[str, ...] = ()  # "<transcript path>: <why>" for transcripts the rebuild could not use


# --- quarantine ----------------------------------------------------------------------------------------------


def quarantine_dir(root: StorageRoot) -> Path:
    return root.system_dir / "quarantine"


def quarantine(root: StorageRoot, paths: Sequence[Path], reason: str, now: float) -> QuarantineReport:
    """Move the existing ``paths`` into a new timestamped quarantine folder (see the module contract)."""
    relative = [_relative_to_root(root, Path(path)) for path in paths]
    existing = [rel for rel in relative if os.path.lexists(root.root / rel)]
    if not existing:
        return QuarantineReport(moved=(), into="", reason=reason)
    folder = _claim_folder(root, reason, now)
    fs = AtomicFs()
    moved: list[str] = []
    for rel in existing:
        source, target = root.root / rel, folder / rel
        try:
            private_mkdir(target.parent)
            os.rename(source, target)
            fs.fsync_dir(source.parent)
            fs.fsync_dir(target.parent)
        except OSError as error:
            raise StorageIOError(
                f"quarantining {str(source)!r} into {str(folder)!r} failed after moving {moved!r}: {error!r}"
            ) from error
        moved.append(rel.as_posix())
    return QuarantineReport(moved=tuple(moved), into=str(folder), reason=reason)


def quarantine_runtime_state(root: StorageRoot, now: float, reason: str) -> QuarantineReport:
    """Move ``system/runtime-state`` aside and recreate it empty."""
    state_dir = root.runtime_state_dir
    entries = sorted(entry.name for entry in state_dir.iterdir()) if state_dir.is_dir() else []
    report = QuarantineReport(moved=(), into="", reason=reason)
    if entries:
        report = quarantine(root, [state_dir], reason, now)
        prefix = _relative_to_root(root, state_dir).as_posix()
        report = msgspec.structs.replace(report, moved=tuple(f"{prefix}/{name}" for name in entries))
    try:
        private_mkdir(state_dir)
    except OSError as error:
        raise StorageIOError(f"cannot recreate runtime state folder {str(state_dir)!r}: {error!r}") from error
    return report


def _relative_to_root(root: StorageRoot, path: Path) -> Path:
    absolute = Path(os.path.abspath(path))
    if not absolute.is_relative_to(root.root) or absolute == root.root:
        raise StorageError(
            f"path {str(path)!r} cannot be quarantined: it is not inside storage root {str(root.root)!r}"
        )
    if absolute.is_relative_to(quarantine_dir(root)):
        raise StorageError(f"path {str(path)!r} cannot be quarantined: it is already in the quarantine")
    return absolute.relative_to(root.root)


def _claim_folder(root: StorageRoot, reason: str, now: float) -> Path:
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise StorageError(f"quarantine time {now!r} is invalid: must be finite float seconds")
    slug = _SLUG_RE.sub("-", reason.lower()).strip("-")[:_SLUG_MAX].strip("-") or "unspecified"
    base = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{slug}"
    parent = quarantine_dir(root)
    try:
        private_mkdir(parent)
        for attempt in range(1, 1000):
            folder = parent / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                folder.mkdir(mode=0o700)
                return folder
            except FileExistsError:
                continue
    except OSError as error:
        raise StorageIOError(f"cannot create a quarantine folder under {str(parent)!r}: {error!r}") from error
    raise StorageIOError(f"quarantine folder names {base!r}-2..999 under {str(parent)!r} are all taken")


# --- open or quarantine --------------------------------------------------------------------------------------


def open_or_quarantine(root: StorageRoot, now: float) -> tuple[Database, QuarantineReport | None]:
    """Open the root's database; if it is corrupt, quarantine it and rebuild it from the transcripts."""
    root.ensure()
    if rebuild_interrupted(root):
        threads, turns, skipped = rebuild_database(root, now)
        report = QuarantineReport(
            moved=(),
            into="",
            reason="finished an interrupted rebuild from transcripts",
            rebuilt_threads=threads,
            rebuilt_turns=turns,
            skipped=skipped,
        )
        return _open_checked(root), report
    try:
        return _open_checked(root), None
    except StorageError as error:
        if not _is_corruption(error):
            raise
    mark_rebuild_started(root)
    report = quarantine(root, database_files(root.db_path), "corrupt database", now)
    threads, turns, skipped = rebuild_database(root, now)
    report = msgspec.structs.replace(report, rebuilt_threads=threads, rebuilt_turns=turns, skipped=skipped)
    return _open_checked(root), report


def _open_checked(root: StorageRoot) -> Database:
    db = Database.open(root.db_path)
    try:
        problems = db.quick_check()
    except BaseException:
        db.close(checkpoint=False)
        raise
    if problems != ["ok"]:
        db.close(checkpoint=False)
        raise StorageCorruptError(f"database {str(root.db_path)!r} failed quick_check: {problems[:5]!r}")
    return db


def _is_corruption(error: BaseException) -> bool:
    return isinstance(error, StorageCorruptError) or isinstance(error.__cause__, (apsw.CorruptError, apsw.NotADBError))
