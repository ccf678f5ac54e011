"""What `sync_transcript` (storage/_transcript_sync.py) finds in a transcript that does not hold exactly the
database's rows, in its own words, and what its repair says it did (D12, D20, D26): duplicated or contradicted
records (either way they sort), an end without its start, a gap before later turns, identical cards and cards the
database lacks, a damaged or another thread's header, an unreadable file, torn tails, missing records and renames,
v1 transcripts (past 256 checkpoints too, and kept by a repair unless asked to convert), a transcript deleted
behind the writer, and how many tails the writer remembers."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from agenthost.storage import (
    AtomicFs,
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
    root: StorageRoot

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
    yield Thread(db, writer, turns, root)
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


def test_a_torn_tail_longer_than_what_it_keeps_is_measured_by_difference(thread: Thread) -> None:
    header = header_record(thread.db.get_thread("t1"))
    torn = begin_record(thread.turns[0])[:-1] * 3  # a record cut before its end: longer than the header it follows
    thread.path.write_bytes(header + torn)
    check = thread.check()
    assert check.problem is not None
    assert check.problem.startswith(f"{len(torn)} bytes of an incomplete record at its end; lacks 4 records")
    repaired = thread.check(repair=True)
    assert repaired.repaired == f"cut {len(torn)} torn bytes, appended 4 records from the database"
    assert thread.check().problem is None


class _UnreadableFs(AtomicFs):
    def read(self, path: Path, offset: int = 0, length: int = -1) -> bytes:
        raise OSError(errno.EIO, "Input/output error", str(path))


def test_an_unreadable_transcript_is_named_with_its_error_and_rewritten(thread: Thread) -> None:
    whole = thread.path.read_bytes()
    thread.path.write_bytes(b"garbage")
    store = TranscriptStore(thread.root, fs=_UnreadableFs())
    check = sync_transcript(thread.db, store, "t1", repair=False)
    assert check.problem == f"unreadable: [Errno 5] Input/output error: '{thread.path}'"
    repaired = sync_transcript(thread.db, store, "t1", repair=True)
    assert repaired.repaired == "rewritten from the database"
    assert thread.path.read_bytes() == whole


def test_a_damaged_header_is_repaired_by_a_rewrite_not_a_cut(thread: Thread) -> None:
    whole = thread.path.read_bytes()
    thread.path.write_bytes(whole.replace(b'"thread":"t1"', b'"thread":"t1', 1))  # its trailer no longer decodes
    assert thread.check().problem == "its header record is damaged"
    assert thread.check(repair=True).repaired == "rewritten from the database"
    assert thread.path.read_bytes() == whole


@pytest.mark.parametrize("other", ["t0", "t9"])  # sorting before and after the thread's own id
def test_a_header_of_another_thread_is_repaired_by_a_rewrite(thread: Thread, other: str) -> None:
    whole, row = thread.path.read_bytes(), thread.db.get_thread("t1")
    own = header_record(row)
    thread.path.write_bytes(header_record(msgspec.structs.replace(row, thread_id=other)) + whole[len(own) :])
    assert thread.check().problem == "its header is not the database's thread"
    assert thread.check(repair=True).repaired == "rewritten from the database"
    assert thread.path.read_bytes() == whole


@pytest.mark.parametrize("user_text", ["a-earlier", "z-later"])  # sorting before and after the transcript's "q1"
def test_a_start_the_database_contradicts_either_way_is_found(thread: Thread, user_text: str) -> None:
    thread.db._conn.execute("UPDATE turns SET user_text = ? WHERE turn_id = 'u1'", (user_text,))
    assert thread.check().problem == "its start of turn 1 (u1) is not the database's"


@pytest.mark.parametrize(
    ("column", "value"),
    [("status", "failed"), ("assistant_text", "0 earlier")],  # the row sorting after, then before, the record
)
def test_an_end_the_database_contradicts_is_found_and_rewritten(thread: Thread, column: str, value: str) -> None:
    assert column in ("status", "assistant_text")
    thread.db._conn.execute(f"UPDATE turns SET {column} = ? WHERE turn_id = 'u2'", (value,))
    assert thread.check().problem == "its end of turn 2 (u2, completed) is not the database's"
    assert thread.check(repair=True).repaired == "rewritten from the database"
    assert thread.check().problem is None


def test_an_end_without_its_start_is_not_the_databases(thread: Thread) -> None:
    header = header_record(thread.db.get_thread("t1"))
    thread.path.write_bytes(header + end_record(thread.turns[0]))
    assert thread.check().problem == "its end of turn 1 (u1, completed) is not the database's"


@pytest.mark.parametrize("title", ["a renamed", "z renamed"])  # sorting before and after the transcript's "t1"
def test_a_rename_the_transcript_lacks_is_appended(thread: Thread, title: str) -> None:
    thread.db.update_thread("t1", title=title)
    assert thread.check().problem == "lacks 1 records: the new title"
    assert thread.check(repair=True).repaired == "appended 1 records from the database"
    assert thread.check().problem is None


def test_cards_the_database_lacks_are_counted(thread: Thread) -> None:
    for text in ("one", "two"):
        card = thread.db.add_action_card("t1", "u1", "note", text, 9.0)
        assert thread.writer.card_added(card) == []
    thread.db._conn.execute("DELETE FROM action_cards")
    assert thread.check().problem == "it has 2 cards the database does not have"


def test_an_agreeing_v1_transcript_is_kept_by_a_repair_unless_asked_to_convert(thread: Thread) -> None:
    v1 = render_transcript_v1(thread.db.get_thread("t1"), thread.turns, [])
    thread.path.write_text(v1, encoding="utf-8")
    kept = sync_transcript(thread.db, thread.store, "t1", repair=True)  # convert left to its default
    assert (kept.problem, kept.repaired) == (None, None)
    assert thread.path.read_text(encoding="utf-8") == v1


def test_a_v1_transcript_past_256_checkpoints_is_compared_to_its_end(thread: Thread) -> None:
    """Counts past CPython's small-int cache: an index compared by identity would read past the list's end."""
    for seq in range(3, 258):
        thread.db.begin_turn(f"u{seq}", "t1", f"q{seq}", float(seq))
    turns = thread.db.list_turns("t1")
    assert len(turns) == 257
    row = thread.db.get_thread("t1")
    extra = msgspec.structs.replace(turns[-1], turn_id="u258", seq=258)
    thread.path.write_text(render_transcript_v1(row, [*turns, extra], []), encoding="utf-8")
    assert thread.check().problem == "checkpoint 258: transcript says turn u258 pending, database says nothing"
    thread.db.begin_turn("u258", "t1", "q258", 258.0)
    thread.db.begin_turn("u259", "t1", "q259", 259.0)
    thread.path.write_text(render_transcript_v1(row, thread.db.list_turns("t1")[:258], []), encoding="utf-8")
    assert thread.check().problem == "checkpoint 259: transcript says nothing, database says turn u259 pending"


class _CountingFs(AtomicFs):
    """Counts reads: a transcript whose tail the writer remembers is appended to without one."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, path: Path, offset: int = 0, length: int = -1) -> bytes:
        self.reads += 1
        return super().read(path, offset, length)


def test_the_writer_remembers_exactly_cached_tails_and_forgets_the_oldest(tmp_path: Path) -> None:
    root = StorageRoot(tmp_path / "root")
    root.ensure()
    db = Database.open(root.db_path)
    private_mkdir(root.threads_dir("p"))
    db.ensure_project("p", "p", 1.0)
    fs = _CountingFs()
    writer = TranscriptWriter(root, db, fs=fs, cached=2)
    for thread_id in ("a", "b", "c"):
        assert writer.thread_created(db.create_thread(thread_id, "p", thread_id, 1.0)) == []

    def reads_of_a_turn(thread_id: str) -> int:
        before = fs.reads
        assert writer.turns_written([db.begin_turn(f"{thread_id}{fs.reads}", thread_id, "q", 2.0)]) == []
        return fs.reads - before

    assert reads_of_a_turn("b") == 0 and reads_of_a_turn("c") == 0  # the last two created are remembered
    assert reads_of_a_turn("a") > 0  # the oldest was forgotten: its tail is read again
    assert reads_of_a_turn("c") == 0  # ... and remembered now, with c; b is the oldest
    assert reads_of_a_turn("b") > 0
    db.close()
