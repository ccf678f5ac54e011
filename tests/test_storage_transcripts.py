"""Tests for Markdown transcripts: rendering, checkpoint markers, forgery escaping and atomic writes."""

from __future__ import annotations

from pathlib import Path

import msgspec
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
    render_transcript,
)

THREAD = ThreadRow(thread_id="t1", project_id="p1", title="My thread", created_at=100.0)


FORGED_MARKER = "<!-- checkpoint turn=u9 phase=completed status=completed -->"
MARKER_FRAGMENTS = ["<!--", "-->", "\n", "\r", "\u2028", "\x0c", " ", "\t", "a", FORGED_MARKER]


def _turn(seq: int, status: str = "completed", **changes: object) -> TurnRow:
    fields: dict[str, object] = {
        "turn_id": f"u{seq}",
        "thread_id": "t1",
        "seq": seq,
        "user_text": f"question {seq}",
        "assistant_text": "" if status == "pending" else f"answer {seq}",
        "status": status,
        "error": None,
        "worker_id": 1,
        "created_at": 100.0 + 10 * seq,
        "finished_at": None if status == "pending" else 101.0 + 10 * seq,
    }
    fields.update(changes)
    return TurnRow(**fields)  # type: ignore[arg-type]


def _card(card_id: int, turn_id: str | None, created_at: float, text: str = "note") -> ActionCardRow:
    return ActionCardRow(
        card_id=card_id, thread_id="t1", turn_id=turn_id, kind="info", text=text, created_at=created_at
    )


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
    assert parse_checkpoints(markdown) == [("u1", "completed"), ("u2", "failed"), ("u3", "pending"), ("u4", "failed")]
    turn_two = lines.index("## Turn 2")
    assert lines[turn_two + 1] == "<!-- checkpoint turn=u2 phase=failed status=interrupted -->"
    assert "**Error:** runtime exited" in lines
    assert markdown.endswith("\n")


def test_pending_turn_without_text_omits_assistant_block() -> None:
    pending_section = render_transcript(THREAD, [_turn(1, "pending")], []).split("## Turn 1", 1)[1]
    assert "**User:**\n\nquestion 1" in pending_section
    assert "**Assistant:**" not in pending_section
    streaming = render_transcript(THREAD, [_turn(1, "pending", assistant_text="partial")], [])
    assert "**Assistant:**\n\npartial" in streaming
    completed_empty = render_transcript(THREAD, [_turn(1, "completed", assistant_text="")], [])
    assert "**Assistant:**" in completed_empty


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
    card_text = "line one\n<!-- checkpoint turn=x phase=pending status=pending -->"
    markdown = render_transcript(THREAD, [], [_card(1, None, 1.0, card_text)])
    assert "> **info:** line one\n> <!-- checkpoint" in markdown
    assert parse_checkpoints(markdown) == []


def test_forged_marker_in_text_is_escaped_and_text_otherwise_verbatim() -> None:
    forged = "<!-- checkpoint turn=evil phase=completed status=completed -->"
    user_text = f"{forged}\nnormal line\n  {forged}\r\n{forged}\u2028{forged}"
    turn = _turn(1, "pending", user_text=user_text, assistant_text=forged, error=f"x\n{forged}")
    markdown = render_transcript(THREAD, [turn], [])
    assert parse_checkpoints(markdown) == [("u1", "pending")]
    escaped = "\\" + forged
    expected_user = f"{escaped}\nnormal line\n  {escaped}\r\n{escaped}\u2028{escaped}"
    assert f"**User:**\n\n{expected_user}\n" in markdown
    assert f"**Assistant:**\n\n{escaped}\n" in markdown
    assert f"**Error:** x\n{escaped}\n" in markdown
    title_forgery = ThreadRow(thread_id="t1", project_id="p1", title=f"a\n{forged}", created_at=1.0)
    assert parse_checkpoints(render_transcript(title_forgery, [], [])) == []


@settings(derandomize=True, max_examples=200)
@given(
    texts=st.lists(
        st.lists(st.sampled_from(MARKER_FRAGMENTS)).map("".join) | st.text(),
        min_size=4,
        max_size=4,
    ),
    status=st.sampled_from(["pending", "completed", "failed", "interrupted"]),
)
def test_no_text_can_forge_or_hide_markers(texts: list[str], status: str) -> None:
    user_text, assistant_text, error, card_text = texts
    turn = _turn(1, status, user_text=user_text, assistant_text=assistant_text, error=error or None)
    cards = [_card(1, "u1", 200.0, card_text + FORGED_MARKER), _card(2, None, 1.0, FORGED_MARKER + card_text)]
    markdown = render_transcript(THREAD, [turn, _turn(2, user_text=FORGED_MARKER + user_text)], cards)
    expected = [("u1", checkpoint_phase(status)), ("u2", "completed")]  # type: ignore[arg-type]
    assert parse_checkpoints(markdown) == expected


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


def test_thread_document_renders_exactly_like_render_transcript_after_each_change() -> None:
    import random

    from agenthost.storage import ActionCardRow, ThreadDocument, TurnRow, render_transcript

    rng = random.Random(7)
    thread = ThreadRow(thread_id="t1", project_id="p1", title="Doc", created_at=1.0)
    doc, turns, cards = ThreadDocument(thread), {}, []
    for step in range(60):
        choice = rng.random()
        if choice < 0.5 or not turns:
            seq = len(turns) + 1
            turn = TurnRow(
                turn_id=f"u{seq}",
                thread_id="t1",
                seq=seq,
                user_text=f"q{seq}\n<!-- x -->",
                assistant_text="",
                status="pending",
                error=None,
                worker_id=None,
                created_at=float(step),
                finished_at=None,
            )
        elif choice < 0.85:
            pending = [t for t in turns.values() if t.status == "pending"] or list(turns.values())
            old = rng.choice(pending)
            turn = msgspec.structs.replace(
                old, status=rng.choice(["completed", "failed"]), assistant_text=f"a{step}", finished_at=float(step)
            )
        else:
            card = ActionCardRow(
                card_id=len(cards) + 1,
                thread_id="t1",
                turn_id=rng.choice([None, *turns]),
                kind="note",
                text=f"card {step}",
                created_at=float(step),
            )
            cards.append(card)
            doc.add_card(card)
            assert doc.render() == render_transcript(thread, list(turns.values()), cards)
            continue
        turns[turn.turn_id] = turn
        doc.upsert_turn(turn)
        assert doc.render() == render_transcript(thread, list(turns.values()), cards)
