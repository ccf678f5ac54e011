"""A thread's runtime settings and title: merged, kept across reopen and migration, bounded, refused when not JSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from agenthost.storage import MAX_SETTINGS_BYTES, Database, StorageError, ThreadSettings, UnknownThreadError
from agenthost.storage._schema import MIGRATIONS, apply_migrations


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(tmp_path / "agenthost.db")
    database.ensure_project("p", "P", now=1.0)
    database.create_thread("t", "p", "Title", now=2.0)
    yield database
    database.close()


def test_settings_merge_and_a_null_restores_the_default(db: Database) -> None:
    assert db.get_thread("t").thread_settings() == ThreadSettings()
    db.update_thread("t", thread_settings={"cwd": "/w", "approvalPolicy": "never"}, turn_settings={"model": "m1"})
    row = db.update_thread("t", thread_settings={"approvalPolicy": None}, turn_settings={"effort": "high"})
    assert row.thread_settings() == ThreadSettings(thread={"cwd": "/w"}, turn={"model": "m1", "effort": "high"})
    assert db.get_thread("t") == row and row.title == "Title"
    renamed = db.update_thread("t", title="New name")
    assert (renamed.title, renamed.thread_settings()) == ("New name", row.thread_settings())


def test_settings_survive_a_reopen(db: Database, tmp_path: Path) -> None:
    db.update_thread("t", turn_settings={"sandboxPolicy": {"type": "readOnly", "networkAccess": False}})
    db.close()
    again = Database.open(tmp_path / "agenthost.db")
    try:
        assert again.get_thread("t").thread_settings().turn == {
            "sandboxPolicy": {"type": "readOnly", "networkAccess": False}
        }
    finally:
        again.close()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (["not", "an", "object"], "turn settings ['not', 'an', 'object'] are invalid: must be a JSON object"),
        ({1: "x"}, "must be a JSON object"),
        ({"x": object()}, "turn settings are invalid: not JSON"),
        ({"x": "y" * MAX_SETTINGS_BYTES}, "too large"),
    ],
)
def test_bad_settings_are_refused_and_nothing_changes(db: Database, changes: object, named: str) -> None:
    with pytest.raises(StorageError, match=None) as refused:
        db.update_thread("t", turn_settings=changes)  # type: ignore[arg-type]
    assert named in str(refused.value)
    assert db.get_thread("t").thread_settings() == ThreadSettings()


def test_an_unknown_thread_is_named(db: Database) -> None:
    with pytest.raises(UnknownThreadError, match="unknown thread id 'nope'"):
        db.update_thread("nope", title="x")


def test_a_v2_database_gets_empty_settings_for_its_threads(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = apsw.Connection(str(path))
    apply_migrations(conn, MIGRATIONS[:2])
    conn.execute("INSERT INTO projects VALUES ('p', 'p', 1.0)")
    conn.execute("INSERT INTO threads (thread_id, project_id, title, created_at) VALUES ('t', 'p', 'T', 1.0)")
    conn.close()
    db = Database.open(path)
    try:
        assert db.get_thread("t").thread_settings() == ThreadSettings()
        with pytest.raises(apsw.ConstraintError, match="json_valid"):  # the column only takes JSON
            db._conn.execute("UPDATE threads SET settings = 'not json' WHERE thread_id = 't'")
    finally:
        db.close()
