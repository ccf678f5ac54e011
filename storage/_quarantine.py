"""Quarantine of damaged storage files, the transcript parser, and rebuilding a lost database from transcripts.

Contract:
- ``quarantine(root, paths, reason, now)`` moves every existing path of ``paths`` (files or folders, in order) with
  ``os.rename`` (same filesystem, so each move is atomic) into
  ``<root>/system/quarantine/<UTC YYYYmmddTHHMMSSZ of now>-<reason slug>/``, keeping each path relative to the
  root (``system/agenthost.db`` stays ``system/agenthost.db`` inside the folder, so names never clash). Missing
  paths are skipped; when none exists no folder is made and ``into`` is "". A taken folder name gets ``-2``,
  ``-3``... A path outside the root, or inside ``system/quarantine``, raises ``StorageError`` naming it; a failed
  move raises ``StorageIOError`` naming it (paths moved before it stay moved). ``moved`` holds root-relative POSIX
  paths. The slug is the reason lower-cased, runs of other characters than ``a-z0-9`` as ``-``, at most 40.
- ``quarantine_runtime_state(root, now, reason)`` moves ``system/runtime-state`` aside in one rename and recreates
  it empty; ``moved`` lists the entries it held (nothing to move: nothing moved, the folder is still ensured).
- ``open_or_quarantine(root, now)`` = ``Database.open`` + ``quick_check``. On corruption only (``StorageCorruptError``
  or an apsw CorruptError / NotADBError cause; NOT a newer schema, NOT permission or other I/O errors, which
  propagate untouched) it quarantines ``agenthost.db`` and its ``-wal``/``-shm``/``-journal`` (reason "corrupt
  database") and rebuilds projects, threads, turns and action cards from ``projects/*/threads/*.md``. The rebuild
  goes into ``system/agenthost.db.rebuild``, which exists from before the quarantine until it is renamed over
  ``agenthost.db``; a crash anywhere leaves either the corrupt DB (quarantined again next time) or no DB plus that
  file, which the next call takes as "finish the interrupted rebuild" (report reason says so, ``moved`` empty).
- What a transcript cannot give back: created/finished times (all become ``now``; top-of-thread cards ``now - 1``
  so they still render above the turns), worker ids, an empty title (the heading shows the thread id, which
  becomes the title), line breaks in titles and card texts (rendered as spaces / ``\\n``), partial assistant text
  of a pending turn (the DB stores it as ""), and which turn an untied card followed (it becomes tied to it). A
  transcript that does not parse, lives in the wrong folder, or clashes with rows already imported is skipped
  and listed in ``skipped``; the file stays where it is.
- ``parse_transcript(markdown)`` inverts ``render_transcript``: ``render_transcript(*parsed_rows(parse(md), t))``
  is byte-identical to ``md`` for every output of the renderer (checked before returning; anything else raises
  ``TranscriptParseError``). The rows are the original ones (up to the losses above) whenever the rendering is
  unambiguous. It is ambiguous only when a text itself contains what the renderer emits between blocks: a
  paragraph starting with ``**Assistant:**`` / ``**Error:** `` or a ``> **kind:** `` quote at the end of a text,
  or a line starting with ``\\<!--`` (read back as ``<!--``). The parser then prefers, in order: the most trailing
  cards, the last ``**Error:**`` paragraph, no assistant block for a pending turn, the first ``**Assistant:**``;
  at most ``MAX_TURN_CANDIDATES`` decompositions are tried per turn (the first one fits unless a text is built to
  defeat the parser).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import apsw
import msgspec

from ._database import Database
from ._errors import (
    StorageCorruptError,
    StorageError,
    StorageIOError,
    UnknownThreadError,
    UnknownTurnError,
)
from ._paths import StorageRoot, private_mkdir
from ._rows import ActionCardRow, ThreadRow, TurnRow, TurnStatus
from ._transcripts import AtomicFs, render_transcript

__all__ = [
    "ParsedCard",
    "ParsedThread",
    "ParsedTurn",
    "QuarantineReport",
    "TranscriptParseError",
    "import_transcript",
    "open_or_quarantine",
    "parse_transcript",
    "parsed_rows",
    "quarantine",
    "quarantine_dir",
    "quarantine_runtime_state",
    "read_transcript_file",
    "transcript_paths",
]

DB_SUFFIXES: tuple[str, ...] = ("", "-wal", "-shm", "-journal")
REBUILD_NAME = "agenthost.db.rebuild"
TOP_CARD_OFFSET_S = 1.0
MAX_TURN_CANDIDATES = 1000  # decompositions tried per turn before giving up (bounds pathological texts)

_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_HEADER_RE = re.compile(rf"# ([^\n]*)\n\nthread `({_ID})` \| project `({_ID})`")
_TURN_RE = re.compile(
    rf"\n\n## Turn ([0-9]+)\n<!-- checkpoint turn=({_ID}) phase=(?:pending|completed|failed)"
    r" status=(pending|completed|failed|interrupted) -->"
)
# The inverse of the renderer's marker escape: a backslash before "<!--" at a line start (any str.splitlines break).
_ESCAPED_COMMENT_RE = re.compile(r"(^|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029])([ \t]*)\\<!--")
_USER_LABEL = "\n\n**User:**"
_ASSISTANT_LABEL = "\n\n**Assistant:**"
_ERROR_LABEL = "\n\n**Error:** "
_BLOCK_BREAK = "\n\n"
_SLUG_RE = re.compile(r"[^a-z0-9]+")
_SLUG_MAX = 40


class TranscriptParseError(StorageError):
    """The text is not an output of ``render_transcript``; the message says where it stops matching."""


class QuarantineReport(msgspec.Struct, frozen=True, kw_only=True):
    """What was moved aside (root-relative paths) into which folder, and what a rebuild recovered."""

    moved: tuple[str, ...]
    into: str
    reason: str
    rebuilt_threads: int = 0
    rebuilt_turns: int = 0
    skipped: tuple[str, ...] = ()  # "<transcript path>: <why>" for transcripts the rebuild could not use


class ParsedCard(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    text: str


class ParsedTurn(msgspec.Struct, frozen=True, kw_only=True):
    turn_id: str
    seq: int
    status: TurnStatus
    user_text: str
    assistant_text: str
    error: str | None
    cards: tuple[ParsedCard, ...] = ()


class ParsedThread(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    project_id: str
    title: str
    cards: tuple[ParsedCard, ...] = ()  # cards above the first turn
    turns: tuple[ParsedTurn, ...] = ()


# --- quarantine ----------------------------------------------------------------------------------------------


def quarantine_dir(root: StorageRoot) -> Path:
    return root.system_dir / "quarantine"


def quarantine(root: StorageRoot, paths: Sequence[Path], reason: str, now: float) -> QuarantineReport:
    """Move the existing ``paths`` into a new timestamped quarantine folder (see the module contract)."""
    relative = [_relative_to_root(root, Path(path)) for path in paths]
    existing = [rel for rel in relative if os.path.lexists(root.root / rel)]
    if not existing:
        return QuarantineReport(moved=(), into="", reason=reason)
    folder = _claim_folder(root, reason, now)
    fs = AtomicFs()
    moved: list[str] = []
    for rel in existing:
        source, target = root.root / rel, folder / rel
        try:
            private_mkdir(target.parent)
            os.rename(source, target)
            fs.fsync_dir(source.parent)
            fs.fsync_dir(target.parent)
        except OSError as error:
            raise StorageIOError(
                f"quarantining {str(source)!r} into {str(folder)!r} failed after moving {moved!r}: {error!r}"
            ) from error
        moved.append(rel.as_posix())
    return QuarantineReport(moved=tuple(moved), into=str(folder), reason=reason)


def quarantine_runtime_state(root: StorageRoot, now: float, reason: str) -> QuarantineReport:
    """Move ``system/runtime-state`` aside and recreate it empty."""
    state_dir = root.runtime_state_dir
    entries = sorted(entry.name for entry in state_dir.iterdir()) if state_dir.is_dir() else []
    report = QuarantineReport(moved=(), into="", reason=reason)
    if entries:
        report = quarantine(root, [state_dir], reason, now)
        prefix = _relative_to_root(root, state_dir).as_posix()
        report = msgspec.structs.replace(report, moved=tuple(f"{prefix}/{name}" for name in entries))
    try:
        private_mkdir(state_dir)
    except OSError as error:
        raise StorageIOError(f"cannot recreate runtime state folder {str(state_dir)!r}: {error!r}") from error
    return report


def _relative_to_root(root: StorageRoot, path: Path) -> Path:
    absolute = Path(os.path.abspath(path))
    if not absolute.is_relative_to(root.root) or absolute == root.root:
        raise StorageError(
            f"path {str(path)!r} cannot be quarantined: it is not inside storage root {str(root.root)!r}"
        )
    if absolute.is_relative_to(quarantine_dir(root)):
        raise StorageError(f"path {str(path)!r} cannot be quarantined: it is already in the quarantine")
    return absolute.relative_to(root.root)


def _claim_folder(root: StorageRoot, reason: str, now: float) -> Path:
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise StorageError(f"quarantine time {now!r} is invalid: must be finite float seconds")
    slug = _SLUG_RE.sub("-", reason.lower()).strip("-")[:_SLUG_MAX].strip("-") or "unspecified"
    base = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{slug}"
    parent = quarantine_dir(root)
    try:
        private_mkdir(parent)
        for attempt in range(1, 1000):
            folder = parent / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                folder.mkdir(mode=0o700)
                return folder
            except FileExistsError:
                continue
    except OSError as error:
        raise StorageIOError(f"cannot create a quarantine folder under {str(parent)!r}: {error!r}") from error
    raise StorageIOError(f"quarantine folder names {base!r}-2..999 under {str(parent)!r} are all taken")


# --- open or quarantine --------------------------------------------------------------------------------------


def open_or_quarantine(root: StorageRoot, now: float) -> tuple[Database, QuarantineReport | None]:
    """Open the root's database; if it is corrupt, quarantine it and rebuild it from the transcripts."""
    root.ensure()
    rebuild_path = root.system_dir / REBUILD_NAME
    if not root.db_path.exists() and rebuild_path.exists():
        threads, turns, skipped = _rebuild_database(root, now)
        report = QuarantineReport(
            moved=(),
            into="",
            reason="finished an interrupted rebuild from transcripts",
            rebuilt_threads=threads,
            rebuilt_turns=turns,
            skipped=skipped,
        )
        return _open_checked(root), report
    try:
        return _open_checked(root), None
    except StorageError as error:
        if not _is_corruption(error):
            raise
    _mark_rebuild_started(rebuild_path)
    db_files = [root.db_path.with_name(root.db_path.name + suffix) for suffix in DB_SUFFIXES]
    report = quarantine(root, db_files, "corrupt database", now)
    threads, turns, skipped = _rebuild_database(root, now)
    report = msgspec.structs.replace(report, rebuilt_threads=threads, rebuilt_turns=turns, skipped=skipped)
    return _open_checked(root), report


def _open_checked(root: StorageRoot) -> Database:
    db = Database.open(root.db_path)
    try:
        problems = db.quick_check()
    except BaseException:
        db.close(checkpoint=False)
        raise
    if problems != ["ok"]:
        db.close(checkpoint=False)
        raise StorageCorruptError(f"database {str(root.db_path)!r} failed quick_check: {problems[:5]!r}")
    return db


def _is_corruption(error: BaseException) -> bool:
    return isinstance(error, StorageCorruptError) or isinstance(error.__cause__, (apsw.CorruptError, apsw.NotADBError))


def _mark_rebuild_started(rebuild_path: Path) -> None:
    """Leave an empty rebuild file (a valid empty database) before the corrupt one is moved away."""
    try:
        _remove_db_files(rebuild_path, keep_main=True)
        rebuild_path.write_bytes(b"")
        AtomicFs().fsync_dir(rebuild_path.parent)
    except OSError as error:
        raise StorageIOError(f"cannot prepare rebuild database {str(rebuild_path)!r}: {error!r}") from error


def _remove_db_files(path: Path, *, keep_main: bool = False) -> None:
    for suffix in DB_SUFFIXES:
        if suffix or not keep_main:
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def _rebuild_database(root: StorageRoot, now: float) -> tuple[int, int, tuple[str, ...]]:
    """Rebuild into the rebuild file (restarting it from empty), then rename it over agenthost.db."""
    rebuild_path = root.system_dir / REBUILD_NAME
    try:
        _remove_db_files(rebuild_path, keep_main=True)
        rebuild_path.write_bytes(b"")  # truncate, never remove: the file marks an unfinished rebuild
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
    parsed = parse_transcript(path.read_bytes().decode("utf-8"))
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
    db.create_thread(parsed.thread_id, parsed.project_id, parsed.title, now)
    for card in parsed.cards:
        db.add_action_card(parsed.thread_id, None, card.kind, card.text, now - TOP_CARD_OFFSET_S)
    for turn in parsed.turns:
        db.begin_turn(turn.turn_id, parsed.thread_id, turn.user_text, now)
        if turn.status != "pending":
            db.finish_turn(turn.turn_id, turn.status, turn.assistant_text, turn.error, now)
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


# --- transcript parser ---------------------------------------------------------------------------------------


def parsed_rows(parsed: ParsedThread, now: float = 0.0) -> tuple[ThreadRow, list[TurnRow], list[ActionCardRow]]:
    """Rows that ``render_transcript`` turns back into the parsed transcript (times: see the module contract)."""
    thread = ThreadRow(thread_id=parsed.thread_id, project_id=parsed.project_id, title=parsed.title, created_at=now)
    turns = [_turn_row(parsed.thread_id, turn, now) for turn in parsed.turns]
    cards = [
        _card_row(parsed.thread_id, None, card, index, now - TOP_CARD_OFFSET_S)
        for index, card in enumerate(parsed.cards, start=1)
    ]
    for turn in parsed.turns:
        cards.extend(_card_row(parsed.thread_id, turn.turn_id, card, len(cards) + 1, now) for card in turn.cards)
    return thread, turns, cards


def parse_transcript(markdown: str) -> ParsedThread:
    """Read a rendered transcript back into its thread, turns and cards (see the module contract)."""
    if not isinstance(markdown, str):
        raise TranscriptParseError(f"transcript must be a str, got {type(markdown).__name__}")
    if not markdown.endswith("\n"):
        raise TranscriptParseError("transcript does not end with a newline")
    text = markdown[:-1]
    header = _HEADER_RE.match(text)
    if header is None:
        first_line = text.split("\n", 1)[0]
        raise TranscriptParseError(f"transcript does not start with a '# title' + thread/project line: {first_line!r}")
    title, thread_id, project_id = header.groups()
    stub = ThreadRow(thread_id=thread_id, project_id=project_id, title=title, created_at=0.0)
    prefix = render_transcript(stub, [], [])[:-1]
    matches = list(_TURN_RE.finditer(text, header.end()))
    top_end = matches[0].start() if matches else len(text)
    top_cards = _parse_top_cards(stub, prefix, text[header.end() : top_end])
    turns = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        turns.append(_parse_turn(stub, prefix, match, text[match.end() : end]))
    parsed = ParsedThread(thread_id=thread_id, project_id=project_id, title=title, cards=top_cards, turns=tuple(turns))
    if render_transcript(*parsed_rows(parsed)) != markdown:
        raise TranscriptParseError(f"transcript of thread {thread_id!r} does not re-render identically")
    return parsed


def _parse_top_cards(stub: ThreadRow, prefix: str, region: str) -> tuple[ParsedCard, ...]:
    if not region:
        return ()
    if not region.startswith(_BLOCK_BREAK):
        raise TranscriptParseError(f"thread {stub.thread_id!r}: unexpected text after the heading: {region[:60]!r}")
    cards = []
    for block in region[len(_BLOCK_BREAK) :].split(_BLOCK_BREAK):
        card = _parse_card(stub, prefix, block)
        if card is None:
            raise TranscriptParseError(
                f"thread {stub.thread_id!r}: block above the first turn is not a card: {block[:60]!r}"
            )
        cards.append(card)
    return tuple(cards)


def _parse_card(stub: ThreadRow, prefix: str, block: str) -> ParsedCard | None:
    lines = block.split("\n")
    if not all(line.startswith("> ") for line in lines):
        return None
    content = "\n".join(line[2:] for line in lines)
    if lines[-1] == "> ":  # str.splitlines drops one trailing empty line: "a\n\n" renders as "a" + an empty line
        content += "\n"
    separator = content.find(":** ", 3)
    if not content.startswith("**") or separator < 0:
        return None
    card = ParsedCard(kind=content[2:separator], text=content[separator + 4 :])
    row = _card_row(stub.thread_id, None, card, 1, 0.0)
    if render_transcript(stub, [], [row]) != f"{prefix}{_BLOCK_BREAK}{block}\n":
        return None
    return card


def _parse_turn(stub: ThreadRow, prefix: str, header: re.Match[str], body: str) -> ParsedTurn:
    seq, turn_id, status = int(header.group(1)), header.group(2), header.group(3)
    expected = f"{prefix}{header.group(0)}{body}\n"
    if body.startswith(_USER_LABEL):
        candidates = _turn_candidates(stub, prefix, body[len(_USER_LABEL) :], turn_id, seq, status)
        for candidate in itertools.islice(candidates, MAX_TURN_CANDIDATES):
            row = _turn_row(stub.thread_id, candidate, 0.0)
            cards = [_card_row(stub.thread_id, turn_id, card, n, 0.0) for n, card in enumerate(candidate.cards, 1)]
            if render_transcript(stub, [row], cards) == expected:
                return candidate
    raise TranscriptParseError(
        f"thread {stub.thread_id!r}, turn {turn_id!r} (## Turn {seq}): the section is not a rendered turn:"
        f" {body[:80]!r}"
    )


def _turn_candidates(
    stub: ThreadRow, prefix: str, rest: str, turn_id: str, seq: int, status: str
) -> Iterator[ParsedTurn]:
    """Every decomposition of the section, most likely first; the caller keeps the first that re-renders."""
    for head, cards in _card_splits(stub, prefix, rest):
        for before_error, error in _error_splits(head):
            for user_part, assistant in _assistant_splits(before_error, status):
                if user_part and not user_part.startswith(_BLOCK_BREAK):
                    continue
                yield ParsedTurn(
                    turn_id=turn_id,
                    seq=seq,
                    status=status,  # type: ignore[arg-type]  # the regex admits only TurnStatus values
                    user_text=_unescape(user_part[len(_BLOCK_BREAK) :]),
                    assistant_text=_unescape(assistant),
                    error=None if error is None else _unescape(error),
                    cards=cards,
                )


def _card_splits(stub: ThreadRow, prefix: str, rest: str) -> list[tuple[str, tuple[ParsedCard, ...]]]:
    splits: list[tuple[str, tuple[ParsedCard, ...]]] = [(rest, ())]
    head, cards = rest, cast("tuple[ParsedCard, ...]", ())
    while (cut := head.rfind(_BLOCK_BREAK)) >= 0:
        card = _parse_card(stub, prefix, head[cut + len(_BLOCK_BREAK) :])
        if card is None:
            break
        head, cards = head[:cut], (card, *cards)
        splits.append((head, cards))
    return splits[::-1]


def _error_splits(head: str) -> Iterator[tuple[str, str | None]]:
    for position in reversed(_occurrences(head, _ERROR_LABEL)):
        yield head[:position], head[position + len(_ERROR_LABEL) :]
    yield head, None


def _assistant_splits(text: str, status: str) -> Iterator[tuple[str, str]]:
    if status == "pending":
        yield text, ""
    for position in _occurrences(text, _ASSISTANT_LABEL):
        after = text[position + len(_ASSISTANT_LABEL) :]
        if not after:
            yield text[:position], ""
        elif after.startswith(_BLOCK_BREAK):
            yield text[:position], after[len(_BLOCK_BREAK) :]


def _occurrences(text: str, label: str) -> list[int]:
    positions = []
    position = text.find(label)
    while position >= 0:
        positions.append(position)
        position = text.find(label, position + 1)
    return positions


def _unescape(text: str) -> str:
    if "\\<!--" not in text:
        return text
    return _ESCAPED_COMMENT_RE.sub(lambda match: f"{match.group(1)}{match.group(2)}<!--", text)


def _turn_row(thread_id: str, turn: ParsedTurn, now: float) -> TurnRow:
    return TurnRow(
        turn_id=turn.turn_id,
        thread_id=thread_id,
        seq=turn.seq,
        user_text=turn.user_text,
        assistant_text=turn.assistant_text,
        status=turn.status,
        error=turn.error,
        worker_id=None,
        created_at=now,
        finished_at=None if turn.status == "pending" else now,
    )


def _card_row(thread_id: str, turn_id: str | None, card: ParsedCard, card_id: int, created_at: float) -> ActionCardRow:
    return ActionCardRow(
        card_id=card_id, thread_id=thread_id, turn_id=turn_id, kind=card.kind, text=card.text, created_at=created_at
    )
