"""Groups of the database (`Database.batch`, storage._transaction): one transaction, no savepoint per operation
inside, all or nothing even when a caller inside catches a refusal; a group inside a group is refused alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbkit import open_with_threads, sql_trace

from agenthost.storage import Database, StorageError, UnknownThreadError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_with_threads(tmp_path / "db.sqlite", "t1", "t2")
    yield database
    database.close()


def _statements(db: Database) -> list[str]:
    """The first word of every statement from now on."""
    return sql_trace(db, lambda sql: sql.split(maxsplit=1)[0].upper())


def test_the_operations_of_a_group_open_no_savepoint_of_their_own(db: Database) -> None:
    words = _statements(db)
    with db.batch("three begins"):
        for index in range(3):
            db.begin_turn(f"u{index}", "t1", "hello", 2.0)
    assert words.count("BEGIN") == 1 and words.count("COMMIT") == 1
    assert "SAVEPOINT" not in words and "RELEASE" not in words
    assert [turn.turn_id for turn in db.list_turns("t1")] == ["u0", "u1", "u2"]


def test_outside_a_group_a_nested_operation_is_still_a_savepoint_that_fails_alone(db: Database) -> None:
    """Only a group drops the savepoints: an operation inside a transaction its caller opened stays undoable."""
    words = _statements(db)
    with db._transaction("a caller's own transaction"):
        db.begin_turn("u1", "t1", "kept", 2.0)
        with pytest.raises(UnknownThreadError):
            db.begin_turn("u2", "missing", "refused", 3.0)
    assert words.count("SAVEPOINT") == 2
    assert [turn.turn_id for turn in db.list_turns("t1")] == ["u1"]


def test_a_refusal_caught_inside_a_group_refuses_all_of_it(db: Database) -> None:
    with pytest.raises(StorageError, match="none of it was applied") as refused, db.batch("a group"):
        db.begin_turn("u1", "t1", "first", 2.0)
        db.update_thread("t1", title="renamed in the group")
        with pytest.raises(StorageError, match="already exists"):
            db.begin_turn("u1", "t2", "same id again", 3.0)  # refused after its thread check
        db.begin_turn("u3", "t2", "after the refusal", 4.0)
    assert "a group" in str(refused.value)
    assert db.list_turns("t1") == [] and db.list_turns("t2") == []
    assert db.get_thread("t1").title == "title of t1"  # the row the group kept is forgotten with it
    db.begin_turn("u1", "t2", "the database is usable again", 5.0)
    assert [turn.turn_id for turn in db.list_turns("t2")] == ["u1"]


def test_an_exception_leaving_a_group_undoes_it_and_is_raised_itself(db: Database) -> None:
    with pytest.raises(UnknownThreadError), db.batch("a group"):
        db.begin_turn("u1", "t1", "first", 2.0)
        db.begin_turn("u2", "missing", "refused", 3.0)
    assert db.list_turns("t1") == []


def test_a_group_inside_a_group_is_refused_alone_and_the_enclosing_group_goes_on(db: Database) -> None:
    words = _statements(db)
    with db.batch("the enclosing group"):
        db.begin_turn("u1", "t1", "kept", 2.0)
        with pytest.raises(StorageError, match="the inner group"), db.batch("the inner group"):
            db.begin_turn("u2", "t1", "undone with the inner group", 3.0)
            with pytest.raises(UnknownThreadError):
                db.begin_turn("u3", "missing", "refused", 4.0)
        db.begin_turn("u4", "t2", "after the inner group", 5.0)
    assert [turn.turn_id for turn in db.list_turns("t1")] == ["u1"]
    assert [turn.turn_id for turn in db.list_turns("t2")] == ["u4"]
    assert words.count("SAVEPOINT") == 1 and words.count("COMMIT") == 1  # the inner group's savepoint only


def test_an_operation_inside_an_operation_of_a_group_opens_no_savepoint_either(db: Database) -> None:
    words = _statements(db)
    with db.batch("a group"), db._transaction("an operation of the group"):
        db.begin_turn("u1", "t1", "nested twice", 2.0)
    assert words == ["BEGIN", "SELECT", "INSERT", "COMMIT"]  # the thread check, the insert (its seq is kept)


def test_an_operation_inside_a_transaction_the_caller_opened_on_the_connection_is_a_savepoint(db: Database) -> None:
    words = _statements(db)
    with pytest.raises(RuntimeError, match="the caller's own"), db._conn:
        db.begin_turn("u1", "t1", "undone with the caller's transaction", 2.0)
        raise RuntimeError("the caller's own transaction is rolled back")
    assert words[:2] == ["BEGIN", "SAVEPOINT"] and words.count("BEGIN") == 1  # apsw's BEGIN, then ours
    assert db.list_turns("t1") == []


def test_a_transaction_that_could_not_begin_leaves_the_database_usable(db: Database) -> None:
    def refuse_begin(_cursor: Any, sql: str, _bindings: Any) -> bool:
        return not sql.startswith("BEGIN")

    db._conn.exec_trace = refuse_begin
    with pytest.raises(StorageError, match="beginning turn 'u1'"):
        db.begin_turn("u1", "t1", "refused", 2.0)
    db._conn.exec_trace = None
    db.begin_turn("u2", "t1", "the next one begins", 3.0)
    assert [turn.turn_id for turn in db.list_turns("t1")] == ["u2"]
