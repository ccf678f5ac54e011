"""The files one SQLite database consists of on disk.

Contract: a database at ``<path>`` is the main file ``<path>`` plus the files SQLite may keep next to it:
``<path>-wal`` and ``<path>-shm`` (WAL mode) and ``<path>-journal`` (a rollback journal). ``DB_SUFFIXES`` lists
the suffixes in that order, the main file's ("") first; ``database_files`` applies them to a path. Pure: nothing
here touches the disk.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DB_SUFFIXES", "database_files"]

DB_SUFFIXES: tuple[str, ...] = ("", "-wal", "-shm", "-journal")


def database_files(db_path: Path) -> list[Path]:
    """``db_path`` and its ``-wal``, ``-shm`` and ``-journal`` siblings, in ``DB_SUFFIXES`` order."""
    return [db_path.with_name(db_path.name + suffix) for suffix in DB_SUFFIXES]
