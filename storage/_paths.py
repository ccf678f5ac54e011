"""On-disk layout under one storage root.

Contract: ``StorageRoot(path)`` makes ``path`` absolute (``os.path.abspath``; symlinks are not resolved) and derives:

    <root>/projects/<project_id>/threads/<thread_id>.md   transcripts
    <root>/global/                                        global files
    <root>/system/agenthost.db                            the SQLite database (plus -wal / -shm)
    <root>/system/runtime-state/                          runtime scratch state

Every id is checked with ``validate_id`` before it becomes a path component, so derived paths always stay inside the
root. Nothing touches the disk except ``ensure()``, which creates the four folders owner-only (0700; idempotent), and
``private_mkdir(path)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._ids import validate_id

__all__ = ["StorageRoot", "private_mkdir"]


class StorageRoot:
    """The folder that holds all persistent agenthost state. Immutable; compares by its root path."""

    __slots__ = ("_root",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._root = Path(os.path.abspath(os.fspath(path)))

    @property
    def root(self) -> Path:
        return self._root

    @property
    def projects_dir(self) -> Path:
        return self._root / "projects"

    @property
    def global_dir(self) -> Path:
        return self._root / "global"

    @property
    def system_dir(self) -> Path:
        return self._root / "system"

    @property
    def db_path(self) -> Path:
        return self.system_dir / "agenthost.db"

    @property
    def runtime_state_dir(self) -> Path:
        return self.system_dir / "runtime-state"

    def ensure(self) -> None:
        """Create projects/, global/, system/ and system/runtime-state/ (parents included, owner-only); idempotent.
        The root folder itself is made owner-only (0700)."""
        for directory in (self.projects_dir, self.global_dir, self.system_dir, self.runtime_state_dir):
            private_mkdir(directory)
        if self._root.stat().st_mode & 0o077:
            self._root.chmod(0o700)

    def project_dir(self, project_id: str) -> Path:
        return self.projects_dir / validate_id("project id", project_id)

    def threads_dir(self, project_id: str) -> Path:
        return self.project_dir(project_id) / "threads"

    def transcript_path(self, project_id: str, thread_id: str) -> Path:
        file_name = validate_id("thread id", thread_id) + ".md"
        return self.threads_dir(project_id) / file_name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StorageRoot) and other._root == self._root

    def __hash__(self) -> int:
        return hash(self._root)

    def __repr__(self) -> str:
        return f"StorageRoot({str(self._root)!r})"


def private_mkdir(path: Path) -> Path:
    """Create `path` and its missing parents owner-only (0700); an existing folder is left as it is."""
    missing = [parent for parent in (path, *path.parents) if not parent.exists()]
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
    return path
