"""Markdown transcripts of threads on disk: appended record by record, created and rewritten by atomic replace.

Contract:
- The format (v2) is storage._transcript_format's: records, each closed by a ``<!-- agenthost:v2 {json} -->``
  trailer. ``render_transcript(thread, turns, cards)`` renders a thread's rows as a whole transcript: header
  (current title), cards older than every turn, then per turn (seq order) begin, end (when finished) and the cards
  placed at it (tied to it, or untied and created after it; by created_at, card_id). Pure.
- ``parse_checkpoints`` returns ``(turn_id, phase)`` for every exact marker line, in document order (a turn has
  its pending marker, then its final one: the last is its phase).
- ``atomic_write``: temp file in the same folder -> fsync it -> ``os.replace`` -> fsync the folder. Any failure up to
  and including the replace removes the temp file, leaves the old file untouched and raises ``StorageIOError``
  naming the path (original as ``__cause__``). A failure of the final folder fsync raises ``StorageIOError`` too;
  the new content is then already in place (complete, never torn) but its durability is not guaranteed.
- ``TranscriptStore`` stores ``<root>/projects/<project_id>/threads/<thread_id>.md`` as UTF-8. ``write`` replaces
  a transcript atomically (creating its folders). ``append`` adds records to an existing transcript: one write,
  then one fsync of the file (with ``sync=False`` no fsync: the caller fsyncs later with ``sync``); a failure raises
  ``StorageIOError`` naming the path and the step, and may leave part of the records behind (a torn tail, which readers
  ignore and the writer truncates before its next append). ``truncate`` cuts a torn tail. ``read`` returns the text up
  to the end of the last complete record (a v1 transcript, which has no record trailers, whole); it raises
  ``FileNotFoundError`` when the transcript does not exist. ``readable(data)`` is the same cut on bytes.
- ``AtomicFs`` is the file-system seam (tests and chaos override its methods to fail any step): ``write_temp``,
  ``fsync_file``, ``replace``, ``fsync_dir`` for a replace; ``append``, ``truncate`` and ``fsync_file`` for an
  append; ``read`` and ``size`` for reading.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ._errors import StorageError, StorageIOError
from ._paths import StorageRoot, private_mkdir
from ._rows import ActionCardRow, ThreadRow, TurnRow
from ._transcript_format import (
    PHASES,
    begin_record,
    card_record,
    checkpoint_phase,
    end_record,
    header_record,
    last_record_end,
)

__all__ = [
    "PHASES",
    "AtomicFs",
    "TranscriptStore",
    "atomic_write",
    "checkpoint_phase",
    "parse_checkpoints",
    "place_cards",
    "readable",
    "render_transcript",
]

_MARKER_RE = re.compile(
    r"<!-- checkpoint turn=([A-Za-z0-9][A-Za-z0-9_-]{0,63}) phase=(pending|completed|failed)"
    r" status=(pending|completed|failed|interrupted) -->"
)


def render_transcript(thread: ThreadRow, turns: Sequence[TurnRow], cards: Sequence[ActionCardRow]) -> str:
    """The whole v2 transcript of these rows, in the canonical order (see the module contract)."""
    ordered = sorted(turns, key=lambda turn: turn.seq)
    top_cards, cards_by_turn = place_cards(ordered, cards)
    parts = [header_record(thread), *(card_record(card) for card in top_cards)]
    for turn in ordered:
        parts.append(begin_record(turn))
        if turn.status != "pending":
            parts.append(end_record(turn))
        parts.extend(card_record(card) for card in cards_by_turn[turn.turn_id])
    return b"".join(parts).decode("utf-8")


def place_cards(
    ordered_turns: Sequence[TurnRow], cards: Sequence[ActionCardRow]
) -> tuple[list[ActionCardRow], dict[str, list[ActionCardRow]]]:
    """Cards above every turn, and the cards of each turn: tied to it, or untied and created after it."""
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


def parse_checkpoints(markdown: str) -> list[tuple[str, str]]:
    """Every marker line's (turn_id, phase), in document order."""
    found: list[tuple[str, str]] = []
    for line in markdown.splitlines():
        match = _MARKER_RE.fullmatch(line)
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def readable(data: bytes) -> bytes:
    """``data`` up to the end of its last complete record (all of it when it has no record: a v1 transcript)."""
    end = last_record_end(lambda offset, length: data[offset : offset + length], len(data))
    return data if end is None else data[:end]


class AtomicFs:
    """File-system primitives of transcript writes; tests and chaos override methods to inject faults."""

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

    def append(self, path: Path, data: bytes) -> None:
        """Write all of ``data`` at the end of the existing file ``path`` (O_APPEND; never creates it)."""
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
        finally:
            os.close(descriptor)

    def truncate(self, path: Path, size: int) -> None:
        os.truncate(path, size)

    def read(self, path: Path, offset: int = 0, length: int = -1) -> bytes:
        """``length`` bytes of ``path`` from ``offset`` (-1: to its end)."""
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(length)

    def size(self, path: Path) -> int:
        return os.stat(path).st_size


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
    """Reads, appends to and atomically replaces thread transcripts under a ``StorageRoot``."""

    def __init__(self, root: StorageRoot, *, fs: AtomicFs | None = None) -> None:
        self._root = root
        self.fs = fs if fs is not None else AtomicFs()

    def path(self, project_id: str, thread_id: str) -> Path:
        return self._root.transcript_path(project_id, thread_id)

    def write(self, project_id: str, thread_id: str, text: str) -> Path:
        """Atomically replace the transcript (creating its folders); return its path."""
        path = self.path(project_id, thread_id)
        data = _encode(text, thread_id)
        try:
            private_mkdir(path.parent)
        except OSError as error:
            raise StorageIOError(f"cannot create transcript folder {str(path.parent)!r}: {error!r}") from error
        atomic_write(path, data, self.fs)
        return path

    def append(self, path: Path, data: bytes, *, sync: bool = True) -> None:
        """Append ``data`` to the transcript at ``path`` and fsync it unless not ``sync`` (see the module contract)."""
        try:
            self.fs.append(path, data)
        except OSError as error:
            raise StorageIOError(f"append to transcript {str(path)!r} failed: {error!r}") from error
        if not sync:
            return
        try:
            self.fs.fsync_file(path)
        except OSError as error:
            raise StorageIOError(f"fsync of transcript {str(path)!r} after an append failed: {error!r}") from error

    def sync(self, path: Path) -> None:
        """fsync the transcript at ``path`` (what an append whose own fsync failed still needs)."""
        try:
            self.fs.fsync_file(path)
        except OSError as error:
            raise StorageIOError(f"fsync of transcript {str(path)!r} failed: {error!r}") from error

    def truncate(self, path: Path, size: int) -> None:
        try:
            self.fs.truncate(path, size)
        except OSError as error:
            raise StorageIOError(f"cutting the torn tail of transcript {str(path)!r} failed: {error!r}") from error

    def read(self, project_id: str, thread_id: str) -> str:
        """The transcript's text up to its last complete record; FileNotFoundError when it does not exist."""
        return readable(self.fs.read(self.path(project_id, thread_id))).decode("utf-8")

    def exists(self, project_id: str, thread_id: str) -> bool:
        return self.path(project_id, thread_id).is_file()


def _encode(text: str, thread_id: str) -> bytes:
    if not isinstance(text, str):
        raise StorageError(f"transcript text of thread {thread_id!r} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise StorageError(f"transcript text of thread {thread_id!r} is not valid UTF-8 text: {error}") from error
