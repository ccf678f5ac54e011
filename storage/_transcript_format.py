"""The transcript format (v2): an append-only Markdown log of records, each closed by a machine-readable trailer.

Contract:
- A transcript is a sequence of records. A record is a Markdown body (ending with a blank line) followed by one
  trailer line ``<!-- agenthost:v2 {json} -->`` + newline. The JSON (printable ASCII, without ``<`` or ``>``: other
  characters are ``\\u`` escapes) holds the record's kind ``k``, everything needed to read it back exactly, ``n``
  (the body's length in bytes) and ``crc`` (``zlib.crc32`` of the body). Kinds, bodies and trailer fields:

      header  "# <title>\\n\\nthread `<id>` | project `<id>`\\n\\n"          thread, project, title, at (created)
      title   "**Renamed:** <title>\\n\\n"                                  thread, title
      begin   "## Turn <seq>\\n<pending marker>\\n\\n**User:**\\n\\n<user>\\n\\n"  turn, seq, at (created), user
      end     "<marker>\\n\\n**Assistant:**\\n\\n<assistant>\\n\\n**Error:** <error>\\n\\n"
                                                        turn, seq, status, worker, at (finished), assistant, error
      card    "> **<kind>:** <text, '> ' after each \\\\n>\\n\\n"                  turn (or null), kind, at, text

  A text's block is omitted when it is empty (the error's when it is None); ``user``/``assistant``/``error``/
  ``text`` are the byte lengths of the texts as they stand in the body (escaped). Titles in headings are one line
  (line breaks become spaces; an empty title shows the thread id); the trailer keeps the exact title.
- Markers: ``<!-- checkpoint turn=<id> phase=<phase> status=<status> -->`` (phase: ``checkpoint_phase``); a begin
  record carries the turn's pending marker and its end record the final one, so a turn's LAST marker is its phase.
- No text can forge a marker or a trailer: in user/assistant/error/card text, any line (after any boundary that
  ``str.splitlines`` knows) starting with optional spaces/tabs, any backslashes and ``<!--`` gets one more backslash
  before them (``unescape`` removes exactly that one, so texts read back exactly); card lines start with ``> ``.
- A record is complete when its trailer line is whole, its JSON decodes, ``n``/``crc`` match its body and the whole
  record is byte for byte what the renderer makes of the trailer's values and texts. ``scan_records`` reads the
  complete records from the start and stops at the first other byte (its offset: where a reader's view ends);
  ``last_record_end`` finds the end of the last complete record from the end of the file, reading only the tail
  (the last record, plus any torn bytes after it).
- Pure: nothing here touches the disk (storage._transcripts does).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from typing import Literal, NamedTuple

import msgspec

from ._errors import StorageError
from ._rows import ActionCardRow, ThreadRow, TurnRow, TurnStatus

__all__ = [
    "MAGIC",
    "PHASES",
    "BeginTrailer",
    "CardTrailer",
    "EndTrailer",
    "HeaderTrailer",
    "Record",
    "TitleTrailer",
    "Trailer",
    "begin_record",
    "card_record",
    "checkpoint_phase",
    "end_record",
    "escape",
    "header_record",
    "last_record_end",
    "one_line",
    "scan_records",
    "title_record",
    "unescape",
]

MAGIC = b"<!-- agenthost:v2 "
_TRAILER_START = b"\n" + MAGIC  # a body ends with "\n", so every trailer follows one
_TRAILER_END = b" -->\n"
_TAIL_CHUNK = 64 * 1024
PHASES: tuple[str, ...] = ("pending", "completed", "failed")

_PHASE_OF_STATUS: dict[str, str] = {
    "pending": "pending",
    "completed": "completed",
    "failed": "failed",
    "interrupted": "failed",
}
_BOUNDARY = r"(^|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029])([ \t]*)"  # a line start, for every str.splitlines break
_ESCAPE_RE = re.compile(_BOUNDARY + r"(\\*<!--)")
_UNESCAPE_RE = re.compile(_BOUNDARY + r"\\(\\*<!--)")
_NOT_SAFE_JSON = re.compile(r"[^\x20-\x3b\x3d\x3f-\x7e]")  # everything but printable ASCII, and < >


class HeaderTrailer(msgspec.Struct, frozen=True, tag_field="k", tag="header", forbid_unknown_fields=True):
    thread: str
    project: str
    title: str
    at: float
    n: int = 0
    crc: int = 0


class TitleTrailer(msgspec.Struct, frozen=True, tag_field="k", tag="title", forbid_unknown_fields=True):
    thread: str
    title: str
    n: int = 0
    crc: int = 0


class BeginTrailer(msgspec.Struct, frozen=True, tag_field="k", tag="begin", forbid_unknown_fields=True):
    turn: str
    seq: int
    at: float
    user: int
    n: int = 0
    crc: int = 0


class EndTrailer(msgspec.Struct, frozen=True, tag_field="k", tag="end", forbid_unknown_fields=True):
    turn: str
    seq: int
    status: Literal["completed", "failed", "interrupted"]
    worker: int | None
    at: float
    assistant: int
    error: int | None
    n: int = 0
    crc: int = 0


class CardTrailer(msgspec.Struct, frozen=True, tag_field="k", tag="card", forbid_unknown_fields=True):
    turn: str | None
    kind: str
    at: float
    text: int
    n: int = 0
    crc: int = 0


Trailer = HeaderTrailer | TitleTrailer | BeginTrailer | EndTrailer | CardTrailer
_decoder = msgspec.json.Decoder(Trailer)


class Record(NamedTuple):
    """One complete record: its trailer, the texts of its body (begin: user; end: assistant, error; card: text),
    and where it lies in the file ([start, end) in bytes)."""

    trailer: Trailer
    texts: tuple[str | None, ...]
    start: int
    end: int


# --- markers and escaping --------------------------------------------------------------------------------------


def checkpoint_phase(status: TurnStatus) -> str:
    """pending -> pending, completed -> completed, failed/interrupted -> failed."""
    try:
        return _PHASE_OF_STATUS[status]
    except KeyError:
        raise StorageError(f"turn status {status!r} is invalid: expected one of {tuple(_PHASE_OF_STATUS)}") from None


def escape(text: str) -> str:
    """One more backslash before ``\\\\*<!--`` at every line start (see the module contract)."""
    if "<!--" not in text:  # fast path: almost every text
        return text
    return _ESCAPE_RE.sub(lambda match: f"{match.group(1)}{match.group(2)}\\{match.group(3)}", text)


def unescape(text: str) -> str:
    """The inverse of ``escape``."""
    if "<!--" not in text:
        return text
    return _UNESCAPE_RE.sub(lambda match: f"{match.group(1)}{match.group(2)}{match.group(3)}", text)


def one_line(text: str) -> str:
    return " ".join(text.splitlines()).strip()


def _marker(turn_id: str, status: TurnStatus) -> str:
    return f"<!-- checkpoint turn={turn_id} phase={checkpoint_phase(status)} status={status} -->"


# --- rendering -------------------------------------------------------------------------------------------------


def header_record(thread: ThreadRow) -> bytes:
    body = (
        f"# {one_line(thread.title) or thread.thread_id}\n\n"
        f"thread `{thread.thread_id}` | project `{thread.project_id}`\n\n"
    )
    trailer = HeaderTrailer(
        thread=thread.thread_id, project=thread.project_id, title=thread.title, at=thread.created_at
    )
    return _record(trailer, body)


def title_record(thread: ThreadRow) -> bytes:
    body = f"**Renamed:** {one_line(thread.title) or thread.thread_id}\n\n"
    return _record(TitleTrailer(thread=thread.thread_id, title=thread.title), body)


def begin_record(turn: TurnRow) -> bytes:
    user = escape(turn.user_text)
    body = f"## Turn {turn.seq}\n{_marker(turn.turn_id, 'pending')}\n\n**User:**\n\n{_block(user)}"
    trailer = BeginTrailer(turn=turn.turn_id, seq=turn.seq, at=turn.created_at, user=_size(user))
    return _record(trailer, body)


def end_record(turn: TurnRow) -> bytes:
    if turn.status == "pending" or turn.finished_at is None:
        raise StorageError(f"turn {turn.turn_id!r} is still pending: it has no end record yet")
    assistant = escape(turn.assistant_text)
    error = None if turn.error is None else escape(turn.error)
    body = f"{_marker(turn.turn_id, turn.status)}\n\n**Assistant:**\n\n{_block(assistant)}"
    if error is not None:
        body += f"**Error:** {error}\n\n"
    trailer = EndTrailer(
        turn=turn.turn_id,
        seq=turn.seq,
        status=turn.status,
        worker=turn.worker_id,
        at=turn.finished_at,
        assistant=_size(assistant),
        error=None if error is None else _size(error),
    )
    return _record(trailer, body)


def card_record(card: ActionCardRow) -> bytes:
    text = escape(card.text).replace("\n", "\n> ")
    body = f"> **{card.kind}:** {text}\n\n"
    return _record(CardTrailer(turn=card.turn_id, kind=card.kind, at=card.created_at, text=_size(text)), body)


def _block(text: str) -> str:
    return f"{text}\n\n" if text else ""


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _record(trailer: Trailer, body: str) -> bytes:
    data = body.encode("utf-8")
    trailer = msgspec.structs.replace(trailer, n=len(data), crc=zlib.crc32(data))
    return data + MAGIC + _json(trailer) + _TRAILER_END


def _json(trailer: Trailer) -> bytes:
    text = msgspec.json.encode(trailer).decode("utf-8")
    if not _NOT_SAFE_JSON.search(text):
        return text.encode("ascii")
    return _NOT_SAFE_JSON.sub(_unicode_escape, text).encode("ascii")  # only ever inside JSON strings


def _unicode_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


# --- reading ---------------------------------------------------------------------------------------------------


def scan_records(data: bytes) -> tuple[list[Record], int]:
    """The complete records from the start of ``data``, and the offset where they stop."""
    records: list[Record] = []
    position = 0
    while position < len(data):
        trailer_at = data.find(_TRAILER_START, position)
        record = None if trailer_at < 0 else _record_at(data, position, trailer_at + 1)
        if record is None:
            break
        records.append(record)
        position = record.end
    return records, position


def last_record_end(read: Callable[[int, int], bytes], size: int) -> int | None:
    """The end of the last complete record of a ``size``-byte file (``size`` itself when its tail is whole), reading
    it backwards with ``read(offset, length)``; None when it holds no complete record (e.g. a v1 transcript)."""
    tail = _Tail(read, size)
    before = size
    while (newline := tail.rfind_trailer(before)) is not None:
        trailer = _trailer_at(tail.data, newline + 1 - tail.start)
        if trailer is not None and trailer.n <= newline + 1:  # (the header starts at byte 0)
            start = newline + 1 - trailer.n
            tail.extend_to(start)
            record = _record_at(tail.data, start - tail.start, newline + 1 - tail.start)
            if record is not None:
                return record.end + tail.start
        before = newline
    return None


class _Tail:
    """The last bytes of a file, read backwards on demand."""

    def __init__(self, read: Callable[[int, int], bytes], size: int) -> None:
        self._read = read
        self.start = size
        self.data = b""

    def extend_to(self, offset: int) -> None:
        offset = max(0, offset)
        if offset < self.start:
            self.data = self._read(offset, self.start - offset) + self.data
            self.start = offset

    def rfind_trailer(self, before: int) -> int | None:
        """The offset of the newline that starts the last trailer found before ``before`` (absolute offsets)."""
        while True:
            end = min(len(self.data), before - self.start + len(_TRAILER_START) - 1)
            found = self.data.rfind(_TRAILER_START, 0, max(0, end))
            if found >= 0:
                return found + self.start
            if self.start == 0:
                return None
            self.extend_to(self.start - max(_TAIL_CHUNK, len(self.data)))


def _trailer_at(data: bytes, start: int) -> Trailer | None:
    line_end = data.find(b"\n", start)
    if line_end < 0 or not data.startswith(MAGIC, start) or data[line_end - 4 : line_end + 1] != _TRAILER_END:
        return None
    try:
        return _decoder.decode(data[start + len(MAGIC) : line_end - 4])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _record_at(data: bytes, start: int, trailer_start: int) -> Record | None:
    trailer = _trailer_at(data, trailer_start)
    if trailer is None:
        return None
    body = data[start:trailer_start]
    if len(body) != trailer.n or zlib.crc32(body) != trailer.crc:
        return None
    try:
        texts = _texts(trailer, body)
        rendered = _render(trailer, texts)
    except (ValueError, StorageError):  # a cut through a character, a missing label, a pending end...
        return None
    end = data.index(b"\n", trailer_start) + 1
    if data[start:end] != rendered:
        return None
    return Record(trailer=trailer, texts=texts, start=start, end=end)


def _texts(trailer: Trailer, body: bytes) -> tuple[str | None, ...]:
    """The texts of a body, cut by the byte lengths the trailer gives (checked by re-rendering afterwards)."""
    if isinstance(trailer, BeginTrailer):
        offset = body.index(b"**User:**\n\n") + len(b"**User:**\n\n")
        return (unescape(body[offset : offset + trailer.user].decode("utf-8")),)
    if isinstance(trailer, EndTrailer):
        offset = body.index(b"**Assistant:**\n\n") + len(b"**Assistant:**\n\n")
        assistant = unescape(body[offset : offset + trailer.assistant].decode("utf-8"))
        if trailer.error is None:
            return assistant, None
        offset += trailer.assistant + (2 if trailer.assistant else 0) + len(b"**Error:** ")
        return assistant, unescape(body[offset : offset + trailer.error].decode("utf-8"))
    if isinstance(trailer, CardTrailer):
        offset = len(f"> **{trailer.kind}:** ".encode())
        return (unescape(body[offset : offset + trailer.text].decode("utf-8").replace("\n> ", "\n")),)
    return ()


def _render(trailer: Trailer, texts: tuple[str | None, ...]) -> bytes:
    """The record the renderer makes of a trailer's values and texts (fields no record shows are left empty)."""
    if isinstance(trailer, HeaderTrailer):
        thread = ThreadRow(
            thread_id=trailer.thread, project_id=trailer.project, title=trailer.title, created_at=trailer.at
        )
        return header_record(thread)
    if isinstance(trailer, TitleTrailer):
        return title_record(ThreadRow(thread_id=trailer.thread, project_id="", title=trailer.title, created_at=0.0))
    if isinstance(trailer, CardTrailer):
        card = ActionCardRow(
            card_id=0, thread_id="", turn_id=trailer.turn, kind=trailer.kind, text=texts[0] or "", created_at=trailer.at
        )
        return card_record(card)
    if isinstance(trailer, BeginTrailer):
        return begin_record(_turn(trailer.turn, trailer.seq, user_text=texts[0] or "", created_at=trailer.at))
    turn = _turn(
        trailer.turn,
        trailer.seq,
        assistant_text=texts[0] or "",
        status=trailer.status,
        error=texts[1],
        worker_id=trailer.worker,
        finished_at=trailer.at,
    )
    return end_record(turn)


def _turn(turn_id: str, seq: int, **fields: object) -> TurnRow:
    values: dict[str, object] = {
        "user_text": "",
        "assistant_text": "",
        "status": "pending",
        "error": None,
        "worker_id": None,
        "created_at": 0.0,
        "finished_at": None,
    }
    values.update(fields)
    return TurnRow(turn_id=turn_id, thread_id="", seq=seq, **values)  # type: ignore[arg-type]
