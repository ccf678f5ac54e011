"""Tests for storage.Database: pragmas, migrations, repository round trips, transactions and WAL checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from agenthost.storage import (
    ActionCardRow,
    Database,
    FollowUpRow,
    FollowUpStart,
    InvalidIdError,
    MappingPin,
    MappingRow,
    ProjectRow,
    QueueHead,
    SchemaError,
    StorageCorruptError,
    StorageError,
    StorageIOError,
    ThreadRow,
    TurnFinish,
    TurnRow,
    UnknownThreadError,
    UnknownTurnError,
)
from agenthost.storage._dbcore import _verify_pragma
from agenthost.storage._schema import SCHEMA_VERSION, apply_migrations


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agenthost.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = Database.open(db_path)
    yield database
    database.close()


@pytest.fixture
def thread_db(db: Database) -> Database:
    db.ensure_project("p1", "Project One", now=100.0)
    db.create_thread("t1", "p1", "First thread", now=101.0)
    return db


def _table_names(db_path: Path) -> list[str]:
    conn = apsw.Connection(str(db_path))
    try:
        return [name for (name,) in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]
    finally:
        conn.close()


# --- open, pragmas, migrations ------------------------------------------------------------------------------


def test_pragmas_are_applied_and_verified(db: Database, db_path: Path) -> None:
    assert db.path == db_path
    assert db.pragma("journal_mode") == "wal"
    assert db.pragma("synchronous") == 2
    assert db.pragma("wal_autocheckpoint") == 0
    assert db.pragma("busy_timeout") == 5000
    assert db.pragma("foreign_keys") == 1
    assert db.schema_version == SCHEMA_VERSION == 4


def test_pragma_that_cannot_be_applied_raises_schema_error() -> None:
    with pytest.raises(SchemaError, match="pragma journal_mode was not applied: expected 'wal', got 'memory'"):
        Database.open(":memory:")


def test_pragma_helper_refuses_non_identifiers(db: Database) -> None:
    with pytest.raises(StorageError, match="pragma name 'journal_mode=delete' is invalid"):
        db.pragma("journal_mode=delete")
    assert db.pragma("journal_mode") == "wal"


def test_migration_is_idempotent_on_reopen(db_path: Path) -> None:
    first = Database.open(db_path)
    first.ensure_project("p1", "One", now=1.0)
    first.close()
    tables_after_first_open = _table_names(db_path)
    second = Database.open(db_path)
    try:
        assert second.schema_version == SCHEMA_VERSION
        assert second.list_projects() == [ProjectRow(project_id="p1", name="One", created_at=1.0)]
    finally:
        second.close()
    assert _table_names(db_path) == tables_after_first_open
    assert {"projects", "threads", "runtime_thread_mappings", "turns", "action_cards", "followups"} <= set(
        tables_after_first_open
    )


def test_v1_database_migrates_to_v2_keeping_followups_and_their_turns(db_path: Path) -> None:
    from agenthost.storage._schema import MIGRATIONS

    conn = apsw.Connection(str(db_path))
    apply_migrations(conn, MIGRATIONS[:1])
    conn.execute("INSERT INTO projects VALUES ('p', 'p', 1.0)")
    conn.execute("INSERT INTO threads VALUES ('t', 'p', 'T', 1.0)")
    conn.execute(
        "INSERT INTO followups VALUES ('f1', 't', 1, 'ran', 'dispatched', 1.0), ('f2', 't', 2, 'later', 'queued', 2.0)"
    )
    conn.close()
    db = Database.open(db_path)
    try:
        assert db.schema_version == SCHEMA_VERSION  # through v2 and v3
        assert [(f.followup_id, f.state, f.turn_id, f.last_error) for f in db.list_followups("t")] == [
            ("f1", "dispatched", "f1", None),
            ("f2", "queued", None, None),
        ]
        assert db.get_thread("t").dispatch_mode == "auto"
        failed = db.set_followup_state("f1", "failed", "the runtime exited")
        assert (failed.state, failed.last_error) == ("failed", "the runtime exited")
        assert db.retry_followup("f1").state == "queued"
        turn = db.begin_followup_turn("f1", 3.0, turn_id="f1-retry")
        assert (turn.turn_id, turn.user_text) == ("f1-retry", "ran")
        assert db.list_followups("t")[0].turn_id == "f1-retry"
        with pytest.raises(StorageError, match="only a failed one can be retried"):
            db.retry_followup("f2")
    finally:
        db.close()


def test_newer_schema_is_refused_and_left_untouched(db_path: Path) -> None:
    conn = apsw.Connection(str(db_path))
    conn.pragma("user_version", 9)
    conn.close()
    with pytest.raises(SchemaError, match=f"database schema version 9 is newer than supported {SCHEMA_VERSION}"):
        Database.open(db_path)
    assert _table_names(db_path) == []


def test_failing_migration_rolls_back_to_previous_version(tmp_path: Path) -> None:
    conn = apsw.Connection(str(tmp_path / "m.db"))
    try:
        migrations = [(1, "CREATE TABLE a (x INTEGER);"), (2, "CREATE TABLE b (x INTEGER); THIS IS NOT SQL;")]
        with pytest.raises(apsw.SQLError):
            apply_migrations(conn, migrations)
        assert conn.pragma("user_version") == 1
        names = [name for (name,) in conn.execute("SELECT name FROM sqlite_master")]
        assert names == ["a"]
        with pytest.raises(SchemaError, match=r"got \[2\]"):
            apply_migrations(conn, [(2, "SELECT 1;")])
    finally:
        conn.close()


def test_unopenable_path_raises_storage_io_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "agenthost.db"
    with pytest.raises(StorageIOError, match="no-such-folder") as caught:
        Database.open(missing)
    assert isinstance(caught.value.__cause__, apsw.CantOpenError)


def test_non_database_file_raises_storage_io_error(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a sqlite database, just some bytes" * 100)
    with pytest.raises(StorageIOError) as caught:
        Database.open(db_path)
    assert isinstance(caught.value.__cause__, apsw.NotADBError)


# --- projects and threads -------------------------------------------------------------------------------------


def test_ensure_project_is_insert_or_get(db: Database) -> None:
    first = db.ensure_project("p1", "One", now=10.0)
    again = db.ensure_project("p1", "Renamed", now=20.0)
    db.ensure_project("p0", "Zero", now=30.0)
    assert first == again == ProjectRow(project_id="p1", name="One", created_at=10.0)
    assert [row.project_id for row in db.list_projects()] == ["p1", "p0"]


def test_thread_round_trip_and_order(db: Database) -> None:
    db.ensure_project("p1", "One", now=1.0)
    created = db.create_thread("tb", "p1", "B", now=5.0)
    db.create_thread("ta", "p1", "A", now=5.0)
    db.create_thread("t0", "p1", "early", now=2)
    assert created == ThreadRow(thread_id="tb", project_id="p1", title="B", created_at=5.0)
    assert db.get_thread("tb") == created
    assert isinstance(db.get_thread("t0").created_at, float)
    assert [row.thread_id for row in db.list_threads()] == ["t0", "ta", "tb"]


def test_create_thread_errors_name_the_value(db: Database) -> None:
    with pytest.raises(StorageError, match="unknown project id 'nope'"):
        db.create_thread("t1", "nope", "x", now=1.0)
    db.ensure_project("p1", "One", now=1.0)
    db.create_thread("t1", "p1", "x", now=1.0)
    with pytest.raises(StorageError, match="thread id 't1' already exists"):
        db.create_thread("t1", "p1", "again", now=2.0)
    with pytest.raises(InvalidIdError, match="thread id 'a/b'"):
        db.create_thread("a/b", "p1", "x", now=1.0)
    with pytest.raises(StorageError, match="thread title b'bytes' is invalid"):
        db.create_thread("t2", "p1", b"bytes", now=1.0)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="now nan is invalid"):
        db.create_thread("t2", "p1", "x", now=float("nan"))
    assert [row.thread_id for row in db.list_threads()] == ["t1"]


def test_unknown_thread_error_message(db: Database) -> None:
    with pytest.raises(UnknownThreadError) as caught:
        db.get_thread("x")
    assert str(caught.value) == "unknown thread id 'x'"
    assert isinstance(caught.value, KeyError)


# --- mappings -------------------------------------------------------------------------------------------------


def test_mapping_save_replace_delete(thread_db: Database) -> None:
    thread_db.create_thread("t2", "p1", "Second", now=102.0)
    saved = thread_db.save_mapping("t1", worker_id=3, runtime_thread_id="rt-abc", now=200.0)
    assert saved == MappingRow(thread_id="t1", worker_id=3, runtime_thread_id="rt-abc", updated_at=200.0)
    thread_db.save_mapping("t2", worker_id=4, runtime_thread_id=None, now=201.0)
    replaced = thread_db.save_mapping("t1", worker_id=5, runtime_thread_id="rt-def", now=202.0)
    assert thread_db.load_mappings() == [
        replaced,
        MappingRow(thread_id="t2", worker_id=4, runtime_thread_id=None, updated_at=201.0),
    ]
    thread_db.delete_mapping("t2")
    thread_db.delete_mapping("t2")
    assert thread_db.load_mappings() == [replaced]
    assert thread_db.load_pins() == [MappingPin("t1", 5, "rt-def")]
    with pytest.raises(UnknownThreadError, match="unknown thread id 'ghost'"):
        thread_db.save_mapping("ghost", 1, None, now=1.0)
    with pytest.raises(StorageError, match="worker id True is invalid"):
        thread_db.save_mapping("t1", True, None, now=1.0)


def test_pins_are_the_mappings_without_their_time_by_thread_id(thread_db: Database) -> None:
    assert thread_db.load_pins() == []
    for thread_id, worker_id, runtime_thread_id in (("t3", 2, None), ("t1", 1, "rt-1"), ("t2", 2, "rt-2")):
        if thread_id != "t1":
            thread_db.create_thread(thread_id, "p1", thread_id, now=103.0)
        thread_db.save_mapping(thread_id, worker_id, runtime_thread_id, now=300.0)
    pins = thread_db.load_pins()
    assert pins == [MappingPin("t1", 1, "rt-1"), MappingPin("t2", 2, "rt-2"), MappingPin("t3", 2, None)]
    assert [(p.thread_id, p.worker_id, p.runtime_thread_id) for p in pins] == [
        (m.thread_id, m.worker_id, m.runtime_thread_id) for m in thread_db.load_mappings()
    ]


def test_a_pin_of_the_wrong_type_is_a_corrupt_database_naming_the_value(thread_db: Database, db_path: Path) -> None:
    thread_db.close()
    for statement in (  # lift STRICT, as a damaged schema could, then store a text worker id
        "PRAGMA writable_schema = ON; "
        "UPDATE sqlite_schema SET sql = replace(sql, ') STRICT', ')') WHERE name = 'runtime_thread_mappings'",
        "INSERT INTO runtime_thread_mappings VALUES ('t1', 'two', NULL, 1.0)",
    ):
        other = apsw.Connection(str(db_path))
        try:
            other.execute(statement)
        finally:
            other.close()
    reopened = Database.open(db_path)
    try:
        with pytest.raises(StorageCorruptError, match=r"runtime_thread_mappings holds a bad value: Expected `int`"):
            reopened.load_pins()
    finally:
        reopened.close()


def test_mapping_cascades_when_thread_is_deleted(thread_db: Database, db_path: Path) -> None:
    thread_db.save_mapping("t1", worker_id=1, runtime_thread_id="rt", now=1.0)
    other = apsw.Connection(str(db_path))
    try:
        other.pragma("foreign_keys", "ON")
        with other:
            other.execute("DELETE FROM threads WHERE thread_id = 't1'")
    finally:
        other.close()
    assert thread_db.load_mappings() == []


# --- turns ----------------------------------------------------------------------------------------------------


def test_turn_lifecycle_round_trip(thread_db: Database) -> None:
    first = thread_db.begin_turn("u1", "t1", "hello", now=110.0)
    assert first == TurnRow(
        turn_id="u1",
        thread_id="t1",
        seq=1,
        user_text="hello",
        assistant_text="",
        status="pending",
        error=None,
        worker_id=None,
        created_at=110.0,
        finished_at=None,
    )
    thread_db.set_turn_worker("u1", 7)
    done = thread_db.finish_turn("u1", "completed", "hi there", None, now=111.5)
    assert done == thread_db.get_turn("u1")
    assert (done.status, done.assistant_text, done.worker_id, done.finished_at) == ("completed", "hi there", 7, 111.5)
    second = thread_db.begin_turn("u2", "t1", "again", now=112.0)
    assert second.seq == 2
    assert [turn.turn_id for turn in thread_db.list_turns("t1")] == ["u1", "u2"]
    assert thread_db.pending_turns() == [second]


def test_turn_errors(thread_db: Database) -> None:
    with pytest.raises(UnknownThreadError, match="unknown thread id 'ghost'"):
        thread_db.begin_turn("u1", "ghost", "x", now=1.0)
    thread_db.begin_turn("u1", "t1", "x", now=1.0)
    with pytest.raises(StorageError, match="turn id 'u1' already exists"):
        thread_db.begin_turn("u1", "t1", "y", now=2.0)
    with pytest.raises(UnknownTurnError, match="unknown turn id 'nope'"):
        thread_db.get_turn("nope")
    with pytest.raises(UnknownTurnError, match="unknown turn id 'nope'"):
        thread_db.finish_turn("nope", "failed", "", "boom", now=2.0)
    with pytest.raises(UnknownTurnError, match="unknown turn id 'nope'"):
        thread_db.set_turn_worker("nope", 1)
    with pytest.raises(StorageError, match="turn status 'pending' is not terminal"):
        thread_db.finish_turn("u1", "pending", "", None, now=2.0)  # type: ignore[arg-type]
    with pytest.raises(UnknownThreadError):
        thread_db.list_turns("ghost")
    assert thread_db.get_turn("u1").status == "pending"


@pytest.mark.parametrize("final", ["completed", "failed", "interrupted"])
def test_turn_terminal_states_are_final(thread_db: Database, final: str) -> None:
    thread_db.begin_turn("u1", "t1", "x", now=1.0)
    error = None if final == "completed" else "why"
    finished = thread_db.finish_turn("u1", final, "partial", error, now=2.0)  # type: ignore[arg-type]
    for status in ("completed", "failed", "interrupted"):
        with pytest.raises(StorageError, match=f"turn 'u1' is already {final}; terminal states are final"):
            thread_db.finish_turn("u1", status, "other", None, now=3.0)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="terminal states are final"):
        thread_db.set_turn_worker("u1", 9)
    assert thread_db.get_turn("u1") == finished
    assert thread_db.pending_turns() == []


def test_finish_turns_applies_all_in_one_transaction(thread_db: Database) -> None:
    for index in range(3):
        thread_db.begin_turn(f"u{index}", "t1", f"q{index}", now=10.0 + index)
    rows = thread_db.finish_turns(
        [
            TurnFinish("u0", "completed", "a0", None, 20.0),
            TurnFinish(turn_id="u1", status="failed", assistant_text="", error="boom", now=21.0),
        ]
    )
    summary = [(row.turn_id, row.status, row.finished_at) for row in rows]
    assert summary == [("u0", "completed", 20.0), ("u1", "failed", 21.0)]
    assert [turn.turn_id for turn in thread_db.pending_turns()] == ["u2"]
    assert thread_db.finish_turns([]) == []


def test_a_finish_returns_the_row_as_stored_and_keeps_the_worker_unless_it_names_one(thread_db: Database) -> None:
    for turn_id in ("u0", "u1"):
        thread_db.begin_turn(turn_id, "t1", "q", now=1.0)
        thread_db.set_turn_worker(turn_id, 7)
    kept, named = thread_db.finish_turns(
        [TurnFinish("u0", "completed", "a0", None, 2.0), TurnFinish("u1", "completed", "a1", None, 3.0, 2)]
    )
    assert (kept.worker_id, named.worker_id) == (7, 2)
    assert [thread_db.get_turn("u0"), thread_db.get_turn("u1")] == [kept, named]


def test_finish_turns_is_all_or_nothing(thread_db: Database) -> None:
    thread_db.begin_turn("u0", "t1", "q0", now=10.0)
    thread_db.begin_turn("u1", "t1", "q1", now=11.0)
    with pytest.raises(UnknownTurnError, match="'ghost'"):
        thread_db.finish_turns(
            [
                TurnFinish("u0", "completed", "a0", None, 20.0),
                TurnFinish("u1", "interrupted", "", "stopped", 20.0),
                TurnFinish("ghost", "completed", "", None, 20.0),
            ]
        )
    assert [turn.status for turn in thread_db.list_turns("t1")] == ["pending", "pending"]
    with pytest.raises(StorageError, match="turn 'u0' is already completed"):
        thread_db.finish_turns(
            [TurnFinish("u0", "completed", "a", None, 1.0), TurnFinish("u0", "failed", "", "e", 2.0)]
        )
    assert thread_db.get_turn("u0").status == "pending"


def test_finish_turns_commits_once(thread_db: Database) -> None:
    for index in range(5):
        thread_db.begin_turn(f"u{index}", "t1", "q", now=float(index))
    commits: list[int] = []
    thread_db._conn.set_commit_hook(lambda: commits.append(1) or False)
    thread_db.finish_turns([TurnFinish(f"u{index}", "completed", "a", None, 9.0) for index in range(5)])
    assert len(commits) == 1


def test_seq_is_per_thread(thread_db: Database) -> None:
    thread_db.create_thread("t2", "p1", "Second", now=1.0)
    assert thread_db.begin_turn("a", "t1", "x", now=1.0).seq == 1
    assert thread_db.begin_turn("b", "t2", "x", now=1.0).seq == 1
    assert thread_db.begin_turn("c", "t1", "x", now=1.0).seq == 2


# --- action cards ---------------------------------------------------------------------------------------------


def test_action_cards_round_trip(thread_db: Database) -> None:
    thread_db.begin_turn("u1", "t1", "x", now=1.0)
    note = "approval reset because the runtime exited"
    first = thread_db.add_action_card("t1", "u1", "approval_reset", note, now=2.0)
    second = thread_db.add_action_card("t1", None, "note", "multi\nline", now=3.0)
    assert first == ActionCardRow(
        card_id=first.card_id,
        thread_id="t1",
        turn_id="u1",
        kind="approval_reset",
        text=note,
        created_at=2.0,
    )
    assert second.card_id > first.card_id
    assert thread_db.list_action_cards("t1") == [first, second]
    thread_db.create_thread("t2", "p1", "Second", now=1.0)
    with pytest.raises(StorageError, match="turn 'u1' belongs to thread 't1', not 't2'"):
        thread_db.add_action_card("t2", "u1", "note", "x", now=4.0)
    with pytest.raises(UnknownTurnError, match="'ghost'"):
        thread_db.add_action_card("t1", "ghost", "note", "x", now=4.0)
    with pytest.raises(StorageError, match="action card kind 'a\\\\nb' is invalid"):
        thread_db.add_action_card("t1", None, "a\nb", "x", now=4.0)
    assert thread_db.list_action_cards("t2") == []


# --- follow-ups -----------------------------------------------------------------------------------------------


def test_followups_are_served_in_order(thread_db: Database) -> None:
    assert thread_db.next_followup("t1") is None
    first = thread_db.enqueue_followup("f1", "t1", "first", now=5.0)
    thread_db.enqueue_followup("f2", "t1", "second", now=4.0)
    thread_db.enqueue_followup("f3", "t1", "third", now=6.0)
    assert first == FollowUpRow(followup_id="f1", thread_id="t1", seq=1, text="first", state="queued", created_at=5.0)
    assert thread_db.next_followup("t1") == first
    dispatched = thread_db.set_followup_state("f1", "dispatched")
    assert dispatched.state == "dispatched"
    assert thread_db.next_followup("t1").followup_id == "f2"  # type: ignore[union-attr]
    thread_db.set_followup_state("f2", "failed")
    thread_db.set_followup_state("f1", "done")
    assert thread_db.next_followup("t1").followup_id == "f3"  # type: ignore[union-attr]
    assert [(row.followup_id, row.seq, row.state) for row in thread_db.list_followups("t1")] == [
        ("f1", 1, "done"),
        ("f2", 2, "failed"),
        ("f3", 3, "queued"),
    ]


def test_the_queue_head_says_whether_another_queued_follow_up_waits_behind_it(thread_db: Database) -> None:
    assert thread_db.queue_head("t1") == QueueHead()
    first = thread_db.enqueue_followup("f1", "t1", "one", now=1.0)
    assert thread_db.queue_head("t1") == QueueHead(followup=first, more=False)
    thread_db.enqueue_followup("f2", "t1", "two", now=2.0)
    assert thread_db.queue_head("t1") == QueueHead(followup=first, more=True)
    thread_db.set_followup_state("f2", "failed", "boom")  # a failed one waits for its retry: not behind the head
    assert thread_db.queue_head("t1") == QueueHead(followup=first, more=False)
    thread_db.set_dispatch_mode("t1", "manual")
    assert thread_db.queue_head("t1") == QueueHead()
    assert thread_db.queue_head("t1", include_manual=True).followup == first


def test_starting_a_follow_up_reads_the_head_and_begins_it_in_one_transaction(thread_db: Database) -> None:
    assert thread_db.start_followup("t1", 1.0) == FollowUpStart()
    first = thread_db.enqueue_followup("f1", "t1", "one", now=1.0)
    thread_db.enqueue_followup("f2", "t1", "two", now=2.0)
    started = thread_db.start_followup("t1", 3.0, retry_turn_id="unused")
    assert (started.followup, started.more) == (first, True)
    assert started.turn == thread_db.get_turn("f1")  # a first run: the turn has the follow-up's id
    assert (started.turn.user_text, started.turn.status, started.turn.created_at) == ("one", "pending", 3.0)
    assert [f.state for f in thread_db.list_followups("t1")] == ["dispatched", "queued"]
    thread_db.set_followup_state("f1", "failed", "boom")
    thread_db.retry_followup("f1")  # queued again in its place, ahead of f2: it ran before, as turn f1
    with pytest.raises(StorageError, match="follow-up 'f1' ran before as turn 'f1': it needs a new turn id"):
        thread_db.start_followup("t1", 4.0)
    again = thread_db.start_followup("t1", 4.0, retry_turn_id="f1-again")
    assert (again.followup.followup_id, again.turn.turn_id) == ("f1", "f1-again")  # type: ignore[union-attr]
    thread_db.begin_turn("f2", "t1", "direct, under the id f2 would run as", now=5.0)
    with pytest.raises(StorageError, match="turn id 'f2' already exists"):  # its begin refused: nothing of it stands
        thread_db.start_followup("t1", 6.0)
    assert [(f.followup_id, f.state) for f in thread_db.list_followups("t1")][1] == ("f2", "queued")
    assert [t.turn_id for t in thread_db.list_turns("t1")] == ["f1", "f1-again", "f2"]
    thread_db.cancel_followup("f2")
    thread_db.enqueue_followup("f3", "t1", "manual", now=7.0)
    thread_db.set_dispatch_mode("t1", "manual")
    assert thread_db.start_followup("t1", 8.0) == FollowUpStart()
    assert thread_db.start_followup("t1", 8.0, include_manual=True).turn.turn_id == "f3"  # type: ignore[union-attr]


def test_followup_errors(thread_db: Database) -> None:
    with pytest.raises(UnknownThreadError):
        thread_db.enqueue_followup("f1", "ghost", "x", now=1.0)
    thread_db.enqueue_followup("f1", "t1", "x", now=1.0)
    with pytest.raises(StorageError, match="follow-up id 'f1' already exists"):
        thread_db.enqueue_followup("f1", "t1", "y", now=1.0)
    with pytest.raises(StorageError, match="follow-up state 'sent' is invalid"):
        thread_db.set_followup_state("f1", "sent")  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="unknown follow-up id 'f9'"):
        thread_db.set_followup_state("f9", "done")
    thread_db.set_followup_state("f1", "done")
    with pytest.raises(StorageError, match="follow-up 'f1' is already done; terminal states are final"):
        thread_db.set_followup_state("f1", "queued")
    assert thread_db.list_followups("t1")[0].state == "done"
    with pytest.raises(StorageError, match="follow-up 'f1' is done, not queued; it runs only once"):
        thread_db.begin_followup_turn("f1", now=2.0)
    assert thread_db.list_turns("t1") == []


def test_a_follow_up_state_keeps_its_last_error_until_it_fails_again(thread_db: Database) -> None:
    """Each write returns the row as stored; only "failed" sets the error, other states keep the last one."""
    thread_db.enqueue_followup("f1", "t1", "x", now=1.0)
    failed = thread_db.set_followup_state("f1", "failed", "boom")
    assert thread_db.retry_followup("f1").last_error == "boom"
    dispatched = thread_db.set_followup_state("f1", "dispatched", "ignored: not a failure")
    assert (failed.last_error, dispatched.last_error) == ("boom", "boom")
    assert thread_db.list_followups("t1") == [dispatched]
    assert thread_db.set_followup_state("f1", "failed", None).last_error is None


# --- durability and checkpoints -------------------------------------------------------------------------------


def test_checkpoint_reports_frames_and_truncate_empties_the_wal(thread_db: Database, db_path: Path) -> None:
    wal_path = Path(f"{db_path}-wal")
    for index in range(20):
        thread_db.begin_turn(f"u{index}", "t1", "x" * 500, now=float(index))
    assert wal_path.stat().st_size > 0
    wal_frames, checkpointed = thread_db.checkpoint()
    assert wal_frames > 0
    assert checkpointed == wal_frames
    assert thread_db.checkpoint("TRUNCATE") == (0, 0)
    assert wal_path.stat().st_size == 0
    with pytest.raises(StorageError, match="checkpoint mode 'NOPE' is invalid"):
        thread_db.checkpoint("NOPE")  # type: ignore[arg-type]


def test_close_truncates_wal_and_data_survives_reopen(db_path: Path) -> None:
    db = Database.open(db_path)
    db.ensure_project("p1", "One", now=1.0)
    db.create_thread("t1", "p1", "Thread", now=2.0)
    db.save_mapping("t1", 2, "rt-1", now=3.0)
    turn = db.begin_turn("u1", "t1", "hello", now=4.0)
    finished = db.finish_turn("u1", "completed", "world", None, now=5.0)
    card = db.add_action_card("t1", "u1", "note", "text", now=6.0)
    followup = db.enqueue_followup("f1", "t1", "later", now=7.0)
    db.close()
    db.close()
    wal_path = Path(f"{db_path}-wal")
    assert not wal_path.exists() or wal_path.stat().st_size == 0
    with pytest.raises(StorageError, match="closed"):
        db.list_threads()

    reopened = Database.open(db_path)
    try:
        assert reopened.list_projects() == [ProjectRow(project_id="p1", name="One", created_at=1.0)]
        assert reopened.get_thread("t1").title == "Thread"
        expected_mapping = MappingRow(thread_id="t1", worker_id=2, runtime_thread_id="rt-1", updated_at=3.0)
        assert reopened.load_mappings() == [expected_mapping]
        assert reopened.list_turns("t1") == [finished]
        assert finished.created_at == turn.created_at
        assert reopened.list_action_cards("t1") == [card]
        assert reopened.list_followups("t1") == [followup]
    finally:
        reopened.close(checkpoint=False)


def test_data_survives_without_checkpoint_on_close(db_path: Path) -> None:
    db = Database.open(db_path)
    db.ensure_project("p1", "One", now=1.0)
    db.close(checkpoint=False)
    reopened = Database.open(db_path)
    try:
        assert [row.project_id for row in reopened.list_projects()] == ["p1"]
    finally:
        reopened.close()


def test_followup_queue_operations_follow_the_seed_app(db: Database) -> None:
    """The seed's testFollowUpQueuePersistenceAndOrdering, plus cancel and the manual dispatch mode."""
    db.ensure_project("p", "p", 1.0)
    db.create_thread("t", "p", "t", 1.0)
    db.create_thread("sibling", "p", "s", 1.0)
    db.enqueue_followup("f1", "t", "first", 1.0)
    db.enqueue_followup("f2", "t", "second", 2.0)
    db.enqueue_followup("s1", "sibling", "other", 3.0)
    assert [f.text for f in db.list_followups("t")] == ["first", "second"]
    db.edit_followup("f2", "second-updated")
    moved = db.move_followup("f2", 0)
    assert [f.text for f in moved] == ["second-updated", "first"]
    assert [f.seq for f in moved] == [1, 2]  # the items keep the seq numbers they had, in the new order
    assert db.next_followup("t").followup_id == "f2"
    assert [f.followup_id for f in db.move_followup("f2", 99)] == ["f1", "f2"]  # clamped to the end
    assert db.set_followup_state("f1", "failed", "boom").last_error == "boom"
    assert db.next_followup("t").followup_id == "f2"  # a failed one waits for its retry
    assert db.retry_followup("f1").state == "queued"
    assert db.cancel_followup("f2").state == "cancelled"
    assert [(f.followup_id, f.state) for f in db.list_followups("t")] == [("f1", "queued"), ("f2", "cancelled")]
    with pytest.raises(StorageError, match=r"'f2' is cancelled; only a queued or failed one can be edited"):
        db.edit_followup("f2", "x")
    assert db.set_dispatch_mode("t", "manual").dispatch_mode == "manual"
    assert db.next_followup("t") is None  # manual: nothing runs by itself
    assert db.next_followup("t", include_manual=True).followup_id == "f1"
    assert db.next_followup("sibling").followup_id == "s1"  # another thread is not affected
    with pytest.raises(StorageError, match="dispatch mode 'sometimes' is invalid"):
        db.set_dispatch_mode("t", "sometimes")  # type: ignore[arg-type]


def test_moving_waiting_follow_ups_past_ones_that_ran_later_keeps_every_seq_unique(db: Database) -> None:
    """Found by mutation testing: the rows were parked just above the waiting ones' seqs, where a follow-up that ran
    later (done) could hold one, and the move was refused with a UNIQUE constraint error."""
    db.ensure_project("p", "p", 1.0)
    db.create_thread("t", "p", "t", 1.0)
    for index in range(1, 9):
        db.enqueue_followup(f"f{index}", "t", "x", 1.0)
    for failed in ("f1", "f2"):
        db.set_followup_state(failed, "failed", "boom")
    for index in range(3, 9):  # these ran (the failed ones are skipped) and hold seqs 3..8
        db.begin_followup_turn(f"f{index}", 2.0)
        db.set_followup_state(f"f{index}", "done")
    assert [(f.followup_id, f.seq) for f in db.move_followup("f2", 0)] == [("f2", 1), ("f1", 2)]
    assert [(f.followup_id, f.seq) for f in db.move_followup("f2", -3)] == [("f2", 1), ("f1", 2)]  # clamped to 0
    assert [f.seq for f in db.list_followups("t")] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_moves_keep_the_others_in_their_order_and_refuse_a_position_that_is_not_an_int(db: Database) -> None:
    db.ensure_project("p", "p", 1.0)
    db.create_thread("t", "p", "t", 1.0)
    for name in ("a", "b", "c", "d"):
        db.enqueue_followup(name, "t", name, 1.0)
    assert [f.followup_id for f in db.move_followup("b", 2)] == ["a", "c", "b", "d"]
    assert [f.followup_id for f in db.move_followup("a", -1)] == ["a", "c", "b", "d"]  # negative: the front
    for position in ("1", 1.0, True, None):
        with pytest.raises(StorageError, match=f"follow-up position {position!r} is invalid: must be an int"):
            db.move_followup("c", position)  # type: ignore[arg-type]


def test_only_a_failed_follow_up_can_be_retried(db: Database) -> None:
    db.ensure_project("p", "p", 1.0)
    db.create_thread("t", "p", "t", 1.0)
    for name, state in (("d", "done"), ("c", "cancelled"), ("s", "dispatched"), ("q", "queued")):
        db.enqueue_followup(name, "t", name, 1.0)
        if state != "queued":
            db.set_followup_state(name, state)  # type: ignore[arg-type]
        with pytest.raises(StorageError, match=f"follow-up {name!r} is {state}; only a failed one can be retried"):
            db.retry_followup(name)
    assert [f.state for f in db.list_followups("t")] == ["done", "cancelled", "dispatched", "queued"]


# --- pinned by mutation testing (mutation/README.md) ----------------------------------------------------------


def test_close_truncates_the_wal_even_while_another_connection_is_open(db_path: Path) -> None:
    # SQLite checkpoints and deletes the WAL by itself when the LAST connection closes; with a reader still open
    # only close()'s own TRUNCATE checkpoint empties it.
    db = Database.open(db_path)
    db.ensure_project("p1", "One", now=1.0)
    reader = apsw.Connection(str(db_path))
    try:
        assert reader.execute("SELECT count(*) FROM projects").get == 1
        assert Path(f"{db_path}-wal").stat().st_size > 0
        db.close()
        assert Path(f"{db_path}-wal").stat().st_size == 0
    finally:
        reader.close()


def test_close_after_a_failed_checkpoint_is_final(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database.open(db_path)

    def refuse(self: Database, mode: str = "PASSIVE") -> tuple[int, int]:
        raise StorageIOError("injected checkpoint failure")

    monkeypatch.setattr(Database, "checkpoint", refuse)
    with pytest.raises(StorageIOError, match="injected"):
        db.close()
    monkeypatch.undo()
    db.close()  # a no-op: it must not touch the connection that is already closed
    with pytest.raises(StorageError, match="closed"):
        db.list_threads()


def test_open_and_close_flags_are_keyword_only(db_path: Path) -> None:
    with pytest.raises(TypeError):
        Database.open(db_path, None)  # type: ignore[misc]
    db = Database.open(path=db_path)
    with pytest.raises(TypeError):
        db.close(False)  # type: ignore[misc]
    db.close()


def test_action_card_refuses_a_turn_of_a_later_sorting_thread(thread_db: Database) -> None:
    thread_db.create_thread("t2", "p1", "Second", now=3.0)
    thread_db.begin_turn("u2", "t2", "x", now=4.0)
    with pytest.raises(StorageError, match="turn 'u2' belongs to thread 't2', not 't1'"):
        thread_db.add_action_card("t1", "u2", "note", "x", now=5.0)
    assert thread_db.list_action_cards("t1") == []


def test_verify_pragma_refuses_a_value_above_the_expected_one(db_path: Path) -> None:
    conn = apsw.Connection(str(db_path))
    try:
        conn.pragma("synchronous", "EXTRA")  # 3; FULL is 2
        with pytest.raises(SchemaError, match="pragma synchronous was not applied: expected 2, got 3"):
            _verify_pragma(conn, "synchronous", 2)
    finally:
        conn.close()


@pytest.mark.parametrize("now", [True, "1.0"])
def test_time_rejects_bool_and_str(db: Database, now: object) -> None:
    with pytest.raises(StorageError, match=r"now .* is invalid: must be finite float seconds"):
        db.ensure_project("p1", "One", now=now)  # type: ignore[arg-type]
    assert db.list_projects() == []


@pytest.mark.parametrize("kind", ["note\n", "note\r\n"])
def test_card_kind_with_a_trailing_line_break_is_refused(thread_db: Database, kind: str) -> None:
    with pytest.raises(StorageError, match=r"action card kind .* is invalid: must be one non-empty line"):
        thread_db.add_action_card("t1", None, kind, "x", now=3.0)
    assert thread_db.list_action_cards("t1") == []


def test_threads_with_open_followups_are_those_with_queued_or_dispatched_ones(thread_db: Database) -> None:
    db = thread_db
    for number, thread_id in enumerate(["t2", "t3", "t4", "t5"], start=2):
        db.create_thread(thread_id, "p1", thread_id, now=101.0 + number)
    db.enqueue_followup("f-queued", "t2", "waits", now=110.0)
    db.enqueue_followup("f-dispatched", "t3", "runs", now=111.0)
    db.begin_followup_turn("f-dispatched", now=112.0)  # dispatched, its turn pending
    db.enqueue_followup("f-done", "t4", "ran", now=113.0)
    db.begin_followup_turn("f-done", now=114.0)
    db.set_followup_state("f-done", "done")
    db.enqueue_followup("f-failed", "t5", "failed", now=115.0)
    db.set_followup_state("f-failed", "failed", "boom")
    assert [t.thread_id for t in db.threads_with_open_followups()] == ["t2", "t3"]  # t1 has none


def test_a_write_after_sqlite_rolled_back_the_enclosing_batch_is_refused_not_committed_alone(db: Database) -> None:
    """D27: SQLite rolls a whole transaction back by itself on some errors (disk full, I/O); a write inside the
    group after that is refused, never a transaction of its own that commits, so the group retried item by item
    writes each item exactly once."""
    db.ensure_project("p", "p", 1.0)
    db.create_thread("t1", "p", "t1", 1.0)
    with pytest.raises(StorageError), db.batch("a group"):
        db.begin_turn("u1", "t1", "first", 2.0)
        db._conn.execute("ROLLBACK")  # what SQLite does itself after SQLITE_FULL or SQLITE_IOERR
        with pytest.raises(StorageError, match="already rolled back"):
            db.begin_turn("u2", "t1", "second", 3.0)
    assert db.list_turns("t1") == []
    assert [turn.turn_id for turn in [db.begin_turn("u2", "t1", "second", 3.0)]] == ["u2"]  # usable again
