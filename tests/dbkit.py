"""Helpers for the storage tests: a database with threads, and the statements it runs, through its exec trace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agenthost.storage import Database


def open_with_threads(path: Path, *thread_ids: str) -> Database:
    """A database at `path` with project "p" and the threads, each titled "title of <id>"."""
    database = Database.open(path)
    database.ensure_project("p", "p", 1.0)
    for thread_id in thread_ids:
        database.create_thread(thread_id, "p", f"title of {thread_id}", 1.0)
    return database


def sql_trace(db: Database, record: Callable[[str], str | None] = lambda sql: sql) -> list[str]:
    """What `record` makes of every statement `db` runs from now on (None: not kept); the list fills as they run."""
    statements: list[str] = []

    def trace(_cursor: Any, sql: str, _bindings: Any) -> bool:
        kept = record(sql)
        if kept is not None:
            statements.append(kept)
        return True

    db._conn.exec_trace = trace
    return statements
