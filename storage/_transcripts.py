"""Markdown transcripts of threads, written atomically.

Contract:
- ``render_transcript`` is pure. Layout::

      # <title>                       (line breaks in the title become spaces; empty title -> thread id)

      thread `<thread_id>` | project `<project_id>`

      > **<kind>:** <text>            (cards not tied to a listed turn and older than every turn)

      ## Turn <seq>
      <!-- checkpoint turn=<turn_id> phase=<phase> status=<status> -->

      **User:**

      <user text, verbatim>

      **Assistant:**                  (omitted while the turn is pending and the text is empty)

      <assistant text, verbatim>

      **Error:** <error>              (only when error is not None)

      > **<kind>:** <text>            (cards of this turn, then untied cards created after it; by created_at, card_id)

  Turns are rendered in seq order. A card whose turn_id is None (or names a turn not in ``turns``) goes after the
  latest turn whose created_at <= the card's created_at, else at the top.
- No text can forge a marker: in user/assistant/error text, any line (after any line boundary that
  ``str.splitlines`` knows) starting with optional spaces/tabs and ``<!--`` gets a backslash before ``<!--``; every
  card line is prefixed with ``> ``. All other characters are kept verbatim.
- ``parse_checkpoints`` returns ``(turn_id, phase)`` for every exact marker line, in document order.
- ``atomic_write``: temp file in the same folder -> fsync it -> ``os.replace`` -> fsync the folder. Any failure up to
  and including the replace removes the temp file, leaves the old file untouched and raises ``StorageIOError``
  naming the path (original as ``__cause__``). A failure of the final folder fsync raises ``StorageIOError`` too;
  the new content is then already in place (complete, never torn) but its durability is not guaranteed.
- ``TranscriptStore`` stores ``<root>/projects/<project_id>/threads/<thread_id>.md`` as UTF-8; ``read`` raises
  ``FileNotFoundError`` when the transcript does not exist.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ._errors import StorageError, StorageIOError
from ._paths import StorageRoot, private_mkdir
from ._rows import ActionCardRow, ThreadRow, TurnRow, TurnStatus

__all__ = [
    "PHASES",
    "AtomicFs",
    "ThreadDocument",
    "TranscriptStore",
    "atomic_write",
    "checkpoint_phase",
    "parse_checkpoints",
    "render_transcript",
]

PHASES: tuple[str, ...] = ("pending", "completed", "failed")

_PHASE_OF_STATUS: dict[str, str] = {
    "pending": "pending",
    "completed": "completed",
    "failed": "failed",
    "interrupted": "failed",
}
_MARKER_RE = re.compile(
    r"<!-- checkpoint turn=([A-Za-z0-9][A-Za-z0-9_-]{0,63}) phase=(pending|completed|failed)"
    r" status=(pending|completed|failed|interrupted) -->"
)
# A comment opener at the start of the text or right after any boundary that str.splitlines() recognises.
_LINE_START_COMMENT_RE = re.compile(r"(^|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029])([ \t]*)<!--")


def checkpoint_phase(status: TurnStatus) -> str:
    """pending -> pending, completed -> completed, failed/interrupted -> failed."""
    try:
        return _PHASE_OF_STATUS[status]
    except KeyError:
        raise StorageError(f"turn status {status!r} is invalid: expected one of {tuple(_PHASE_OF_STATUS)}") from None


def render_transcript(thread: ThreadRow, turns: Sequence[TurnRow], cards: Sequence[ActionCardRow]) -> str:
    ordered_turns = sorted(turns, key=lambda turn: turn.seq)
    top_cards, cards_by_turn = _place_cards(ordered_turns, cards)
    blocks = _header_blocks(thread)
    blocks.extend(_render_card(card) for card in top_cards)
    for turn in ordered_turns:
        blocks.extend(_render_turn(turn, cards_by_turn[turn.turn_id]))
    return "\n\n".join(blocks) + "\n"


class ThreadDocument:
    """One thread's transcript kept in memory: renders exactly what `render_transcript` renders for the same rows,
    but re-renders only the turn sections whose row (or cards) changed since the last render. Long threads then cost
    O(changed turns) to render instead of a full re-read and re-render of every turn."""

    def __init__(self, thread: ThreadRow, turns: Sequence[TurnRow] = (), cards: Sequence[ActionCardRow] = ()) -> None:
        self.thread = thread
        self._turns: dict[str, TurnRow] = {turn.turn_id: turn for turn in turns}
        self._cards: list[ActionCardRow] = list(cards)
        self._sections: dict[str, tuple[TurnRow, tuple[ActionCardRow, ...], str]] = {}

    def upsert_turn(self, turn: TurnRow) -> None:
        self._turns[turn.turn_id] = turn

    def add_card(self, card: ActionCardRow) -> None:
        self._cards.append(card)

    def render(self) -> str:
        ordered_turns = sorted(self._turns.values(), key=lambda turn: turn.seq)
        top_cards, cards_by_turn = _place_cards(ordered_turns, self._cards)
        blocks = _header_blocks(self.thread)
        blocks.extend(_render_card(card) for card in top_cards)
        for turn in ordered_turns:
            cards = tuple(cards_by_turn[turn.turn_id])
            cached = self._sections.get(turn.turn_id)
            if cached is None or (cached[0] is not turn and cached[0] != turn) or cached[1] != cards:
                cached = (turn, cards, "\n\n".join(_render_turn(turn, cards)))
                self._sections[turn.turn_id] = cached
            blocks.append(cached[2])
        return "\n\n".join(blocks) + "\n"


def _header_blocks(thread: ThreadRow) -> list[str]:
    return [
        f"# {_one_line(thread.title) or thread.thread_id}",
        f"thread `{thread.thread_id}` | project `{thread.project_id}`",
    ]


def parse_checkpoints(markdown: str) -> list[tuple[str, str]]:
    """Every marker line's (turn_id, phase), in document order."""
    found: list[tuple[str, str]] = []
    for line in markdown.splitlines():
        match = _MARKER_RE.fullmatch(line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def _render_turn(turn: TurnRow, cards: Sequence[ActionCardRow]) -> list[str]:
    marker = f"<!-- checkpoint turn={turn.turn_id} phase={checkpoint_phase(turn.status)} status={turn.status} -->"
    blocks = [f"## Turn {turn.seq}\n{marker}", "**User:**"]
    if turn.user_text:
        blocks.append(_escape_markers(turn.user_text))
    if turn.assistant_text or turn.status != "pending":
        blocks.append("**Assistant:**")
        if turn.assistant_text:
            blocks.append(_escape_markers(turn.assistant_text))
    if turn.error is not None:
        blocks.append(f"**Error:** {_escape_markers(turn.error)}")
    blocks.extend(_render_card(card) for card in cards)
    return blocks


def _render_card(card: ActionCardRow) -> str:
    lines = f"**{_one_line(card.kind)}:** {card.text}".splitlines() or [""]
    return "\n".join(f"> {line}" for line in lines)


def _place_cards(
    ordered_turns: Sequence[TurnRow], cards: Sequence[ActionCardRow]
) -> tuple[list[ActionCardRow], dict[str, list[ActionCardRow]]]:
    cards_by_turn: dict[str, list[ActionCardRow]] = {turn.turn_id: [] for turn in ordered_turns}
    top_cards: list[ActionCardRow] = []
    for card in sorted(cards, key=lambda card: (card.created_at, card.card_id)):
        owner_id = card.turn_id if card.turn_id in cards_by_turn else _preceding_turn_id(ordered_turns, card)
        (cards_by_turn[owner_id] if owner_id is not None else top_cards).append(card)
    return top_cards, cards_by_turn


def _preceding_turn_id(ordered_turns: Sequence[TurnRow], card: ActionCardRow) -> str | None:
    earlier = [turn for turn in ordered_turns if turn.created_at <= card.created_at]
    if not earlier:
        return None
    return max(earlier, key=lambda turn: (turn.created_at, turn.seq)).turn_id


def _escape_markers(text: str) -> str:
    if "<!--" not in text:  # fast path: almost every text, and the regex scan costs O(len) per render
        return text
    return _LINE_START_COMMENT_RE.sub(lambda match: f"{match.group(1)}{match.group(2)}\\<!--", text)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()).strip()


class AtomicFs:
    """File-system primitives used by ``atomic_write``; tests override methods to inject faults."""

    def write_temp(self, directory: Path, prefix: str, data: bytes) -> Path:
        """Create a new temp file (mkstemp) in ``directory``, write all of ``data``, close it; return its path."""
        descriptor, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
        temp_path = Path(name)
        try:
            with os.fdopen(descriptor, "wb") as temp_file:
                temp_file.write(data)
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        return temp_path

    def fsync_file(self, path: Path) -> None:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write(path: Path, data: bytes, fs: AtomicFs | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring)."""
    file_system = fs if fs is not None else AtomicFs()
    target = Path(path)
    directory = target.parent
    temp_path: Path | None = None
    try:
        temp_path = file_system.write_temp(directory, f".{target.name}.", data)
        file_system.fsync_file(temp_path)
        file_system.replace(temp_path, target)
    except BaseException as error:
        if temp_path is not None:
            temp_path.unlink(missing_ok=True)
        if isinstance(error, Exception):
            raise StorageIOError(f"atomic write of {str(target)!r} failed before the replace: {error!r}") from error
        raise
    try:
        file_system.fsync_dir(directory)
    except Exception as error:
        raise StorageIOError(
            f"atomic write of {str(target)!r}: content replaced but fsync of folder {str(directory)!r} failed:"
            f" {error!r}"
        ) from error


class TranscriptStore:
    """Reads and atomically writes thread transcripts under a ``StorageRoot``."""

    def __init__(self, root: StorageRoot, *, fs: AtomicFs | None = None) -> None:
        self._root = root
        self._fs = fs if fs is not None else AtomicFs()

    def write(self, project_id: str, thread_id: str, text: str) -> Path:
        """Atomically replace the transcript (creating its folders); return its path."""
        path = self._root.transcript_path(project_id, thread_id)
        data = _encode(text, thread_id)
        try:
            private_mkdir(path.parent)
        except OSError as error:
            raise StorageIOError(f"cannot create transcript folder {str(path.parent)!r}: {error!r}") from error
        atomic_write(path, data, self._fs)
        return path

    def read(self, project_id: str, thread_id: str) -> str:
        """The transcript text; raises FileNotFoundError when it does not exist."""
        return self._root.transcript_path(project_id, thread_id).read_bytes().decode("utf-8")

    def exists(self, project_id: str, thread_id: str) -> bool:
        return self._root.transcript_path(project_id, thread_id).is_file()


def _encode(text: str, thread_id: str) -> bytes:
    if not isinstance(text, str):
        raise StorageError(f"transcript text of thread {thread_id!r} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise StorageError(f"transcript text of thread {thread_id!r} is not valid UTF-8 text: {error}") from error
