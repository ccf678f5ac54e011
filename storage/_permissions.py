"""Owner-only storage: the check `doctor` runs, and its repair.

Contract: `check_permissions(root, repair)` walks the storage root (symlinks are not followed) and reports, as one
"permissions" finding per path, every folder or file that its group or others may read, write or enter (any of the
mode bits 0o077): status "problem" with the mode, or "repaired" after a chmod to 0700 (folders) or 0600 (files
and sockets) with `repair`. A root with nothing loose gets one "ok" finding. `make_private(root)` does the repair
for the root, its four top folders and the database files only (cheap enough for every service start).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ._health import Finding
from ._paths import StorageRoot

__all__ = ["check_permissions", "make_private"]


def _private_mode(mode: int) -> int:
    return 0o700 if stat.S_ISDIR(mode) else 0o600


def _loose(path: Path) -> tuple[int, int] | None:
    """(current mode bits, the private mode) when `path` is reachable by group or others, else None."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077:
        return None
    return stat.S_IMODE(info.st_mode), _private_mode(info.st_mode)


def _tighten(path: Path, repair: bool) -> Finding | None:
    loose = _loose(path)
    if loose is None:
        return None
    mode, private = loose
    if repair:
        os.chmod(path, private, follow_symlinks=False)
        return Finding(kind="permissions", subject=str(path), status="repaired", detail=f"{mode:o} -> {private:o}")
    detail = f"mode {mode:o}: group or others can reach it; doctor --repair sets {private:o}"
    return Finding(kind="permissions", subject=str(path), status="problem", detail=detail)


def check_permissions(root: StorageRoot, *, repair: bool = False) -> list[Finding]:
    findings = [f for f in (_tighten(root.root, repair),) if f is not None]
    for folder, folders, files in os.walk(root.root, followlinks=False):
        for name in (*folders, *files):
            finding = _tighten(Path(folder) / name, repair)
            if finding is not None:
                findings.append(finding)
    if not findings:
        findings.append(Finding(kind="permissions", subject=str(root.root), status="ok", detail="owner-only"))
    return findings


def make_private(root: StorageRoot) -> None:
    root.ensure()
    db = root.db_path
    for path in (
        root.root,
        root.projects_dir,
        root.global_dir,
        root.system_dir,
        db,
        db.with_name(db.name + "-wal"),
        db.with_name(db.name + "-shm"),
    ):
        if path.exists():
            _tighten(path, repair=True)
