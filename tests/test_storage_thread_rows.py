"""Thread rows kept by the database for the next check of the same thread (storage._dbcore): read once, never stale
after a change, forgotten when a transaction rolls back, bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dbkit import open_with_threads, sql_trace

from agenthost.chaos import FaultPlan, FaultyVFS
from agenthost.storage import Database, StorageError, UnknownThreadError, _dbcore

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_with_threads(tmp_path / "db.sqlite", "t1", "t2", "t3")
    yield database
    database.close()


def _thread_reads(db: Database) -> list[str]:
    """Every SELECT of a thread row from now on."""

    def thread_read(sql: str) -> str | None:
        return sql if sql.lstrip().startswith("SELECT") and "FROM threads WHERE thread_id" in sql else None

    return sql_trace(db, thread_read)


def test_a_thread_checked_again_is_not_read_again(db: Database) -> None:
    reads = _thread_reads(db)
    for turn in range(3):  # each begin checks the thread
        db.begin_turn(f"turn-{turn}", "t1", "hello", 2.0)
    assert db.get_thread("t1").title == "title of t1"
    assert len(reads) == 1


def test_a_change_of_the_thread_is_seen_by_the_next_check(db: Database) -> None:
    db.enqueue_followup("f1", "t1", "later", 2.0)
    assert db.get_thread("t1").dispatch_mode == "auto"  # kept
    db.update_thread("t1", title="renamed")
    assert db.get_thread("t1").title == "renamed"
    db.set_dispatch_mode("t1", "manual")
    assert db.get_thread("t1").dispatch_mode == "manual"
    assert db.next_followup("t1") is None  # a manual thread's queue waits (read from the kept row)


def test_a_rolled_back_change_is_not_kept(db: Database) -> None:
    with pytest.raises(StorageError, match="undo"), db.batch("undo"):
        db.update_thread("t1", title="never committed")
        assert db.get_thread("t1").title == "never committed"  # kept inside the transaction
        raise StorageError("undo")
    assert db.get_thread("t1").title == "title of t1"


def test_a_failed_commit_forgets_what_its_transaction_kept(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    setup = Database.open(path)
    setup.ensure_project("p", "p", 1.0)
    setup.create_thread("t1", "p", "title of t1", 1.0)
    setup.close()
    with FaultyVFS(FaultPlan(op="sync", nth=1, file_suffix="-wal")) as vfs:
        db = Database.open(path, vfs=vfs.vfs_name)
        try:
            with pytest.raises(StorageError), db.batch("a commit whose fsync fails"):
                db.update_thread("t1", title="never durable")
                assert db.get_thread("t1").title == "never durable"  # kept inside the transaction
            assert vfs.triggered
            assert db.get_thread("t1").title == "title of t1"
        finally:
            db.close(checkpoint=False)


def test_an_unknown_thread_is_never_kept(db: Database) -> None:
    for _ in range(2):
        with pytest.raises(UnknownThreadError):
            db.get_thread("nope")
    db.create_thread("nope", "p", "now it exists", 3.0)
    assert db.get_thread("nope").title == "now it exists"


def test_the_rows_kept_are_bounded(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_dbcore, "THREAD_ROWS_KEPT", 2)
    reads = _thread_reads(db)
    for thread_id in ("t1", "t2", "t1", "t3", "t1", "t2"):  # t1 stays recent; t2 is dropped for t3, read again
        db.get_thread(thread_id)
    assert len(db._thread_rows) == 2
    assert len(reads) == 4  # t1, t2, t3, t2 again


def _seq_reads(db: Database) -> list[str]:
    """Every MAX(seq) read from now on."""
    return sql_trace(db, lambda sql: sql if "MAX(seq)" in sql else None)


def test_the_next_seqs_of_a_thread_created_here_are_kept_so_no_insert_reads_them(db: Database) -> None:
    reads = _seq_reads(db)
    assert [db.begin_turn(f"u{index}", "t1", "x", 2.0).seq for index in range(3)] == [1, 2, 3]
    assert [db.enqueue_followup(f"f{index}", "t1", "x", 2.0).seq for index in range(2)] == [1, 2]
    assert db.begin_followup_turn("f0", 3.0).seq == 4
    assert reads == []


def test_a_database_opened_again_reads_a_thread_s_next_seq_once(db: Database, tmp_path: Path) -> None:
    db.begin_turn("u1", "t1", "x", 2.0)
    again = Database.open(tmp_path / "db.sqlite")
    try:
        reads = _seq_reads(again)
        assert [again.begin_turn(turn_id, "t1", "x", 3.0).seq for turn_id in ("u2", "u3")] == [2, 3]
        assert len(reads) == 1
    finally:
        again.close()


def test_a_rolled_back_insert_leaves_no_seq_kept(db: Database) -> None:
    with pytest.raises(StorageError, match="undo"), db.batch("undo"):
        db.begin_turn("u1", "t1", "never committed", 2.0)
        raise StorageError("undo")
    with pytest.raises(RuntimeError, match="the caller's"), db._conn:
        db.begin_turn("u2", "t1", "in the caller's own transaction", 3.0)
        raise RuntimeError("the caller's own transaction rolls back after our block ended")
    assert db.begin_turn("u3", "t1", "the first that stands", 4.0).seq == 1
    with pytest.raises(StorageError, match="already exists"):
        db.begin_turn("u3", "t1", "a used id", 5.0)
    assert db.begin_turn("u4", "t1", "after a refused insert", 6.0).seq == 2
