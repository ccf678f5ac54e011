"""The bench's hand-written storage clients (no actors): a fresh root's database and transcript writer.

`direct_store(work_dir, name, project_id)` makes the storage root `work_dir/name`, opens its database (the host's
own pragmas: WAL, synchronous=FULL), adds the project and yields (database, transcript writer); the database is
closed on leaving, whatever happened. `written(failures)` raises the first failure a `TranscriptWriter` write
reported: a bench figure is meaningless if one of its writes did not land.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from agenthost.storage import Database, StorageRoot, TranscriptWriter

__all__ = ["direct_store", "written"]


@contextlib.contextmanager
def direct_store(work_dir: Path, name: str, project_id: str) -> Iterator[tuple[Database, TranscriptWriter]]:
    root = StorageRoot(work_dir / name)
    root.ensure()
    db = Database.open(root.db_path)
    try:
        db.ensure_project(project_id, project_id, time.time())
        yield db, TranscriptWriter(root, db)
    finally:
        db.close()


def written(failures: Sequence[tuple[str, Exception]]) -> None:
    if failures:
        raise failures[0][1]
