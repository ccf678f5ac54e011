"""What `sync_transcript` (storage/_transcript_sync.py) finds in a transcript that does not hold exactly the
database's rows, in its own words, and what its repair says it did (D12, D20, D26): duplicated or contradicted
records, a gap before later turns, identical cards, another thread's header, torn tails, missing records, v1
transcripts, and a transcript deleted behind the writer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agenthost.storage import (
    Database,
    StorageRoot,
    TranscriptCheck,
    TranscriptStore,
    TranscriptWriter,
    TurnFinish,
    TurnRow,
    private_mkdir,
    render_transcript_v1,
    sync_transcript,
)
from agenthost.storage._transcript_format import begin_record, end_record, header_record
from agenthost.storage._transcript_sync import TAILS_CACHED

pytestmark = pytest.mark.timeout(30)


@dataclass
class Thread:
    db: Database
    writer: TranscriptWriter
    turns: list[TurnRow]

    @property
    def store(self) -> TranscriptStore:
        return self.writer.store

    @property
    def path(self) -> Path:
        return self.store.path("p", "t1")

    def check(self, *, repair: bool = False, thread_id: str = "t1", convert: bool = False) -> TranscriptCheck:
        return sync_transcript(self.db, self.store, thread_id, repair=repair, convert=convert)


@pytest.fixture
def thread(tmp_path: Path) -> Iterator[Thread]:
    """Thread t1 of project p with two completed turns u1 and u2, its transcript written by the writer."""
    root = StorageRoot(tmp_path / "root")
    root.ensure()
    db = Database.open(root.db_path)
    private_mkdir(root.threads_dir("p"))
    db.ensure_project("p", "p", 1.0)
    writer = TranscriptWriter(root, db)
    assert writer.thread_created(db.create_thread("t1", "p", "t1", 1.0)) == []
    turns = []
    for seq, turn_id in enumerate(("u1", "u2"), start=1):
        begun = db.begin_turn(turn_id, "t1", f"q{seq}", 2.0 * seq)
        (ended,) = db.finish_turns([TurnFinish(turn_id, "completed", f"a{seq}", None, 2.0 * seq + 1, 1)])
        assert writer.turns_written([begun]) == [] and writer.turns_written([ended]) == []
        turns.append(ended)
    yield Thread(db, writer, turns)
    db.close()


def test_a_transcript_the_writer_wrote_holds_exactly_the_rows(thread: Thread) -> None:
    check = thread.check()
    assert (check.problem, check.repaired, check.size) == (None, None, thread.path.stat().st_size)


def test_a_start_written_twice_is_not_the_databases(thread: Thread) -> None:
    with thread.path.open("ab") as file:
        file.write(begin_record(thread.turns[1]))
    assert thread.check().problem == "its start of turn 2 (u2) is not the database's"


def test_an_end_written_twice_is_not_the_databases(thread: Thread) -> None:
    with thread.path.open("ab") as file:
        file.write(end_record(thread.turns[0]))
    assert thread.check().problem == "its end of turn 1 (u1, completed) is not the database's"


def test_a_start_whose_text_the_database_contradicts_is_found_and_rewritten(thread: Thread) -> None:
    thread.db._conn.execute("UPDATE turns SET user_text = 'edited' WHERE turn_id = 'u1'")
    assert thread.check().problem == "its start of turn 1 (u1) is not the database's"
    repaired = thread.check(repair=True)
    assert repaired.repaired == "rewritten from the database"
    assert thread.check().problem is None


def test_a_gap_before_later_turns_is_not_filled_by_appending(thread: Thread) -> None:
    header = header_record(thread.db.get_thread("t1"))
    thread.path.write_bytes(header + begin_record(thread.turns[1]))  # turn 1 lost, turn 2 there
    assert thread.check().problem == "it lacks turn 1 (u1) but has later ones"


def test_identical_cards_count_one_each(thread: Thread) -> None:
    for _ in range(2):
        card = thread.db.add_action_card("t1", "u1", "note", "same words", 9.0)
        assert thread.writer.card_added(card) == []
    assert thread.check().problem is None


def test_another_threads_transcript_is_not_this_ones(thread: Thread) -> None:
    thread.db.create_thread("t2", "p", "t2", 1.0)
    thread.store.path("p", "t2").write_bytes(thread.path.read_bytes())
    assert thread.check(thread_id="t2").problem == "its header is not the database's thread"


def test_a_torn_tail_is_measured_and_cut_to_the_byte(thread: Thread) -> None:
    whole = thread.path.read_bytes()
    with thread.path.open("ab") as file:
        file.write(b"<!-- ag")
    assert thread.check().problem == "7 bytes of an incomplete record at its end"
    repaired = thread.check(repair=True)
    assert (repaired.repaired, repaired.size) == ("cut 7 torn bytes", len(whole))
    assert thread.path.read_bytes() == whole


@pytest.mark.parametrize(
    ("kept", "problem"),
    [
        (
            0,
            "lacks 4 records: the start of turn 1, the end of turn 1 (completed), the start of turn 2, ...",
        ),
        (1, "lacks 3 records: the end of turn 1 (completed), the start of turn 2, the end of turn 2 (completed)"),
        (2, "lacks 2 records: the start of turn 2, the end of turn 2 (completed)"),
    ],
)
def test_missing_records_are_named_three_at_most_and_appended_without_a_cut(
    thread: Thread, kept: int, problem: str
) -> None:
    whole = thread.path.read_bytes()
    records = [begin_record(thread.turns[0]), end_record(thread.turns[0])][:kept]
    thread.path.write_bytes(header_record(thread.db.get_thread("t1")) + b"".join(records))
    assert thread.check().problem == problem
    repaired = thread.check(repair=True)
    assert repaired.repaired == f"appended {4 - kept} records from the database"
    assert thread.path.read_bytes() == whole


def test_a_missing_transcript_measures_nothing_until_repaired(thread: Thread) -> None:
    thread.path.unlink()
    check = thread.check()
    assert (check.problem, check.size) == ("missing", 0)


def test_a_v1_transcript_that_is_not_utf8_is_unreadable_and_rewritten(thread: Thread) -> None:
    thread.path.write_bytes(b"# t1\n\xff\xfe not text\n")
    assert (thread.check().problem or "").startswith("unreadable: ")
    assert thread.check(repair=True).repaired == "rewritten from the database"


def test_a_v1_transcript_is_compared_checkpoint_by_checkpoint(thread: Thread) -> None:
    row = thread.db.get_thread("t1")
    thread.path.write_text(render_transcript_v1(row, thread.turns[:1], []), encoding="utf-8")
    check = thread.check()
    assert check.problem == "checkpoint 2: transcript says nothing, database says turn u2 completed"
    thread.path.write_text(render_transcript_v1(row, thread.turns, []), encoding="utf-8")
    agreeing = thread.check()
    assert (agreeing.problem, agreeing.repaired) == (None, None)
    assert thread.check(repair=True, convert=True).repaired == "converted to v2"


def test_a_v1_transcript_with_a_turn_the_database_lacks_says_which(thread: Thread) -> None:
    import msgspec

    extra = msgspec.structs.replace(thread.turns[1], turn_id="u3", seq=3)
    row = thread.db.get_thread("t1")
    thread.path.write_text(render_transcript_v1(row, [*thread.turns, extra], []), encoding="utf-8")
    assert thread.check().problem == "checkpoint 3: transcript says turn u3 completed, database says nothing"


def test_a_transcript_deleted_behind_the_writer_is_rewritten_at_its_next_write(thread: Thread) -> None:
    thread.path.unlink()  # the writer still remembers its tail
    begun = thread.db.begin_turn("u3", "t1", "q3", 7.0)
    assert thread.writer.turns_written([begun]) == []
    assert thread.check().problem is None


def test_the_writer_remembers_4096_tails() -> None:
    assert TAILS_CACHED == 4096
