"""Rebuilding a lost database from the Markdown transcripts, crash-safely.

Contract:
- ``rebuild_database(root, now)`` rebuilds projects, threads, turns and action cards from
  ``projects/*/threads/*.md`` into ``system/agenthost.db.rebuild`` (truncated first, never removed: the file marks
  an unfinished rebuild; its ``-wal``/``-shm``/``-journal`` are deleted), checkpoints and closes it, then renames it
  over ``system/agenthost.db`` and fsyncs ``system/``. It returns (threads imported, turns imported, skipped), where
  ``skipped`` holds ``"<transcript path>: <why>"`` for every transcript that does not parse, lives in the wrong
  folder, or clashes with rows already imported; such a file stays where it is. A v2 transcript gives back its
  rows exactly (times, worker ids, card turns; a torn tail after its last complete record is ignored); a v1 one
  loses times and more; see storage._transcript_parser (v1 rows get ``now``; top-of-thread cards
  ``now - TOP_CARD_OFFSET_S``).
- ``mark_rebuild_started(root)`` leaves that rebuild file (empty: a valid empty database) and fsyncs ``system/``;
  a caller does this before it moves the old database away, so a crash leaves either the old database or no
  database plus the rebuild file. ``rebuild_interrupted(root)`` is True exactly in the second case: the caller
  then finishes the rebuild.
- File-system failures of the rebuild file raise ``StorageIOError`` naming it.
- ``import_transcript(db, parsed, now)`` inserts one parsed thread (its project if absent): the thread, its turns
  in seq order (each finished one right after its begin, with its worker), then its cards (v2: in log order;
  v1: the top-of-thread cards, then each turn's), and returns its number of turns; it refuses before writing
  anything (``StorageError`` naming the id) when the thread or one of its turn ids already exists, or the turns are
  not numbered 1..n. ``read_transcript_file`` parses one file (up to its last complete record) and checks that it
  lives where its ids say (``TranscriptParseError`` otherwise); ``transcript_paths`` lists the transcripts.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._database import Database
from ._dbfiles import database_files
from ._errors import StorageError, StorageIOError, UnknownThreadError, UnknownTurnError
from ._paths import StorageRoot
from ._rows import TurnFinish
from ._transcript_parser import TOP_CARD_OFFSET_S, ParsedThread, TranscriptParseError, parse_transcript
from ._transcripts import AtomicFs, readable

__all__ = [
    "import_transcript",
    "mark_rebuild_started",
    "read_transcript_file",
    "rebuild_database",
    "rebuild_interrupted",
    "transcript_paths",
]

REBUILD_NAME = "agenthost.db.rebuild"


def rebuild_interrupted(root: StorageRoot) -> bool:
    """No database, but a rebuild file: a rebuild was cut off before its final rename."""
    return not root.db_path.exists() and _rebuild_path(root).exists()


def mark_rebuild_started(root: StorageRoot) -> None:
    """Leave an empty rebuild file (a valid empty database) before the old database is moved away."""
    rebuild_path = _rebuild_path(root)
    try:
        _empty_rebuild_file(rebuild_path)
        AtomicFs().fsync_dir(rebuild_path.parent)
    except OSError as error:
        raise StorageIOError(f"cannot prepare rebuild database {str(rebuild_path)!r}: {error!r}") from error


def rebuild_database(root: StorageRoot, now: float) -> tuple[int, int, tuple[str, ...]]:
    """Rebuild into the rebuild file (restarting it from empty), then rename it over agenthost.db."""
    rebuild_path = _rebuild_path(root)
    try:
        _empty_rebuild_file(rebuild_path)
    except OSError as error:
        raise StorageIOError(f"cannot reset rebuild database {str(rebuild_path)!r}: {error!r}") from error
    db = Database.open(rebuild_path)
    try:
        counts = _import_all(db, root, now)
    except BaseException:
        db.close(checkpoint=False)
        raise
    db.close(checkpoint=True)
    try:
        os.replace(rebuild_path, root.db_path)
        AtomicFs().fsync_dir(root.system_dir)
    except OSError as error:
        raise StorageIOError(f"cannot move rebuilt database {str(rebuild_path)!r} into place: {error!r}") from error
    return counts


def _rebuild_path(root: StorageRoot) -> Path:
    return root.system_dir / REBUILD_NAME


def _empty_rebuild_file(rebuild_path: Path) -> None:
    """Delete the rebuild file's -wal/-shm/-journal and truncate it (never remove it: it marks the rebuild)."""
    for side_file in database_files(rebuild_path)[1:]:
        side_file.unlink(missing_ok=True)
    rebuild_path.write_bytes(b"")


def _import_all(db: Database, root: StorageRoot, now: float) -> tuple[int, int, tuple[str, ...]]:
    threads = turns = 0
    skipped: list[str] = []
    for path in transcript_paths(root):
        try:
            parsed = read_transcript_file(root, path)
            turns += import_transcript(db, parsed, now)
            threads += 1
        except (StorageError, OSError, UnicodeDecodeError) as error:
            skipped.append(f"{path}: {error}")
    return threads, turns, tuple(skipped)


def transcript_paths(root: StorageRoot) -> list[Path]:
    """Every ``projects/*/threads/*.md`` file, sorted."""
    return sorted(path for path in root.projects_dir.glob("*/threads/*.md") if path.is_file())


def read_transcript_file(root: StorageRoot, path: Path) -> ParsedThread:
    """Parse the transcript at ``path`` and check that it lives where its ids say it should."""
    parsed = parse_transcript(readable(path.read_bytes()).decode("utf-8"))
    expected = root.transcript_path(parsed.project_id, parsed.thread_id)
    if Path(os.path.abspath(path)) != expected:
        raise TranscriptParseError(
            f"transcript of thread {parsed.thread_id!r} in project {parsed.project_id!r} lives at {str(path)!r},"
            f" not at {str(expected)!r}"
        )
    return parsed


def import_transcript(db: Database, parsed: ParsedThread, now: float) -> int:
    """Insert the parsed thread (project if absent, thread, turns, cards); return the number of turns.

    Refused before writing anything (``StorageError`` naming the id) when the thread or one of its turn ids
    already exists, or the turns are not numbered 1..n."""
    seqs = [turn.seq for turn in parsed.turns]
    if seqs != list(range(1, len(seqs) + 1)):
        raise StorageError(f"thread {parsed.thread_id!r}: turn numbers {seqs!r} are not 1..{len(seqs)}")
    _require_absent(db, parsed)
    db.ensure_project(parsed.project_id, parsed.project_id, now)
    created_at = now if parsed.created_at is None else parsed.created_at
    db.create_thread(parsed.thread_id, parsed.project_id, parsed.title, created_at)
    for turn in parsed.turns:
        db.begin_turn(
            turn.turn_id, parsed.thread_id, turn.user_text, now if turn.created_at is None else turn.created_at
        )
        if turn.status != "pending":
            finished_at = now if turn.finished_at is None else turn.finished_at
            finish = TurnFinish(turn.turn_id, turn.status, turn.assistant_text, turn.error, finished_at, turn.worker_id)
            db.finish_turns([finish])
    for card in parsed.cards:
        at = now - TOP_CARD_OFFSET_S if card.created_at is None else card.created_at
        db.add_action_card(parsed.thread_id, card.turn_id, card.kind, card.text, at)
    for turn in parsed.turns:
        for card in turn.cards:
            db.add_action_card(parsed.thread_id, turn.turn_id, card.kind, card.text, now)
    return len(parsed.turns)


def _require_absent(db: Database, parsed: ParsedThread) -> None:
    try:
        existing = db.get_thread(parsed.thread_id)
    except UnknownThreadError:
        pass
    else:
        raise StorageError(f"thread {parsed.thread_id!r} already exists (in project {existing.project_id!r})")
    for turn in parsed.turns:
        try:
            other = db.get_turn(turn.turn_id)
        except UnknownTurnError:
            continue
        raise StorageError(f"turn id {turn.turn_id!r} already exists (in thread {other.thread_id!r})")
