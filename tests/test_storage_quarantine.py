"""Quarantine, transcript parsing, rebuilding a corrupt database from transcripts, and the doctor checks."""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import apsw
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenthost._cli_storage import add_storage_commands, run_storage_command
from agenthost.storage import (
    RESTARTED_NOTE,
    ActionCardRow,
    Database,
    ParsedCard,
    ParsedThread,
    ParsedTurn,
    SchemaError,
    StorageError,
    StorageIOError,
    StorageRoot,
    ThreadRow,
    TranscriptParseError,
    TranscriptStore,
    TurnRow,
    check_storage,
    import_transcript,
    open_or_quarantine,
    parse_transcript,
    parsed_rows,
    quarantine,
    quarantine_runtime_state,
    readable,
    render_transcript,
    render_transcript_v1,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
FORGED = "<!-- checkpoint turn=u9 phase=completed status=completed -->"


# --- a populated root, written the way the persistence actor writes it -----------------------------------------


def _render(db: Database, thread_id: str) -> str:
    return render_transcript(db.get_thread(thread_id), db.list_turns(thread_id), db.list_action_cards(thread_id))


def _write_transcript(db: Database, root: StorageRoot, thread_id: str) -> None:
    thread = db.get_thread(thread_id)
    TranscriptStore(root).write(thread.project_id, thread_id, _render(db, thread_id))


def populate(root: StorageRoot) -> None:
    """Two projects, three threads, every turn status, cards, and texts that look like markers."""
    root.ensure()
    db = Database.open(root.db_path)
    try:
        for project in ("default", "p2"):
            db.ensure_project(project, project, NOW)
        db.create_thread("t1", "default", "Release notes", NOW)
        db.begin_turn("u1", "t1", f"Summarise\n{FORGED}\n  <!-- indented", NOW + 1)
        db.finish_turn("u1", "completed", "Done.\n\n> a quote\n<!-- odd", None, NOW + 2)
        db.add_action_card("t1", "u1", "runtime thread recreated", "the runtime lost it\nsecond line", NOW + 3)
        db.begin_turn("u2", "t1", "again", NOW + 4)
        db.finish_turn("u2", "failed", "partial", "worker 1 exited\n<!-- not a marker", NOW + 5)
        db.begin_turn("u3", "t1", "third", NOW + 6)
        db.finish_turn("u3", "interrupted", "", "interrupted by the user", NOW + 7)
        db.begin_turn("u4", "t1", "still running", NOW + 8)
        db.create_thread("t2", "default", "Empty thread", NOW + 9)
        db.create_thread("t3", "p2", "Other project", NOW + 10)
        db.add_action_card("t3", None, "info", "created before any turn", NOW + 10)
        db.begin_turn("u5", "t3", "", NOW + 11)
        db.finish_turn("u5", "completed", "answer to an empty message", None, NOW + 12)
        db.save_mapping("t1", 1, "rt-1", NOW)
        for thread_id in ("t1", "t2", "t3"):
            _write_transcript(db, root, thread_id)
    finally:
        db.close()


def _content(db: Database) -> dict[str, Any]:
    """What a transcript preserves: thread ids/titles, and per turn its ids, texts, status and error."""
    content = {}
    for thread in db.list_threads():
        turns = [
            (turn.turn_id, turn.seq, turn.user_text, turn.assistant_text, turn.status, turn.error)
            for turn in db.list_turns(thread.thread_id)
        ]
        cards = [(card.kind, card.text) for card in db.list_action_cards(thread.thread_id)]
        content[thread.thread_id] = (thread.project_id, thread.title, turns, cards)
    return content


def _transcripts(root: StorageRoot) -> dict[str, bytes]:
    return {str(path.relative_to(root.root)): path.read_bytes() for path in sorted(root.projects_dir.rglob("*.md"))}


@pytest.fixture
def root(tmp_path: Path) -> StorageRoot:
    storage_root = StorageRoot(tmp_path / "root")
    populate(storage_root)
    return storage_root


# --- parse_transcript ------------------------------------------------------------------------------------------

THREAD = ThreadRow(thread_id="t1", project_id="p1", title="My thread", created_at=0.0)
# No '*', '>' or '\\': with those excluded a text cannot look like a block label, a card or a pre-escaped marker,
# so the rendering is unambiguous and the parser must give back exactly the original rows.
PLAIN_FRAGMENTS = [
    "<!--",
    "-->",
    "\n",
    "\r",
    "\r\n",
    "\u2028",
    "\x0c",
    "\x85",
    " ",
    "\t",
    "a",
    "é",
    "## Turn 2",
    "`",
    FORGED,
    "**User:**",
]
# Everything the renderer itself emits between blocks, to make the rendering ambiguous on purpose.
TRICKY_FRAGMENTS = [
    *PLAIN_FRAGMENTS,
    "\n\n",
    "**Assistant:**",
    "**Error:** ",
    "> ",
    "> **info:** x",
    "\\",
    "\\<!--",
    "**",
    ":** ",
    "\n\n## Turn 1\n",
]


def _texts(fragments: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(fragments), max_size=12).map("".join)


@st.composite
def _threads(draw: Any, fragments: list[str], exact: bool) -> tuple[ThreadRow, list[TurnRow], list[ActionCardRow]]:
    text = _texts(fragments)
    title = draw(
        st.text(st.sampled_from("ab é#`-"), min_size=1, max_size=10).map(str.strip).filter(bool) if exact else text
    )
    thread = ThreadRow(thread_id="t1", project_id="p1", title=title, created_at=0.0)
    turns = []
    for seq in range(1, draw(st.integers(0, 4)) + 1):
        status = draw(st.sampled_from(["pending", "completed", "failed", "interrupted"]))
        pending = status == "pending"
        turns.append(
            TurnRow(
                turn_id=f"u{seq}",
                thread_id="t1",
                seq=seq,
                user_text=draw(text),
                assistant_text="" if pending and exact else draw(text),
                status=status,
                error=None if pending else draw(st.none() | text),
                worker_id=None,
                created_at=float(seq),
                finished_at=None if pending else float(seq),
            )
        )
    cards = []
    turn_ids = [turn.turn_id for turn in turns]
    # Card texts lose their line-break characters (each line becomes "> line"), so exact ones are single lines.
    card_text = st.lists(st.sampled_from(["x", " ", "<!--", "é", "`"]), max_size=6).map("".join) if exact else text
    for card_id in range(1, draw(st.integers(0, 3)) + 1):
        tied = draw(st.sampled_from([None, *turn_ids]))
        created = 0.0 if tied is None else 9.0
        kind = draw(st.sampled_from(["info", "approval reset"]))
        cards.append(
            ActionCardRow(
                card_id=card_id, thread_id="t1", turn_id=tied, kind=kind, text=draw(card_text), created_at=created
            )
        )
    return thread, turns, cards


def _comparable(turns: list[TurnRow]) -> list[tuple[Any, ...]]:
    return [(t.turn_id, t.seq, t.user_text, t.assistant_text, t.status, t.error) for t in turns]


@settings(derandomize=True, max_examples=400, deadline=None)
@given(_threads(TRICKY_FRAGMENTS, exact=False))
def test_parse_transcript_inverts_render_exactly(rows: tuple[ThreadRow, list[TurnRow], list[ActionCardRow]]) -> None:
    """v2 reads back every row exactly, whatever the texts hold (no candidate splits): times, statuses, errors,
    workers, card turns; only a pending turn's partial text and card ids are not in the transcript."""
    thread, turns, cards = rows
    turns = [msgspec.structs.replace(t, assistant_text="") if t.status == "pending" else t for t in turns]
    turns = [msgspec.structs.replace(t, worker_id=None if t.status == "pending" else 2) for t in turns]
    markdown = render_transcript(thread, turns, cards)
    parsed_thread, parsed_turns, parsed_cards = parsed_rows(parse_transcript(markdown), NOW)
    assert parsed_thread == thread
    assert parsed_turns == turns
    card_fields = sorted((c.turn_id or "", c.kind, c.text, c.created_at) for c in cards)
    assert sorted((c.turn_id or "", c.kind, c.text, c.created_at) for c in parsed_cards) == card_fields
    assert render_transcript(parsed_thread, parsed_turns, parsed_cards) == markdown


def test_parse_transcript_refuses_a_torn_v2_tail_that_readable_cuts() -> None:
    turn = TurnRow(
        turn_id="u1",
        thread_id="t1",
        seq=1,
        user_text="q",
        assistant_text="a",
        status="completed",
        error=None,
        worker_id=1,
        created_at=1.0,
        finished_at=2.0,
    )
    whole = render_transcript(THREAD, [turn], []).encode()
    begun = render_transcript(THREAD, [msgspec.structs.replace(turn, status="pending", finished_at=None)], [])
    for cut in range(len(begun.encode()) + 1, len(whole)):  # every torn end record
        with pytest.raises(TranscriptParseError, match="no complete v2 record"):
            parse_transcript(whole[:cut].decode("utf-8", errors="ignore"))
        assert readable(whole[:cut]) == begun.encode()
    assert parse_transcript(whole.decode()).turns[0].status == "completed"


@settings(derandomize=True, max_examples=300, deadline=None)
@given(_threads(PLAIN_FRAGMENTS, exact=True))
def test_v1_parse_inverts_the_v1_render_exactly(rows: tuple[ThreadRow, list[TurnRow], list[ActionCardRow]]) -> None:
    thread, turns, cards = rows
    markdown = render_transcript_v1(thread, turns, cards)
    parsed = parse_transcript(markdown)
    assert (parsed.thread_id, parsed.project_id, parsed.title) == ("t1", "p1", thread.title)
    assert _comparable(parsed_rows(parsed)[1]) == _comparable(turns)
    top = [(c.kind, c.text) for c in sorted(cards, key=lambda c: c.card_id) if c.turn_id is None]
    assert [(c.kind, c.text) for c in parsed.cards] == top
    for turn in parsed.turns:
        tied = [(c.kind, c.text) for c in sorted(cards, key=lambda c: c.card_id) if c.turn_id == turn.turn_id]
        assert [(c.kind, c.text) for c in turn.cards] == tied
    assert render_transcript_v1(*parsed_rows(parsed, NOW)) == markdown


@settings(derandomize=True, max_examples=400, deadline=None)
@given(_threads(TRICKY_FRAGMENTS, exact=False))
def test_v1_parse_rerenders_identically_even_when_ambiguous(
    rows: tuple[ThreadRow, list[TurnRow], list[ActionCardRow]],
) -> None:
    markdown = render_transcript_v1(*rows)
    parsed = parse_transcript(markdown)
    assert [turn.turn_id for turn in parsed.turns] == [turn.turn_id for turn in rows[1]]
    assert [turn.status for turn in parsed.turns] == [turn.status for turn in rows[1]]
    assert render_transcript_v1(*parsed_rows(parsed, NOW)) == markdown


def test_v1_parse_reads_escaped_markers_back_and_keeps_block_structure() -> None:
    turn = TurnRow(
        turn_id="u1",
        thread_id="t1",
        seq=1,
        user_text=f"hi\n{FORGED}",
        assistant_text="<!-- a",
        status="failed",
        error="\t<!-- e",
        worker_id=2,
        created_at=1.0,
        finished_at=2.0,
    )
    markdown = render_transcript_v1(THREAD, [turn], [])
    assert "\n\\<!-- checkpoint turn=u9" in markdown
    parsed = parse_transcript(markdown)
    assert parsed.turns == (
        ParsedTurn(
            turn_id="u1", seq=1, status="failed", user_text=f"hi\n{FORGED}", assistant_text="<!-- a", error="\t<!-- e"
        ),
    )


def test_v1_parse_prefers_cards_and_last_error_when_ambiguous() -> None:
    turn = TurnRow(
        turn_id="u1",
        thread_id="t1",
        seq=1,
        user_text="q",
        assistant_text="a",
        status="failed",
        error="boom",
        worker_id=None,
        created_at=1.0,
        finished_at=2.0,
    )
    card = ActionCardRow(card_id=1, thread_id="t1", turn_id="u1", kind="approval reset", text="reset", created_at=3.0)
    parsed = parse_transcript(render_transcript_v1(THREAD, [turn], [card]))
    assert parsed.turns[0].error == "boom"
    assert parsed.turns[0].cards == (ParsedCard(kind="approval reset", text="reset"),)


def test_v1_pending_turn_keeps_a_pasted_assistant_label_in_the_user_text() -> None:
    text = "see this:\n\n**Assistant:**\n\nold answer"
    turn = TurnRow(
        turn_id="u1",
        thread_id="t1",
        seq=1,
        user_text=text,
        assistant_text="",
        status="pending",
        error=None,
        worker_id=None,
        created_at=1.0,
        finished_at=None,
    )
    assert parse_transcript(render_transcript_v1(THREAD, [turn], [])).turns[0].user_text == text


@pytest.mark.parametrize(
    "markdown",
    [
        "",
        "no heading\n",
        "# t\n\nthread `t1` | project `p1`",  # no final newline
        "# t\n\nthread `t1` | project `p1`\n\nstray paragraph\n",
        "# t\n\nthread `t1` | project `p1`\n\n## Turn 1\n<!-- checkpoint turn=u1 phase=failed status=completed -->"
        "\n\n**User:**\n\n**Assistant:**\n",  # phase and status disagree
        "# t\n\nthread `t1` | project `p1`\n\n## Turn 1\n<!-- checkpoint turn=u1 phase=pending status=pending -->"
        "\n\nno user label\n",
    ],
)
def test_parse_transcript_refuses_what_render_cannot_produce(markdown: str) -> None:
    with pytest.raises(TranscriptParseError):
        parse_transcript(markdown)


# --- quarantine ------------------------------------------------------------------------------------------------


def test_quarantine_moves_paths_keeping_their_place_under_a_timestamped_folder(root: StorageRoot) -> None:
    wal = root.system_dir / "agenthost.db-wal"
    db_bytes = root.db_path.read_bytes()
    report = quarantine(root, [root.db_path, wal], "Corrupt database!", NOW)
    assert report.moved == ("system/agenthost.db",)  # the -wal did not exist: skipped
    assert report.into == str(root.system_dir / "quarantine" / "20231114T221320Z-corrupt-database")
    assert (Path(report.into) / "system" / "agenthost.db").read_bytes() == db_bytes
    assert not root.db_path.exists()
    again = quarantine(root, [root.transcript_path("default", "t2")], "corrupt database", NOW)
    assert again.into.endswith("20231114T221320Z-corrupt-database-2")
    assert again.moved == ("projects/default/threads/t2.md",)


def test_quarantine_refuses_paths_outside_the_root_and_moves_nothing_when_nothing_exists(
    root: StorageRoot, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("mine")
    with pytest.raises(StorageError, match=r"elsewhere\.txt"):
        quarantine(root, [outside], "x", NOW)
    assert outside.exists()
    report = quarantine(root, [root.system_dir / "nothing-here"], "x", NOW)
    assert report.moved == () and report.into == ""
    assert not (root.system_dir / "quarantine").exists()


def test_quarantine_runtime_state_moves_everything_and_recreates_the_folder(root: StorageRoot) -> None:
    (root.runtime_state_dir / "thread-a.json").write_text("{}")
    (root.runtime_state_dir / "sub").mkdir()
    (root.runtime_state_dir / "sub" / "x").write_text("x")
    report = quarantine_runtime_state(root, NOW, "stale runtime state")
    assert report.moved == ("system/runtime-state/sub", "system/runtime-state/thread-a.json")
    assert (Path(report.into) / "system" / "runtime-state" / "sub" / "x").read_text() == "x"
    assert root.runtime_state_dir.is_dir() and list(root.runtime_state_dir.iterdir()) == []
    assert quarantine_runtime_state(root, NOW, "again").moved == ()


# --- open_or_quarantine ----------------------------------------------------------------------------------------


def _corrupt(path: Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "random-bytes":
        path.write_bytes(rng.randbytes(len(data)))
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # garbage over the header
        path.write_bytes(rng.randbytes(100) + data[100:])


@pytest.mark.parametrize("how", ["random-bytes", "truncated", "garbage-header"])
def test_corrupt_database_is_quarantined_and_rebuilt_from_transcripts(root: StorageRoot, how: str, seed: int) -> None:
    db = Database.open(root.db_path)
    before = _content(db)
    db.close()
    transcripts = _transcripts(root)
    _corrupt(root.db_path, how, random.Random(seed))
    corrupt_bytes = root.db_path.read_bytes()

    db, report = open_or_quarantine(root, NOW + 100)
    try:
        assert report is not None
        assert report.moved == ("system/agenthost.db",)
        assert Path(report.into).name == "20231114T221500Z-corrupt-database"
        assert (Path(report.into) / "system" / "agenthost.db").read_bytes() == corrupt_bytes
        assert (report.rebuilt_threads, report.rebuilt_turns, report.skipped) == (3, 5, ())
        assert _content(db) == before
        assert db.quick_check() == ["ok"]
        assert [row.turn_id for row in db.pending_turns()] == ["u4"]
        for thread in db.list_threads():  # the rebuilt rows render to the very same files
            rendered = _render(db, thread.thread_id)
            key = str(root.transcript_path(thread.project_id, thread.thread_id).relative_to(root.root))
            assert rendered.encode() == transcripts[key]
    finally:
        db.close()
    assert _transcripts(root) == transcripts
    assert not (root.system_dir / "agenthost.db.rebuild").exists()


def test_sound_database_is_opened_untouched(root: StorageRoot) -> None:
    db, report = open_or_quarantine(root, NOW)
    db.close()
    assert report is None
    assert not (root.system_dir / "quarantine").exists()


def test_newer_schema_is_not_quarantined(root: StorageRoot) -> None:
    conn = apsw.Connection(str(root.db_path))
    conn.pragma("user_version", 99)
    conn.close()
    with pytest.raises(SchemaError, match="99"):
        open_or_quarantine(root, NOW)
    assert root.db_path.exists()
    assert not (root.system_dir / "quarantine").exists()


def test_unopenable_database_is_not_quarantined(tmp_path: Path) -> None:
    storage_root = StorageRoot(tmp_path / "root")
    storage_root.ensure()
    storage_root.db_path.mkdir()  # a folder where the file should be: cannot open, but not corrupt
    with pytest.raises(StorageIOError):
        open_or_quarantine(storage_root, NOW)
    assert storage_root.db_path.is_dir()
    assert not (storage_root.system_dir / "quarantine").exists()


def test_interrupted_rebuild_is_finished_on_the_next_open(root: StorageRoot) -> None:
    db = Database.open(root.db_path)
    before = _content(db)
    db.close()
    # The state a crash leaves between the quarantine and the final rename: no database, a rebuild file.
    quarantine(root, [root.db_path], "corrupt database", NOW)
    (root.system_dir / "agenthost.db.rebuild").write_bytes(b"half-written")
    db, report = open_or_quarantine(root, NOW)
    try:
        assert report is not None and report.moved == () and "interrupted rebuild" in report.reason
        assert _content(db) == before
    finally:
        db.close()


def test_rebuild_skips_a_transcript_that_does_not_parse(root: StorageRoot) -> None:
    bad = root.transcript_path("default", "t2")
    bad.write_text("# hand-edited\n\nnot a transcript\n")
    _corrupt(root.db_path, "random-bytes", random.Random(1))
    db, report = open_or_quarantine(root, NOW)
    try:
        assert report is not None and report.rebuilt_threads == 2
        assert len(report.skipped) == 1 and str(bad) in report.skipped[0]
        assert sorted(_content(db)) == ["t1", "t3"]
    finally:
        db.close()
    assert bad.exists()


# --- health checks / doctor ------------------------------------------------------------------------------------


def _by_kind(findings: list[Any]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for finding in findings:
        kinds.setdefault(finding.kind, []).append(finding.status)
    return kinds


def test_healthy_root_has_only_ok_findings_besides_the_pending_turn(root: StorageRoot) -> None:
    db = Database.open(root.db_path)
    try:
        findings = check_storage(db, root)
    finally:
        db.close()
    assert [(f.kind, f.status) for f in findings if f.status != "ok"] == [("pending-turn", "problem")]
    assert {
        "integrity",
        "project-folders",
        "transcripts",
        "orphan-transcripts",
        "temp-files",
        "mappings",
        "quarantine",
    } <= set(_by_kind(findings))


def _damage(root: StorageRoot) -> None:
    root.transcript_path("default", "t2").unlink()  # missing transcript
    t3 = root.transcript_path("p2", "t3")
    t3.write_text(t3.read_text().replace("phase=completed status=completed", "phase=pending status=pending"))
    (root.threads_dir("default") / ".t1.md.abc123.tmp").write_text("torn")
    orphan = ThreadRow(thread_id="t9", project_id="default", title="Orphan", created_at=0.0)
    orphan_turn = TurnRow(
        turn_id="u9",
        thread_id="t9",
        seq=1,
        user_text="lost",
        assistant_text="found",
        status="completed",
        error=None,
        worker_id=None,
        created_at=1.0,
        finished_at=2.0,
    )
    TranscriptStore(root).write("default", "t9", render_transcript(orphan, [orphan_turn], []))
    (root.threads_dir("default") / "notes.md").write_text("my own notes\n")


def test_check_storage_reports_problems_without_writing(root: StorageRoot) -> None:
    _damage(root)
    transcripts = _transcripts(root)
    db = Database.open(root.db_path)
    try:
        findings = check_storage(db, root)
        assert [turn.turn_id for turn in db.pending_turns()] == ["u4"]
    finally:
        db.close(checkpoint=False)
    problems = {
        (f.kind, Path(f.subject).name if "/" in f.subject else f.subject, f.detail)
        for f in findings
        if f.status == "problem"
    }
    assert problems == {
        ("pending-turn", "u4 (thread t1)", "pending in the database; with the host stopped it never finishes"),
        ("transcript", "t2.md", "missing"),
        # the edited end record no longer matches its checksum: it reads as a torn tail, and the end is missing
        (
            "transcript",
            "t3.md",
            "262 bytes of an incomplete record at its end; lacks 1 records: the end of turn 1 (completed)",
        ),
        ("orphan-transcript", "notes.md", "no thread in the database"),
        ("orphan-transcript", "t9.md", "no thread in the database"),
        ("temp-file", ".t1.md.abc123.tmp", "left over from an interrupted write"),
    }
    assert _transcripts(root) == transcripts


def test_check_storage_repairs_everything_it_reports(root: StorageRoot) -> None:
    _damage(root)
    db = Database.open(root.db_path)
    try:
        findings = check_storage(db, root, repair=True, now=NOW + 50)
        assert [f for f in findings if f.status == "problem"] == []
        assert sorted(f.kind for f in findings if f.status == "repaired") == [
            "orphan-transcript",
            "orphan-transcript",
            "pending-turn",
            "temp-file",
            "transcript",
            "transcript",
        ]
        u4 = db.get_turn("u4")
        assert (u4.status, u4.error) == ("failed", RESTARTED_NOTE)
        assert [turn.user_text for turn in db.list_turns("t9")] == ["lost"]  # the orphan was imported
        again = check_storage(db, root)
        assert [f for f in again if f.status != "ok"] == []
        for thread in db.list_threads():
            expected = _render(db, thread.thread_id)
            assert root.transcript_path(thread.project_id, thread.thread_id).read_text() == expected
    finally:
        db.close()
    quarantined = list((root.system_dir / "quarantine").glob("*-orphan-transcript/projects/default/threads/notes.md"))
    assert len(quarantined) == 1
    assert not list(root.projects_dir.rglob(".*.tmp"))


def test_missing_project_folder_is_recreated(root: StorageRoot) -> None:
    for path in root.threads_dir("p2").iterdir():
        path.unlink()
    root.threads_dir("p2").rmdir()
    db = Database.open(root.db_path)
    try:
        findings = check_storage(db, root, repair=True, now=NOW)
    finally:
        db.close()
    assert ("project-folder", "repaired") in {(f.kind, f.status) for f in findings}
    assert root.transcript_path("p2", "t3").is_file()


def _doctor(root: StorageRoot, *extra: str) -> int:
    parser = argparse.ArgumentParser(prog="agenthost")
    add_storage_commands(parser.add_subparsers(dest="command", required=True))
    return run_storage_command(parser.parse_args(["doctor", "--root", str(root.root), *extra]))


def test_doctor_cli_reports_then_repairs(root: StorageRoot, capsys: pytest.CaptureFixture[str]) -> None:
    _damage(root)
    assert _doctor(root) == 1
    report = capsys.readouterr().out.splitlines()
    pending = "[problem] pending-turn u4 (thread t1): pending in the database; with the host stopped it never finishes"
    assert pending in report
    assert all(line.startswith(("[ok] ", "[problem] ")) for line in report)
    assert _doctor(root, "--repair") == 0
    assert any(line.startswith("[repaired] transcript ") for line in capsys.readouterr().out.splitlines())
    assert _doctor(root) == 0
    assert all(line.startswith("[ok] ") for line in capsys.readouterr().out.splitlines())


def test_doctor_cli_quarantines_a_corrupt_database_only_with_repair(
    root: StorageRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    _corrupt(root.db_path, "garbage-header", random.Random(7))
    assert _doctor(root) == 1
    assert "[problem] database " in capsys.readouterr().out
    assert not (root.system_dir / "quarantine").exists()
    assert _doctor(root, "--repair") == 0
    out = capsys.readouterr().out
    assert "[repaired] database " in out and "rebuilt 3 threads, 5 turns" in out
    assert "[repaired] pending-turn u4 (thread t1)" in out


def test_doctor_cli_refuses_repair_while_the_host_holds_the_lock(
    root: StorageRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl

    lock_path = root.system_dir / "agenthost.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        assert _doctor(root, "--repair") == 1
        assert "stop it before repairing" in capsys.readouterr().out
    db = Database.open(root.db_path)
    try:
        assert [turn.turn_id for turn in db.pending_turns()] == ["u4"]
    finally:
        db.close()


def test_import_transcript_refuses_gapped_turn_numbers_before_writing(tmp_path: Path) -> None:
    storage_root = StorageRoot(tmp_path / "r")
    storage_root.ensure()
    parsed = ParsedThread(
        thread_id="t1",
        project_id="p1",
        title="T",
        turns=(ParsedTurn(turn_id="u1", seq=2, status="completed", user_text="a", assistant_text="b", error=None),),
    )
    db = Database.open(storage_root.db_path)
    try:
        with pytest.raises(StorageError, match=r"thread 't1': turn numbers \[2\] are not 1..1"):
            import_transcript(db, parsed, NOW)
        assert (db.list_projects(), db.list_threads()) == ([], [])
    finally:
        db.close()


def test_start_up_checks_only_the_threads_changed_since_their_transcript_was_synced(root: StorageRoot) -> None:
    db = Database.open(root.db_path)
    try:
        assert {t.thread_id for t in db.dirty_transcripts()} == {"t1", "t2", "t3"}  # never synced yet
        check_storage(db, root, repair=True, now=NOW, full=False)  # repairs and unmarks what it checked
        assert db.dirty_transcripts() == []
        root.transcript_path("default", "t2").unlink()  # damaged behind the database's back: not looked at
        db.begin_turn("u9", "t3", "a change", NOW)  # a committed change marks its thread in the same transaction
        assert [t.thread_id for t in db.dirty_transcripts()] == ["t3"]
        findings = check_storage(db, root, full=False, pending_turns=False)  # as the host runs it
        problems = {(f.kind, Path(f.subject).name) for f in findings if f.status == "problem"}
        assert problems == {("transcript", "t3.md")}  # only the changed thread is read at start-up
        assert ("transcript", "t2.md") in {
            (f.kind, Path(f.subject).name) for f in check_storage(db, root) if f.status == "problem"
        }  # the full check (doctor) still finds the other one
    finally:
        db.close()
