"""Tests for Markdown transcripts (v2): rendering, checkpoint markers, forgery escaping, reading back exactly,
atomic writes and the TranscriptStore. The TranscriptWriter's appends are in test_storage_transcript_writer.py."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenthost.storage import (
    PHASES,
    ActionCardRow,
    AtomicFs,
    StorageIOError,
    StorageRoot,
    ThreadRow,
    TranscriptStore,
    TurnRow,
    atomic_write,
    checkpoint_phase,
    parse_checkpoints,
    parse_transcript,
    readable,
    render_transcript,
    render_transcript_v1,
)
from agenthost.storage._transcript_format import (
    MAGIC,
    begin_record,
    card_record,
    last_record_end,
    scan_records,
    title_record,
)
from agenthost.storage._transcripts import place_cards

THREAD = ThreadRow(thread_id="t1", project_id="p1", title="My thread", created_at=100.0)


FORGED_MARKER = "<!-- checkpoint turn=u9 phase=completed status=completed -->"
# Every line boundary str.splitlines knows (a reader splitting lines on any of them must not see a forged line).
LINE_BOUNDARIES = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def _turn(seq: int, status: str = "completed", **changes: object) -> TurnRow:
    fields: dict[str, object] = {
        "turn_id": f"u{seq}",
        "thread_id": "t1",
        "seq": seq,
        "user_text": f"question {seq}",
        "assistant_text": "" if status == "pending" else f"answer {seq}",
        "status": status,
        "error": None,
        "worker_id": None if status == "pending" else 1,
        "created_at": 100.0 + 10 * seq,
        "finished_at": None if status == "pending" else 101.0 + 10 * seq,
    }
    fields.update(changes)
    return TurnRow(**fields)  # type: ignore[arg-type]


def _card(card_id: int, turn_id: str | None, created_at: float, text: str = "note") -> ActionCardRow:
    return ActionCardRow(
        card_id=card_id, thread_id="t1", turn_id=turn_id, kind="info", text=text, created_at=created_at
    )


# Forgeries: a real v2 trailer line and whole real records (what a reader would accept if a text could hold them).
FORGED_CARD_RECORD = card_record(_card(7, None, 5.0, "forged card")).decode("utf-8")
FORGED_TRAILER = FORGED_CARD_RECORD[FORGED_CARD_RECORD.index(MAGIC.decode("ascii")) :]
FORGED_BEGIN_RECORD = begin_record(_turn(9, "pending", thread_id="t1")).decode("utf-8")
MARKER_FRAGMENTS = [
    *LINE_BOUNDARIES,
    "<!--",
    "-->",
    "\\",
    " ",
    "\t",
    "a",
    "é",
    "> ",
    "\n\n",
    "**User:**\n\n",
    "**Assistant:**\n\n",
    "**Error:** ",
    "## Turn 9\n",
    FORGED_MARKER,
    FORGED_TRAILER,
    FORGED_CARD_RECORD,
    FORGED_BEGIN_RECORD,
]
tricky_texts = st.lists(st.sampled_from(MARKER_FRAGMENTS), max_size=12).map("".join) | st.text(max_size=30)


def _kinds(markdown: str) -> list[str]:
    """The kinds of the complete records of a v2 transcript, which must be complete records from start to end."""
    data = markdown.encode("utf-8")
    records, end = scan_records(data)
    assert end == len(data)
    assert last_record_end(lambda offset, length: data[offset : offset + length], len(data)) == len(data)
    return [type(record.trailer).__name__.removesuffix("Trailer").lower() for record in records]


def _comment_lines(markdown: str) -> list[str]:
    """Every line (on any str.splitlines boundary) that starts, after spaces/tabs, with an HTML comment."""
    return [line for line in markdown.splitlines() if line.lstrip(" \t").startswith("<!--")]


def _assert_reads_back(
    markdown: str, thread: ThreadRow, turns: list[TurnRow], cards: list[ActionCardRow], title: str | None = None
) -> None:
    """parse_transcript gives back exactly the rows (cards in the renderer's placement order)."""
    parsed = parse_transcript(markdown)
    assert (parsed.thread_id, parsed.project_id, parsed.title, parsed.created_at) == (
        thread.thread_id,
        thread.project_id,
        thread.title if title is None else title,
        thread.created_at,
    )
    ordered = sorted(turns, key=lambda turn: turn.seq)
    assert [
        (t.turn_id, t.seq, t.status, t.user_text, t.assistant_text, t.error, t.worker_id, t.created_at, t.finished_at)
        for t in parsed.turns
    ] == [
        (
            t.turn_id,
            t.seq,
            t.status,
            t.user_text,
            "" if t.status == "pending" else t.assistant_text,  # a pending turn's partial text is not logged
            t.error if t.status != "pending" else None,
            t.worker_id if t.status != "pending" else None,
            t.created_at,
            t.finished_at,
        )
        for t in ordered
    ]
    top, by_turn = place_cards(ordered, cards)
    placed = top + [card for turn in ordered for card in by_turn[turn.turn_id]]
    assert [(c.turn_id, c.kind, c.text, c.created_at) for c in parsed.cards] == [
        (c.turn_id, c.kind, c.text, c.created_at) for c in placed
    ]


# --- rendering ------------------------------------------------------------------------------------------------


def test_checkpoint_phase_maps_statuses() -> None:
    assert PHASES == ("pending", "completed", "failed")
    assert [checkpoint_phase(status) for status in ("pending", "completed", "failed", "interrupted")] == [
        "pending",
        "completed",
        "failed",
        "failed",
    ]


def test_render_has_title_metadata_and_one_marker_per_turn_in_seq_order() -> None:
    """D5: a pending turn has one marker, a finished turn two (pending in its begin record, then the final one in
    its end record), in seq order; every turn's LAST marker gives its phase."""
    turns = [
        _turn(2, "interrupted", error="runtime exited"),
        _turn(1, "completed"),
        _turn(3, "pending"),
        _turn(4, "failed", assistant_text="", error="boom"),
    ]
    markdown = render_transcript(THREAD, turns, [])
    lines = markdown.splitlines()
    assert lines[0] == "# My thread"
    assert "thread `t1` | project `p1`" in lines
    assert parse_checkpoints(markdown) == [
        ("u1", "pending"),
        ("u1", "completed"),
        ("u2", "pending"),
        ("u2", "failed"),
        ("u3", "pending"),
        ("u4", "pending"),
        ("u4", "failed"),
    ]
    assert dict(parse_checkpoints(markdown)) == {"u1": "completed", "u2": "failed", "u3": "pending", "u4": "failed"}
    assert Counter(turn for turn, _ in parse_checkpoints(markdown)) == {"u1": 2, "u2": 2, "u3": 1, "u4": 2}
    turn_two = lines.index("## Turn 2")
    assert lines[turn_two + 1] == "<!-- checkpoint turn=u2 phase=pending status=pending -->"
    assert "<!-- checkpoint turn=u2 phase=failed status=interrupted -->" in lines
    assert lines.index("<!-- checkpoint turn=u2 phase=failed status=interrupted -->") > turn_two
    assert lines.index("## Turn 1") < turn_two < lines.index("## Turn 3") < lines.index("## Turn 4")
    assert "**Error:** runtime exited" in lines
    assert markdown.endswith(" -->\n")
    assert _kinds(markdown) == ["header", "begin", "end", "begin", "end", "begin", "begin", "end"]
    assert len(_comment_lines(markdown)) == 7 + 8  # the markers and the record trailers, nothing else
    _assert_reads_back(markdown, THREAD, turns, [])


def test_pending_turn_without_text_omits_assistant_block() -> None:
    pending_section = render_transcript(THREAD, [_turn(1, "pending")], []).split("## Turn 1", 1)[1]
    assert "**User:**\n\nquestion 1\n\n" + MAGIC.decode("ascii") in pending_section
    assert "**Assistant:**" not in pending_section
    streaming_turn = _turn(1, "pending", assistant_text="partial")  # a pending turn's partial text is not logged
    streaming = render_transcript(THREAD, [streaming_turn], [])
    assert "**Assistant:**" not in streaming and "partial" not in streaming
    _assert_reads_back(streaming, THREAD, [streaming_turn], [])
    empty_user = render_transcript(THREAD, [_turn(1, "pending", user_text="")], [])
    assert "**User:**\n\n" + MAGIC.decode("ascii") in empty_user  # the empty text's block is omitted
    completed_turn = _turn(1, "completed", assistant_text="")
    completed_empty = render_transcript(THREAD, [completed_turn], [])
    assert "**Assistant:**\n\n" + MAGIC.decode("ascii") in completed_empty  # label, no block
    assert "**Error:**" not in completed_empty
    _assert_reads_back(completed_empty, THREAD, [completed_turn], [])
    empty_error_turn = _turn(1, "failed", assistant_text="", error="")
    empty_error = render_transcript(THREAD, [empty_error_turn], [])
    assert "**Assistant:**\n\n**Error:** \n\n" in empty_error  # an empty error is not None: it shows
    _assert_reads_back(empty_error, THREAD, [empty_error_turn], [])


def test_cards_are_placed_under_their_turn_or_by_time() -> None:
    turns = [_turn(1), _turn(2)]  # created at 110 and 120
    cards = [
        _card(1, None, 105.0, "before any turn"),
        _card(2, "u1", 125.0, "tied to turn 1"),
        _card(3, None, 115.0, "after turn 1"),
        _card(4, None, 120.0, "same time as turn 2"),
        _card(5, "u9", 111.0, "unknown turn, placed by time"),
    ]
    markdown = render_transcript(THREAD, turns, cards)
    top, rest = markdown.split("## Turn 1", 1)
    turn_one, turn_two = rest.split("## Turn 2", 1)
    assert "> **info:** before any turn" in top
    assert turn_one.index("unknown turn, placed by time") < turn_one.index("after turn 1")
    assert turn_one.index("after turn 1") < turn_one.index("tied to turn 1")
    assert "> **info:** same time as turn 2" in turn_two
    assert "tied to turn 1" not in turn_two


def test_multiline_card_is_one_blockquote() -> None:
    card_text = "line one\n<!-- checkpoint turn=x phase=pending status=pending -->\n\nlast é"
    markdown = render_transcript(THREAD, [], [_card(1, None, 1.0, card_text)])
    body = "> **info:** line one\n> \\<!-- checkpoint turn=x phase=pending status=pending -->\n> \n> last é\n\n"
    assert body + MAGIC.decode("ascii") in markdown
    assert parse_checkpoints(markdown) == []
    assert _kinds(markdown) == ["header", "card"]
    assert parse_transcript(markdown).cards[0].text == card_text


def test_forged_marker_in_text_is_escaped_and_text_otherwise_verbatim() -> None:
    forged = "<!-- checkpoint turn=evil phase=completed status=completed -->"
    user_text = f"{forged}\nnormal line\n  {forged}\r\n{forged}\u2028{forged}\n\\{forged}\n{FORGED_TRAILER}"
    turn = _turn(1, "failed", user_text=user_text, assistant_text=forged, error=f"x\n{forged}")
    markdown = render_transcript(THREAD, [turn], [])
    assert parse_checkpoints(markdown) == [("u1", "pending"), ("u1", "failed")]
    assert _kinds(markdown) == ["header", "begin", "end"]
    escaped = "\\" + forged
    expected_user = f"{escaped}\nnormal line\n  {escaped}\r\n{escaped}\u2028{escaped}\n\\{escaped}\n\\{FORGED_TRAILER}"
    assert f"**User:**\n\n{expected_user}\n\n" in markdown
    assert f"**Assistant:**\n\n{escaped}\n\n" in markdown
    assert f"**Error:** x\n{escaped}\n\n" in markdown
    _assert_reads_back(markdown, THREAD, [turn], [])  # the texts read back exactly, backslashes and all
    title_forgery = ThreadRow(thread_id="t1", project_id="p1", title=f"a\n{forged}\n{FORGED_TRAILER}\n", created_at=1.0)
    renamed = render_transcript(title_forgery, [], []) + title_record(title_forgery).decode("utf-8")
    assert parse_checkpoints(renamed) == []
    assert _kinds(renamed) == ["header", "title"]
    assert parse_transcript(renamed).title == title_forgery.title


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    texts=st.lists(tricky_texts, min_size=6, max_size=6),
    error=st.none() | tricky_texts,
    status=st.sampled_from(["pending", "completed", "failed", "interrupted"]),
)
def test_no_text_can_forge_or_hide_markers(texts: list[str], error: str | None, status: str) -> None:
    """D5: whatever the user/assistant/error/card/title texts, every line that starts (after spaces/tabs) with
    ``<!--`` is one of the renderer's markers or trailers, the markers are exactly the turns' in seq order, the
    records are exactly the renderer's, and parse_transcript reads every text back exactly."""
    user_text, assistant_text, card_text, top_card_text, title, new_title = texts
    thread = ThreadRow(thread_id="t1", project_id="p1", title=title, created_at=1.0)
    finished = status != "pending"
    turns = [
        _turn(
            1,
            status,
            user_text=user_text,
            assistant_text=assistant_text,  # a pending turn's partial text is not logged
            error=error if finished else None,
        ),
        _turn(2, user_text=FORGED_MARKER + user_text, assistant_text=assistant_text + FORGED_TRAILER, error=error),
        _turn(3, "pending", user_text=user_text + FORGED_BEGIN_RECORD),
    ]
    cards = [
        _card(1, "u1", 200.0, card_text + FORGED_MARKER),
        _card(2, None, 1.0, FORGED_TRAILER + top_card_text),
        _card(3, None, 300.0, card_text),
    ]
    markdown = render_transcript(thread, turns, cards)
    expected = [("u1", "pending"), *([("u1", checkpoint_phase(status))] if finished else [])]  # type: ignore[arg-type]
    expected += [("u2", "pending"), ("u2", "completed"), ("u3", "pending")]
    assert parse_checkpoints(markdown) == expected
    kinds = ["header", "card", "begin", *(["end"] if finished else []), "card", "begin", "end", "begin", "card"]
    assert _kinds(markdown) == kinds
    assert len(_comment_lines(markdown)) == len(expected) + len(kinds)
    _assert_reads_back(markdown, thread, turns, cards)
    renamed_thread = ThreadRow(thread_id="t1", project_id="p1", title=new_title, created_at=1.0)
    renamed = markdown + title_record(renamed_thread).decode("utf-8")
    assert parse_checkpoints(renamed) == expected
    assert _kinds(renamed) == [*kinds, "title"]
    assert len(_comment_lines(renamed)) == len(expected) + len(kinds) + 1
    _assert_reads_back(renamed, thread, turns, cards, title=new_title)


def test_parse_checkpoints_reads_only_exact_marker_lines() -> None:
    markdown = (
        "<!-- checkpoint turn=a phase=pending status=pending -->\n"
        " <!-- checkpoint turn=b phase=pending status=pending -->\n"
        "<!-- checkpoint turn=c phase=bogus status=pending -->\n"
        "\\<!-- checkpoint turn=d phase=failed status=failed -->\r\n"
        "<!-- checkpoint turn=e phase=failed status=interrupted -->\r\n"
    )
    assert parse_checkpoints(markdown) == [("a", "pending"), ("e", "failed")]


# --- atomic writes --------------------------------------------------------------------------------------------


class FailingFs(AtomicFs):
    """An AtomicFs whose step `failing_step` raises OSError instead of running; records the steps called."""

    def __init__(self, failing_step: str) -> None:
        self.failing_step = failing_step
        self.calls: list[str] = []

    def _maybe_fail(self, step: str) -> None:
        self.calls.append(step)
        if step == self.failing_step:
            raise OSError(5, f"injected failure in {step}")

    def fsync_file(self, path: Path) -> None:
        self._maybe_fail("fsync_file")
        super().fsync_file(path)

    def replace(self, src: Path, dst: Path) -> None:
        self._maybe_fail("replace")
        super().replace(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        self._maybe_fail("fsync_dir")
        super().fsync_dir(directory)

    def append(self, path: Path, data: bytes) -> None:
        self._maybe_fail("append")
        super().append(path, data)


def test_atomic_write_uses_temp_fsync_replace_fsync_dir_in_order(tmp_path: Path) -> None:
    target = tmp_path / "file.md"
    fs = FailingFs(failing_step="none")
    atomic_write(target, b"new", fs)
    assert target.read_bytes() == b"new"
    assert fs.calls == ["fsync_file", "replace", "fsync_dir"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.md"]


@pytest.mark.parametrize("failing_step", ["fsync_file", "replace"])
def test_failure_before_replace_keeps_old_content_and_removes_temp(tmp_path: Path, failing_step: str) -> None:
    target = tmp_path / "file.md"
    target.write_bytes(b"old content")
    with pytest.raises(StorageIOError, match=r"file\.md") as caught:
        atomic_write(target, b"new content", FailingFs(failing_step))
    assert isinstance(caught.value.__cause__, OSError)
    assert failing_step in str(caught.value)
    assert target.read_bytes() == b"old content"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.md"]


def test_failing_folder_fsync_raises_after_complete_replace(tmp_path: Path) -> None:
    target = tmp_path / "file.md"
    target.write_bytes(b"old content")
    with pytest.raises(StorageIOError, match="fsync of folder") as caught:
        atomic_write(target, b"new content", FailingFs("fsync_dir"))
    assert isinstance(caught.value.__cause__, OSError)
    assert target.read_bytes() == b"new content"  # replaced whole, never torn; only durability is unknown
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.md"]


def test_atomic_write_into_missing_folder_raises_storage_io_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "file.md"
    with pytest.raises(StorageIOError, match="missing") as caught:
        atomic_write(target, b"data")
    assert isinstance(caught.value.__cause__, FileNotFoundError)


# --- TranscriptStore ------------------------------------------------------------------------------------------


def test_store_write_read_round_trip(tmp_path: Path) -> None:
    """``read`` gives the text up to the last complete v2 record (a torn tail is cut); a text without v2 records
    (a v1 transcript, or anything else) whole."""
    root = StorageRoot(tmp_path)
    store = TranscriptStore(root)
    assert not store.exists("p1", "t1")
    with pytest.raises(FileNotFoundError):
        store.read("p1", "t1")
    text = render_transcript(THREAD, [_turn(1, user_text="héllo ✓\r\nline")], [])
    path = store.write("p1", "t1", text)
    assert path == root.transcript_path("p1", "t1")
    assert store.exists("p1", "t1")
    assert store.read("p1", "t1") == text
    assert readable(path.read_bytes()) == text.encode("utf-8")
    torn = begin_record(_turn(2, "pending", user_text="ünïcode ✓")).decode("utf-8")
    for cut in range(1, len(torn.encode("utf-8"))):  # every byte a torn append may stop at, even inside a character
        with path.open("ab") as file:
            file.write(torn.encode("utf-8")[:cut])
        assert store.read("p1", "t1") == text, cut
        assert readable(path.read_bytes()) == text.encode("utf-8"), cut
        store.write("p1", "t1", text)
    store.write("p1", "t1", text + torn)
    assert store.read("p1", "t1") == text + torn
    v1 = render_transcript_v1(THREAD, [_turn(1)], [])
    store.write("p1", "t1", v1)
    assert store.read("p1", "t1") == v1
    assert readable(v1.encode("utf-8")) == v1.encode("utf-8")
    store.write("p1", "t1", "replaced")
    assert store.read("p1", "t1") == "replaced"
    assert sorted(entry.name for entry in root.threads_dir("p1").iterdir()) == ["t1.md"]


def test_store_uses_injected_fs_and_keeps_old_transcript_on_failure(tmp_path: Path) -> None:
    root = StorageRoot(tmp_path)
    TranscriptStore(root).write("p1", "t1", "old")
    failing = TranscriptStore(root, fs=FailingFs("replace"))
    with pytest.raises(StorageIOError, match=r"t1\.md"):
        failing.write("p1", "t1", "new")
    assert TranscriptStore(root).read("p1", "t1") == "old"
    assert sorted(entry.name for entry in root.threads_dir("p1").iterdir()) == ["t1.md"]


@pytest.mark.parametrize("failing_step", ["append", "fsync_file"])
def test_store_append_failure_raises_storage_io_error_naming_path_and_step(tmp_path: Path, failing_step: str) -> None:
    root = StorageRoot(tmp_path)
    text = render_transcript(THREAD, [], [])
    path = TranscriptStore(root).write("p1", "t1", text)
    fs = FailingFs(failing_step)
    with pytest.raises(StorageIOError, match=r"t1\.md") as caught:
        TranscriptStore(root, fs=fs).append(path, card_record(_card(1, None, 1.0)))
    assert isinstance(caught.value.__cause__, OSError)
    assert ("append" if failing_step == "append" else "fsync") in str(caught.value)
    assert fs.calls == ["append"] if failing_step == "append" else ["append", "fsync_file"]


def test_a_temp_file_whose_write_fails_is_removed(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        AtomicFs().write_temp(tmp_path, ".t1.md.", "not bytes")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_store_write_names_a_transcript_folder_it_cannot_create(tmp_path: Path) -> None:
    root = StorageRoot(tmp_path)
    (tmp_path / "projects").mkdir()
    (tmp_path / "projects" / "p1").write_text("a file where the project's folder goes")
    with pytest.raises(StorageIOError, match=r"cannot create transcript folder .*p1/threads") as caught:
        TranscriptStore(root).write("p1", "t1", "text")
    assert isinstance(caught.value.__cause__, OSError)


def test_store_truncate_failure_names_the_transcript(tmp_path: Path) -> None:
    missing = StorageRoot(tmp_path).transcript_path("p1", "t1")
    with pytest.raises(StorageIOError, match=r"cutting the torn tail of transcript .*t1\.md") as caught:
        TranscriptStore(StorageRoot(tmp_path)).truncate(missing, 0)
    assert isinstance(caught.value.__cause__, OSError)


def test_store_refuses_text_that_is_not_utf8_encodable_naming_the_thread(tmp_path: Path) -> None:
    from agenthost.storage import StorageError

    with pytest.raises(StorageError, match="transcript text of thread 't1' is not valid UTF-8 text"):
        TranscriptStore(StorageRoot(tmp_path)).write("p1", "t1", "lone surrogate \ud800")
    assert not StorageRoot(tmp_path).transcript_path("p1", "t1").exists()
