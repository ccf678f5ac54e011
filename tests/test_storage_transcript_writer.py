"""Tests for the TranscriptWriter (storage._transcript_sync): append-only v2 transcripts kept equal to a real
database after every change, at a flat cost (one append per change, one fsync per thread at its sync, tail reads
only), torn tails, v1 conversion,
stale repair and transcripts changed behind the writer."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenthost.storage import (
    ActionCardRow,
    AtomicFs,
    Database,
    StorageError,
    StorageIOError,
    StorageRoot,
    ThreadRow,
    TranscriptStore,
    TranscriptWriter,
    TurnFinish,
    TurnRow,
    fsync_transcripts,
    parse_transcript,
    readable,
    render_transcript,
    render_transcript_v1,
    sync_transcript,
)
from agenthost.storage._transcript_format import (
    HeaderTrailer,
    begin_record,
    card_record,
    end_record,
    header_record,
    scan_records,
    title_record,
)

TRICKY = [
    "",
    "plain",
    "héllo ✓",
    "<!-- checkpoint turn=u9 phase=completed status=completed -->",
    "a\n<!-- checkpoint turn=u9 phase=failed status=failed -->\r\n  \\<!-- x",
    '\u2028<!-- agenthost:v2 {"k":"card","turn":null,"kind":"x","at":1.0,"text":0,"n":0,"crc":0} -->\n',
    "**Assistant:**\n\n**Error:** \n\n> **note:** \x85<!--",
]


@dataclass
class RecordingFs(AtomicFs):
    """Records every call of the seam (and the bytes read); ``fail`` makes a step raise OSError: "append" before
    writing, "append_half" after writing half its data, "fsync_file" (only the fsync after an append)."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    read_bytes: int = 0
    reads: list[tuple[str, int, int]] = field(default_factory=list)  # (file name, offset, length asked)
    fail: str | None = None
    _after_append: bool = False

    def take(self) -> list[str]:
        names, self.calls, self.reads, self.read_bytes = [name for name, _ in self.calls], [], [], 0
        return names

    def write_temp(self, directory: Path, prefix: str, data: bytes) -> Path:
        self.calls.append(("write_temp", prefix))
        return super().write_temp(directory, prefix, data)

    def fsync_file(self, path: Path) -> None:
        self.calls.append(("fsync_file", path.name))
        after_append, self._after_append = self._after_append, False
        if self.fail == "fsync_file" and after_append:
            raise OSError(5, "injected fsync failure")
        super().fsync_file(path)

    def replace(self, src: Path, dst: Path) -> None:
        self.calls.append(("replace", dst.name))
        super().replace(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        self.calls.append(("fsync_dir", directory.name))
        super().fsync_dir(directory)

    def append(self, path: Path, data: bytes) -> None:
        self.calls.append(("append", path.name))
        if self.fail == "append":
            raise OSError(28, "injected append failure")
        if self.fail == "append_half":
            super().append(path, data[: len(data) // 2])
            raise OSError(28, "injected append failure after half the data")
        super().append(path, data)
        self._after_append = True

    def truncate(self, path: Path, size: int) -> None:
        self.calls.append(("truncate", path.name))
        super().truncate(path, size)

    def read(self, path: Path, offset: int = 0, length: int = -1) -> bytes:
        self.calls.append(("read", path.name))
        data = super().read(path, offset, length)
        self.reads.append((path.name, offset, length))
        self.read_bytes += len(data)
        return data

    def size(self, path: Path) -> int:
        self.calls.append(("size", path.name))
        return super().size(path)


@dataclass
class Host:
    root: StorageRoot
    db: Database
    fs: RecordingFs
    writer: TranscriptWriter

    def restart(self, cached: int = 4096) -> TranscriptWriter:
        self.fs = RecordingFs()
        self.writer = TranscriptWriter(self.root, self.db, fs=self.fs, cached=cached)
        return self.writer

    def path(self, thread_id: str = "t1") -> Path:
        return self.root.transcript_path(self.db.get_thread(thread_id).project_id, thread_id)

    def data(self, thread_id: str = "t1") -> bytes:
        return self.path(thread_id).read_bytes()

    def create(self, thread_id: str = "t1", title: str = "Title", now: float = 1.0) -> ThreadRow:
        thread = self.db.create_thread(thread_id, "p1", title, now)
        assert self.writer.thread_created(thread) == []
        return thread

    def begin(self, turn_id: str, thread_id: str = "t1", text: str = "question", now: float = 2.0) -> TurnRow:
        turn = self.db.begin_turn(turn_id, thread_id, text, now)
        assert self.writer.turns_written([turn]) == []
        return turn

    def finish(self, turn_id: str, status: str = "completed", text: str = "answer", now: float = 3.0) -> TurnRow:
        (turn,) = self.db.finish_turns([TurnFinish(turn_id, status, text, None, now, worker_id=1)])  # type: ignore[arg-type]
        assert self.writer.turns_written([turn]) == []
        return turn

    def card(self, text: str = "note", turn_id: str | None = None, thread_id: str = "t1", now: float = 4.0) -> None:
        card = self.db.add_action_card(thread_id, turn_id, "info", text, now)
        assert self.writer.card_added(card) == []


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    yield from _host(tmp_path)


def _host(path: Path) -> Iterator[Host]:
    root = StorageRoot(path / "root")
    db = Database.open(path / "agenthost.db")
    db.ensure_project("p1", "Project", 0.0)
    db.ensure_project("p2", "Other project", 0.0)
    fs = RecordingFs()
    try:
        yield Host(root, db, fs, TranscriptWriter(root, db, fs=fs))
    finally:
        db.close()


def assert_equals_database(db: Database, root: StorageRoot, thread_id: str) -> None:
    """The transcript on disk parses to exactly the database's rows, and holds exactly the records
    render_transcript emits for them (up to log order, and a rename being a title record after the header)."""
    thread = db.get_thread(thread_id)
    turns = db.list_turns(thread_id)
    cards = db.list_action_cards(thread_id)
    data = root.transcript_path(thread.project_id, thread_id).read_bytes()
    text = data.decode("utf-8")
    assert readable(data) == data  # no torn tail
    parsed = parse_transcript(text)
    assert (parsed.thread_id, parsed.project_id, parsed.title, parsed.created_at) == (
        thread.thread_id,
        thread.project_id,
        thread.title,
        thread.created_at,
    )
    assert [
        (t.turn_id, t.seq, t.status, t.user_text, t.assistant_text, t.error, t.created_at, t.finished_at)
        for t in parsed.turns
    ] == [
        (t.turn_id, t.seq, t.status, t.user_text, t.assistant_text, t.error, t.created_at, t.finished_at) for t in turns
    ]
    assert [t.worker_id for t in parsed.turns] == [None if t.status == "pending" else t.worker_id for t in turns]
    assert [(c.turn_id, c.kind, c.text, c.created_at) for c in parsed.cards] == [
        (c.turn_id, c.kind, c.text, c.created_at)
        for c in cards  # card_id order is log order
    ]
    records, end = scan_records(data)
    assert end == len(data)
    have = [data[record.start : record.end] for record in records]
    rendered = render_transcript(thread, turns, cards).encode("utf-8")
    want = [rendered[record.start : record.end] for record in scan_records(rendered)[0]]
    assert want[0] == header_record(thread)
    header, *changes = have
    assert isinstance(records[0].trailer, HeaderTrailer)
    assert header == header_record(msgspec.structs.replace(thread, title=records[0].trailer.title))
    renames = [record for record in changes if record.startswith(b"**Renamed:** ")]
    assert Counter(record for record in changes if record not in renames) == Counter(want[1:])
    assert not renames or renames[-1] == title_record(thread)


# --- D12: the transcript equals the database after every change ------------------------------------------------

ACTIONS = ["create", "begin", "begin", "finish", "finish", "card", "rename", "restart"]


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(ACTIONS), st.integers(0, 2**16), st.sampled_from(TRICKY)), min_size=1, max_size=30
    )
)
def test_writer_appends_keep_the_transcript_equal_to_the_database_after_each_change(
    steps: list[tuple[str, int, str]],
) -> None:
    """D12: a TranscriptWriter fed random changes of a real database leaves, after every change, transcripts that
    parse to exactly the database's rows and whose bytes are the records of the changes in log order (the records
    render_transcript emits). After a thread's creation, every change costs one append per thread it touches, never a
    replace, and only the first append to a thread since the writer started reads its tail; such a thread is synced
    (listed by take_synced) only after sync_appends, which costs one fsync per thread."""
    with tempfile.TemporaryDirectory() as folder:
        for host in _host(Path(folder)):
            logs: dict[str, bytes] = {}  # thread id -> the records the writer must have appended, in log order
            tail_known: set[str] = set()  # threads this writer has written since it started
            turn_count = 0
            for number, (action, pick, text) in enumerate(steps):
                now = 10.0 + number
                threads = sorted(logs)
                pending = [turn for t in threads for turn in host.db.list_turns(t) if turn.status == "pending"]
                if action == "create" or not threads:
                    thread = host.db.create_thread(f"t{len(threads) + 1}", ("p1", "p2")[pick % 2], text, now)
                    host.fs.take()
                    assert host.writer.thread_created(thread) == []
                    logs[thread.thread_id] = header_record(thread)
                    assert "append" not in host.fs.take()
                    tail_known.add(thread.thread_id)
                    touched = [thread.thread_id]
                else:
                    thread_id = threads[pick % len(threads)]
                    touched = [thread_id]
                    host.fs.take()
                    if action == "restart":
                        host.restart()
                        tail_known.clear()
                        touched = []
                    elif action == "begin":
                        turn_count += 1
                        turn = host.db.begin_turn(f"u{turn_count}", thread_id, text, now)
                        assert host.writer.turns_written([turn]) == []
                        logs[thread_id] += begin_record(turn)
                    elif action == "finish" and pending:
                        chosen = [turn for i, turn in enumerate(pending) if pick >> i & 1] or pending[:1]
                        finishes = [
                            TurnFinish(
                                turn.turn_id,
                                ("completed", "failed", "interrupted")[(pick + i) % 3],
                                text,
                                None if (pick + i) % 2 else text + "!",
                                now,
                                worker_id=1 + i % 2,
                            )
                            for i, turn in enumerate(chosen)
                        ]
                        rows = host.db.finish_turns(finishes)
                        assert host.writer.turns_written(rows) == []
                        for row in rows:
                            logs[row.thread_id] += end_record(row)
                        touched = sorted({row.thread_id for row in rows})
                    elif action in ("card", "finish"):
                        turns = host.db.list_turns(thread_id)
                        turn_id = None if not turns or pick % 3 == 0 else turns[pick % len(turns)].turn_id
                        card = host.db.add_action_card(thread_id, turn_id, f"kind{pick % 2}", text, now)
                        assert host.writer.card_added(card) == []
                        logs[thread_id] += card_record(card)
                    else:
                        thread = host.db.update_thread(thread_id, title=f"{text} {number}")
                        assert host.writer.renamed(thread) == []
                        logs[thread_id] += title_record(thread)
                    reads = list(host.fs.reads)
                    calls = host.fs.take() if touched else []
                    counts = Counter(calls)
                    assert counts["append"] == len(touched) and counts["fsync_file"] == 0, calls
                    assert counts["write_temp"] == counts["replace"] == counts["truncate"] == 0, calls
                    assert all(length >= 0 for _, _, length in reads), reads  # the tail only, never all
                    if all(thread_id in tail_known for thread_id in touched):
                        assert counts["read"] == 0, calls
                    tail_known.update(touched)
                    assert host.writer.unsynced == len(touched)
                    assert host.writer.take_synced() == []  # appended, not yet fsynced
                    assert host.writer.sync_appends() == []
                    assert host.fs.take() == ["fsync_file"] * len(touched)
                assert host.writer.stale == set() and host.writer.unsynced == 0
                assert host.writer.take_synced() == sorted(touched)
                for thread_id in sorted(logs):
                    assert host.data(thread_id) == logs[thread_id]
                    assert_equals_database(host.db, host.root, thread_id)


# --- flat cost ---------------------------------------------------------------------------------------------------


def test_appends_cost_one_write_read_only_the_tail_and_sync_once_per_thread(host: Host) -> None:
    host.create()
    host.fs.take()
    big = "x" * 8000 + "\n"
    for number in range(1, 121):
        host.begin(f"u{number}", text=f"{number} {big}")
        host.finish(f"u{number}", text=big)
    size = host.path().stat().st_size
    assert size > 1_500_000
    assert host.fs.take().count("read") == 0  # one writer from the start: nothing is ever read

    host.restart()  # a new writer knows nothing of the thread: it finds the end of the last record from the end
    host.card("after the restart")
    assert host.writer.sync_appends() == []
    names = [name for name, _ in host.fs.calls]
    assert names.count("append") == names.count("fsync_file") == 1
    assert "write_temp" not in names and "replace" not in names and "truncate" not in names
    assert names.index("read") < names.index("append") < names.index("fsync_file")
    assert all(offset >= size - 200_000 and length >= 0 for _, offset, length in host.fs.reads), host.fs.reads
    assert 0 < host.fs.read_bytes < 200_000
    host.fs.take()
    for number in range(121, 141):  # every later change: one append, no read at all; one fsync for the four
        host.begin(f"u{number}")
        assert host.fs.take() == ["size", "append"]
        host.finish(f"u{number}")
        assert host.fs.take() == ["size", "append"]
        host.card(f"card {number}", turn_id=f"u{number}")
        assert host.fs.take() == ["size", "append"]
        host.db.update_thread("t1", title=f"title {number}")
        assert host.writer.renamed(host.db.get_thread("t1")) == []
        assert host.fs.take() == ["size", "append"]
        assert host.writer.take_synced() == []
        assert host.writer.sync_appends() == []
        assert host.fs.take() == ["fsync_file"]
        assert host.writer.take_synced() == ["t1"]
    assert_equals_database(host.db, host.root, "t1")


def test_one_append_per_thread_when_turns_of_many_threads_finish_together(host: Host) -> None:
    for thread_id in ("t1", "t2", "t3"):
        host.create(thread_id)
        for number in (1, 2):
            host.begin(f"{thread_id}u{number}", thread_id)
    host.fs.take()
    rows = host.db.finish_turns(
        [TurnFinish(turn.turn_id, "completed", "done", None, 9.0) for turn in host.db.pending_turns()]
    )
    assert host.writer.turns_written(rows) == [] and host.writer.sync_appends() == []
    assert Counter(host.fs.calls) == Counter(
        [(step, f"{thread_id}.md") for thread_id in ("t1", "t2", "t3") for step in ("size", "append", "fsync_file")]
    )
    for thread_id in ("t1", "t2", "t3"):
        assert_equals_database(host.db, host.root, thread_id)


def test_a_writer_that_forgot_a_tail_reads_it_again(host: Host) -> None:
    host.restart(cached=1)
    host.create("t1")
    host.create("t2")
    for number in range(1, 4):
        for thread_id in ("t1", "t2"):  # alternating threads with a cache of one: every append re-reads its tail
            host.fs.take()
            host.begin(f"{thread_id}u{number}", thread_id)
            names = host.fs.take()
            assert names.count("read") >= 1 and names.count("append") == 1 and "replace" not in names
    for thread_id in ("t1", "t2"):
        assert_equals_database(host.db, host.root, thread_id)


# --- torn tails ------------------------------------------------------------------------------------------------


def _tear(host: Host, thread_id: str, record: bytes, cut: int) -> bytes:
    """Simulate a writer that died in the middle of an append: the first ``cut`` bytes of ``record`` reach the file.
    Returns the bytes before them."""
    before = host.data(thread_id)
    with host.path(thread_id).open("ab") as file:
        file.write(record[:cut])
    return before


def test_torn_tail_is_ignored_by_readers_and_cut_by_the_next_append(host: Host) -> None:
    """Every cut of a card record (through its body, its trailer, a multi-byte character): readers see the text up
    to the last complete record; a new writer's next append truncates the torn bytes first, then appends, and the
    result parses exactly (the lost card is a record the transcript lacks, which sync_transcript then appends)."""
    cut, record_length = 0, 2
    while cut + 1 < record_length:
        cut += 1
        thread_id = f"t{cut}"
        host.restart()
        host.create(thread_id)
        host.begin(f"{thread_id}u1", thread_id)
        host.finish(f"{thread_id}u1", "failed")
        card = host.db.add_action_card(thread_id, f"{thread_id}u1", "info", "ünï ✓\n<!--", 5.0)
        record_length = len(card_record(card))
        before = _tear(host, thread_id, card_record(card), cut)
        assert TranscriptStore(host.root).read("p1", thread_id) == before.decode("utf-8")
        assert readable(host.data(thread_id)) == before
        assert parse_transcript(TranscriptStore(host.root).read("p1", thread_id)).turns[0].status == "failed"

        writer = host.restart()
        turn = host.db.begin_turn(f"{thread_id}u2", thread_id, "next", 6.0)
        assert writer.turns_written([turn]) == []
        assert host.fs.reads and all(length >= 0 for _, _, length in host.fs.reads)  # only the tail was read
        names = host.fs.take()
        assert names.count("truncate") == 1 and names.count("append") == 1
        assert names.index("truncate") < names.index("append"), names
        assert "replace" not in names
        assert host.data(thread_id) == before + begin_record(turn)
        parsed = parse_transcript(host.data(thread_id).decode("utf-8"))
        assert [(t.turn_id, t.status) for t in parsed.turns] == [
            (f"{thread_id}u1", "failed"),
            (f"{thread_id}u2", "pending"),
        ]
        assert parsed.cards == ()
        check = sync_transcript(host.db, TranscriptStore(host.root), thread_id, repair=True)
        assert check.problem is not None and "lacks 1 records" in check.problem
        assert_equals_database(host.db, host.root, thread_id)


def test_torn_tail_after_a_header_only_transcript_is_ignored_by_readers(host: Host) -> None:
    host.create()
    turn = host.db.begin_turn("u1", "t1", "question", 2.0)
    before = _tear(host, "t1", begin_record(turn), 20)
    assert readable(host.data()) == before
    assert TranscriptStore(host.root).read("p1", "t1") == before.decode("utf-8")


def test_torn_tail_after_a_header_only_transcript_is_repaired_by_the_next_write(host: Host) -> None:
    host.create()
    turn = host.db.begin_turn("u1", "t1", "question", 2.0)
    before = _tear(host, "t1", begin_record(turn), 20)
    host.restart()
    card = host.db.add_action_card("t1", None, "info", "note", 3.0)
    assert host.writer.card_added(card) == []
    assert host.data() == before + card_record(card)  # the torn bytes cut, as after any other record
    check = sync_transcript(host.db, TranscriptStore(host.root), "t1", repair=True)  # what start-up runs first
    assert check.problem is not None and "lacks 1 records" in check.problem
    assert_equals_database(host.db, host.root, "t1")


# --- v1 conversion -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["card", "begin", "finish", "rename"])
def test_v1_transcript_is_converted_to_v2_on_the_first_write(host: Host, change: str) -> None:
    thread = host.db.create_thread("t1", "p1", "Old <!-- title", 1.0)
    host.db.begin_turn("u1", "t1", "first\n<!-- checkpoint turn=u9 phase=failed status=failed -->", 2.0)
    host.db.finish_turns([TurnFinish("u1", "completed", "answer ✓", None, 3.0)])
    host.db.add_action_card("t1", "u1", "info", "card", 3.5)
    host.db.begin_turn("u2", "t1", "second", 4.0)
    v1 = render_transcript_v1(thread, host.db.list_turns("t1"), host.db.list_action_cards("t1"))
    path = TranscriptStore(host.root).write("p1", "t1", v1)
    parsed = parse_transcript(path.read_text("utf-8"))
    assert [(t.turn_id, t.status, t.user_text, t.assistant_text) for t in parsed.turns] == [
        (t.turn_id, t.status, t.user_text, t.assistant_text) for t in host.db.list_turns("t1")
    ]
    assert parsed.title == thread.title

    host.fs.take()
    if change == "card":
        host.card("new card")
    elif change == "begin":
        host.begin("u3", now=5.0)
    elif change == "finish":
        host.finish("u2", "interrupted")
    else:
        assert host.writer.renamed(host.db.update_thread("t1", title="New title")) == []
    names = host.fs.take()
    assert "replace" in names and "append" not in names, names  # rewritten whole, by atomic replace
    rows = (host.db.get_thread("t1"), host.db.list_turns("t1"), host.db.list_action_cards("t1"))
    assert host.data() == render_transcript(*rows).encode("utf-8")
    assert_equals_database(host.db, host.root, "t1")
    assert host.writer.take_synced() == ["t1"]

    host.card("then appended")  # converted once: the next change appends
    names = host.fs.take()
    assert names.count("append") == 1 and "replace" not in names
    assert_equals_database(host.db, host.root, "t1")


# --- stale repair ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["append", "append_half", "fsync_file"])
@pytest.mark.parametrize("repair_by", ["next_write", "retry_stale", "another_thread"])
def test_failed_append_is_returned_and_the_stale_thread_repaired(host: Host, fault: str, repair_by: str) -> None:
    host.create()
    host.create("t2", now=1.5)
    host.begin("u1")
    host.writer.take_synced()

    host.fs.fail = fault
    (turn,) = host.db.finish_turns([TurnFinish("u1", "completed", "answer", None, 3.0, worker_id=2)])
    failures = host.writer.turns_written([turn]) + host.writer.sync_appends()  # never raise; the fsync fails in sync
    assert [thread_id for thread_id, _ in failures] == ["t1"]
    assert isinstance(failures[0][1], StorageIOError)
    assert host.writer.stale == {"t1"}
    assert host.writer.take_synced() == []
    card = host.db.add_action_card("t1", None, "info", "while failing", 4.0)
    failures = host.writer.card_added(card)  # still failing: a failure again, still stale
    assert [thread_id for thread_id, _ in failures] == ["t1"] and isinstance(failures[0][1], StorageError)
    if fault != "fsync_file":  # (this fs fails only an append's own fsync: a repair's fsync succeeds)
        assert host.writer.retry_stale() != [] and host.writer.stale == {"t1"}
    assert host.writer.take_synced() == []

    host.fs.fail = None
    host.fs.take()
    if repair_by == "next_write":
        assert host.writer.renamed(host.db.update_thread("t1", title="renamed")) == []
    elif repair_by == "retry_stale":
        assert host.writer.retry_stale() == []
    else:  # retry_stale also runs after every write that succeeded
        host.card("other thread", thread_id="t2")
    assert host.writer.sync_appends() == []
    names = host.fs.take()
    assert "read" in names  # repaired from the database (sync_transcript), not appended blindly
    assert host.writer.stale == set()
    assert "t1" in host.writer.take_synced()
    assert_equals_database(host.db, host.root, "t1")
    assert_equals_database(host.db, host.root, "t2")

    host.card("afterwards")  # back to plain appends
    assert host.writer.sync_appends() == []
    assert host.fs.take() == ["size", "append", "fsync_file"]
    assert_equals_database(host.db, host.root, "t1")


def test_stale_repair_after_a_failed_fsync_makes_the_transcript_durable(host: Host) -> None:
    host.create()
    host.begin("u1")
    host.fs.fail = "fsync_file"
    (turn,) = host.db.finish_turns([TurnFinish("u1", "completed", "answer", None, 3.0)])
    assert host.writer.turns_written([turn]) == []
    assert [thread_id for thread_id, _ in host.writer.sync_appends()] == ["t1"]
    assert host.writer.stale == {"t1"} and host.writer.take_synced() == []
    host.fs.fail = None
    host.fs.take()
    assert host.writer.retry_stale() == []
    assert host.writer.take_synced() == ["t1"]  # the caller now unmarks the thread in the database...
    assert "fsync_file" in host.fs.take()  # ...so its transcript must have been fsynced since the failure


def test_failed_thread_creation_is_stale_until_repaired(host: Host) -> None:
    class NoReplace(RecordingFs):
        def replace(self, src: Path, dst: Path) -> None:
            raise OSError(5, "injected replace failure")

    writer = TranscriptWriter(host.root, host.db, fs=NoReplace())
    thread = host.db.create_thread("t1", "p1", "Title", 1.0)
    failures = writer.thread_created(thread)
    assert [thread_id for thread_id, _ in failures] == ["t1"] and writer.stale == {"t1"}
    assert not host.root.transcript_path("p1", "t1").exists()
    writer.store.fs = AtomicFs()
    turn = host.db.begin_turn("u1", "t1", "question", 2.0)
    assert writer.turns_written([turn]) == []
    assert writer.stale == set() and writer.take_synced() == ["t1"]
    assert_equals_database(host.db, host.root, "t1")


# --- changed behind the writer -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    ["garbage appended", "half record appended", "foreign card appended", "truncated into a record", "truncated"],
)
def test_transcript_changed_behind_the_writer_is_repaired_not_appended_to(host: Host, change: str) -> None:
    host.create()
    host.begin("u1")
    host.finish("u1")
    host.card("known card", "u1")
    path = host.path()
    data = path.read_bytes()
    foreign = card_record(ActionCardRow(card_id=9, thread_id="t1", turn_id=None, kind="x", text="y", created_at=9.0))
    if change == "garbage appended":
        path.write_bytes(data + b"garbage\n")
    elif change == "half record appended":
        path.write_bytes(data + foreign[: len(foreign) // 2])
    elif change == "foreign card appended":
        path.write_bytes(data + foreign)
    elif change == "truncated into a record":
        path.write_bytes(data[:-30])
    else:
        path.write_bytes(data[: data.index(b"## Turn 1")])  # only the header is left
    host.fs.take()
    turn = host.db.begin_turn("u2", "t1", "next", 5.0)
    assert host.writer.turns_written([turn]) == []
    names = host.fs.take()
    assert "read" in names, names  # the writer noticed the size change and compared with the database
    assert_equals_database(host.db, host.root, "t1")
    assert host.writer.take_synced() == ["t1"]


def test_fsyncs_done_elsewhere_count_only_for_threads_untouched_since(host: Host) -> None:
    """D12, the two halves of sync_appends (the persistence actor fsyncs on a thread of its own): a transcript
    handed over by take_unsynced and fsynced counts as synced, unless it got an append since (that one is not
    durable yet) or failed since (stale); a failed fsync leaves its thread stale."""
    for thread_id in ("t1", "t2", "t3"):
        host.create(thread_id)
        host.begin(f"u-{thread_id}", thread_id)
    host.writer.take_synced()
    handed = host.writer.take_unsynced()
    assert sorted(handed) == ["t1", "t2", "t3"] and host.writer.unsynced == 0
    outcomes = fsync_transcripts(host.writer.store, handed)  # on any thread: no writer state
    assert outcomes == {"t1": None, "t2": None, "t3": None}
    host.finish("u-t2")  # an append while the fsync ran elsewhere
    host.fs.fail = "append"  # and a failed one
    (turn,) = host.db.finish_turns([TurnFinish("u-t3", "completed", "answer", None, 3.0)])
    assert [thread_id for thread_id, _ in host.writer.turns_written([turn])] == ["t3"]
    host.fs.fail = None
    failed = StorageError("injected fsync failure")
    assert host.writer.note_synced({**outcomes, "t1": failed}) == [("t1", failed)]
    assert host.writer.take_synced() == []  # t1 failed, t2 waits for its new append's fsync, t3 is stale
    assert host.writer.stale == {"t1", "t3"} and host.writer.unsynced == 1
    assert host.writer.sync_appends() == [] and host.writer.take_synced() == ["t2"]
