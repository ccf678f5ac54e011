"""Reading a transcript back into its thread, turns and action cards: v2 (records) exactly, v1 (the old format)
as far as it allows.

Contract:
- ``parse_transcript(markdown)`` reads either format. A text holding a v2 record trailer is v2: it must be complete
  records from its first byte to its last (``TranscriptParseError`` names the offset where it stops; readers cut a
  torn tail first, see storage._transcripts.readable), starting with a header; begin records number the turns
  1..n (in any order), an end or a card names a turn begun before it, a later header is refused. The result is
  exact: titles (the last of header and renames), ids, seqs, texts, statuses, errors, worker ids of finished turns,
  created/finished times, every card with its turn (or none) and time, in log order (``ParsedThread.cards``; the
  turns' ``cards`` stay empty). What v2 does not hold: thread settings and dispatch mode, project names, a pending
  turn's worker and partial text, card ids (re-numbered in log order), follow-ups and mappings.
- v1 (``render_transcript_v1``, rendered whole by hosts before v2, kept for existing roots):
  ``render_transcript_v1(*parsed_rows(parse(md), t))`` is byte-identical to ``md`` for every output of the v1
  renderer (checked before returning; anything else raises ``TranscriptParseError``). The rows are the original ones
  (up to the losses below) whenever the rendering is unambiguous. It is ambiguous only when a text itself contains
  what the renderer emits between blocks: a paragraph starting with ``**Assistant:**`` / ``**Error:** `` or a
  ``> **kind:** `` quote at the end of a text, or a line starting with ``\\<!--`` (read back as ``<!--``). The
  parser then prefers, in order: the most trailing cards, the last ``**Error:**`` paragraph, no assistant block for
  a pending turn, the first ``**Assistant:**``; at most ``MAX_TURN_CANDIDATES`` decompositions are tried per turn.
  What v1 cannot give back: created/finished times (``parsed_rows(parsed, now)`` gives every row ``now``,
  top-of-thread cards ``now - TOP_CARD_OFFSET_S`` so they still render above the turns; ``now`` defaults to 0.0),
  worker ids, an empty title (the heading shows the thread id, which becomes the title), line breaks in titles and
  card texts (rendered as spaces / ``\\n``), partial assistant text of a pending turn (the DB stores it as ""),
  and which turn an untied card followed (it becomes tied to it). Card ids in ``parsed_rows`` count from 1 in
  document order.
- Pure: nothing here touches the disk or a database.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence

import msgspec

from ._errors import StorageError
from ._rows import ActionCardRow, ThreadRow, TurnRow, TurnStatus
from ._transcript_format import (
    MAGIC,
    BeginTrailer,
    CardTrailer,
    EndTrailer,
    HeaderTrailer,
    Record,
    TitleTrailer,
    checkpoint_phase,
    one_line,
    scan_records,
)
from ._transcripts import place_cards

__all__ = [
    "MAX_TURN_CANDIDATES",
    "TOP_CARD_OFFSET_S",
    "ParsedCard",
    "ParsedThread",
    "ParsedTurn",
    "TranscriptParseError",
    "parse_transcript",
    "parsed_rows",
    "render_transcript_v1",
]

TOP_CARD_OFFSET_S = 1.0  # top-of-thread cards are this much older than the turns, so they render above them
MAX_TURN_CANDIDATES = 1000  # decompositions tried per turn before giving up (bounds pathological texts)

_ID = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_HEADER_RE = re.compile(rf"# ([^\n]*)\n\nthread `({_ID})` \| project `({_ID})`")
_TURN_RE = re.compile(
    rf"\n\n## Turn ([0-9]+)\n<!-- checkpoint turn=({_ID}) phase=(?:pending|completed|failed)"
    r" status=(pending|completed|failed|interrupted) -->"
)
# The inverse of the renderer's marker escape: a backslash before "<!--" at a line start (any str.splitlines break).
_V1_ESCAPE_RE = re.compile(r"(^|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029])([ \t]*)<!--")
_ESCAPED_COMMENT_RE = re.compile(r"(^|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029])([ \t]*)\\<!--")
_USER_LABEL = "\n\n**User:**"
_ASSISTANT_LABEL = "\n\n**Assistant:**"
_ERROR_LABEL = "\n\n**Error:** "
_BLOCK_BREAK = "\n\n"


class TranscriptParseError(StorageError):
    """The text is not a transcript of either format; the message says where it stops matching."""


class ParsedCard(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    text: str
    turn_id: str | None = None  # v2: the card's turn (v1: None; a turn's cards belong to it)
    created_at: float | None = None  # v2 only


class ParsedTurn(msgspec.Struct, frozen=True, kw_only=True):
    turn_id: str
    seq: int
    status: TurnStatus
    user_text: str
    assistant_text: str
    error: str | None
    cards: tuple[ParsedCard, ...] = ()  # v1 only
    worker_id: int | None = None  # v2 only (finished turns)
    created_at: float | None = None  # v2 only
    finished_at: float | None = None  # v2 only


class ParsedThread(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    project_id: str
    title: str
    cards: tuple[ParsedCard, ...] = ()  # v1: cards above the first turn; v2: every card, in log order
    turns: tuple[ParsedTurn, ...] = ()
    created_at: float | None = None  # v2 only


def parsed_rows(parsed: ParsedThread, now: float = 0.0) -> tuple[ThreadRow, list[TurnRow], list[ActionCardRow]]:
    """The parsed rows; what the transcript does not hold gets ``now`` (see the module contract)."""
    created_at = now if parsed.created_at is None else parsed.created_at
    thread = ThreadRow(
        thread_id=parsed.thread_id, project_id=parsed.project_id, title=parsed.title, created_at=created_at
    )
    turns = [_turn_row(parsed.thread_id, turn, now) for turn in parsed.turns]
    cards = [
        _card_row(parsed.thread_id, card.turn_id, card, index, now - TOP_CARD_OFFSET_S)
        for index, card in enumerate(parsed.cards, start=1)
    ]
    for turn in parsed.turns:
        cards.extend(_card_row(parsed.thread_id, turn.turn_id, card, len(cards) + 1, now) for card in turn.cards)
    return thread, turns, cards


def parse_transcript(markdown: str) -> ParsedThread:
    """Read a transcript of either format back into its thread, turns and cards (see the module contract)."""
    if not isinstance(markdown, str):
        raise TranscriptParseError(f"transcript must be a str, got {type(markdown).__name__}")
    if "\n" + MAGIC.decode("ascii") in markdown:
        return _parse_v2(markdown.encode("utf-8"))
    return _parse_v1(markdown)


def _parse_v2(data: bytes) -> ParsedThread:
    records, end = scan_records(data)
    if end != len(data):
        raise TranscriptParseError(f"transcript: no complete v2 record at byte {end} of {len(data)}")
    if not records or not isinstance(records[0].trailer, HeaderTrailer):
        raise TranscriptParseError("transcript does not start with a v2 header record")
    header = records[0].trailer
    title = header.title
    turns: dict[str, ParsedTurn] = {}
    cards: list[ParsedCard] = []
    for record in records[1:]:
        renamed = _apply_v2(header, record, turns, cards)
        title = title if renamed is None else renamed
    ordered = sorted(turns.values(), key=lambda turn: turn.seq)
    if [turn.seq for turn in ordered] != list(range(1, len(ordered) + 1)):
        raise TranscriptParseError(f"thread {header.thread!r}: turn numbers {[t.seq for t in ordered]} are not 1..n")
    return ParsedThread(
        thread_id=header.thread,
        project_id=header.project,
        title=title,
        created_at=header.at,
        cards=tuple(cards),
        turns=tuple(ordered),
    )


def _apply_v2(
    header: HeaderTrailer, record: Record, turns: dict[str, ParsedTurn], cards: list[ParsedCard]
) -> str | None:
    """Fold one record into ``turns``/``cards``; return the new title of a rename (None otherwise)."""
    trailer, texts = record.trailer, record.texts
    where = f"thread {header.thread!r}, record at byte {record.start}"
    if isinstance(trailer, HeaderTrailer) or (isinstance(trailer, TitleTrailer) and trailer.thread != header.thread):
        raise TranscriptParseError(f"{where}: a second header, or a rename of another thread")
    if isinstance(trailer, TitleTrailer):
        return trailer.title
    if isinstance(trailer, BeginTrailer):
        if trailer.turn in turns:
            raise TranscriptParseError(f"{where}: turn {trailer.turn!r} begins twice")
        turns[trailer.turn] = ParsedTurn(
            turn_id=trailer.turn,
            seq=trailer.seq,
            status="pending",
            user_text=texts[0] or "",
            assistant_text="",
            error=None,
            created_at=trailer.at,
        )
    elif isinstance(trailer, EndTrailer):
        turn = turns.get(trailer.turn)
        if turn is None or turn.status != "pending" or turn.seq != trailer.seq:
            raise TranscriptParseError(f"{where}: the end of turn {trailer.turn!r} does not follow its begin")
        turns[trailer.turn] = msgspec.structs.replace(
            turn,
            status=trailer.status,
            assistant_text=texts[0] or "",
            error=texts[1],
            worker_id=trailer.worker,
            finished_at=trailer.at,
        )
    elif isinstance(trailer, CardTrailer):
        if trailer.turn is not None and trailer.turn not in turns:
            raise TranscriptParseError(f"{where}: a card of turn {trailer.turn!r}, which has not begun")
        cards.append(ParsedCard(kind=trailer.kind, text=texts[0] or "", turn_id=trailer.turn, created_at=trailer.at))
    return None


# --- v1 --------------------------------------------------------------------------------------------------------


def render_transcript_v1(thread: ThreadRow, turns: Sequence[TurnRow], cards: Sequence[ActionCardRow]) -> str:
    """The old (v1) whole-file rendering: one marker per turn, carrying its current phase and status."""
    ordered = sorted(turns, key=lambda turn: turn.seq)
    top_cards, cards_by_turn = place_cards(ordered, cards)
    blocks = [
        f"# {one_line(thread.title) or thread.thread_id}",
        f"thread `{thread.thread_id}` | project `{thread.project_id}`",
    ]
    blocks.extend(_render_card_v1(card) for card in top_cards)
    for turn in ordered:
        marker = f"<!-- checkpoint turn={turn.turn_id} phase={checkpoint_phase(turn.status)} status={turn.status} -->"
        blocks += [f"## Turn {turn.seq}\n{marker}", "**User:**"]
        if turn.user_text:
            blocks.append(_escape_v1(turn.user_text))
        if turn.assistant_text or turn.status != "pending":
            blocks.append("**Assistant:**")
            if turn.assistant_text:
                blocks.append(_escape_v1(turn.assistant_text))
        if turn.error is not None:
            blocks.append(f"**Error:** {_escape_v1(turn.error)}")
        blocks.extend(_render_card_v1(card) for card in cards_by_turn[turn.turn_id])
    return "\n\n".join(blocks) + "\n"


def _render_card_v1(card: ActionCardRow) -> str:
    lines = f"**{one_line(card.kind)}:** {card.text}".splitlines() or [""]
    return "\n".join(f"> {line}" for line in lines)


def _escape_v1(text: str) -> str:
    if "<!--" not in text:
        return text
    return _V1_ESCAPE_RE.sub(lambda match: f"{match.group(1)}{match.group(2)}\\<!--", text)


def _parse_v1(markdown: str) -> ParsedThread:
    if not markdown.endswith("\n"):
        raise TranscriptParseError("transcript does not end with a newline")
    text = markdown[:-1]
    header = _HEADER_RE.match(text)
    if header is None:
        first_line = text.split("\n", 1)[0]
        raise TranscriptParseError(f"transcript does not start with a '# title' + thread/project line: {first_line!r}")
    title, thread_id, project_id = header.groups()
    stub = ThreadRow(thread_id=thread_id, project_id=project_id, title=title, created_at=0.0)
    prefix = render_transcript_v1(stub, [], [])[:-1]
    matches = list(_TURN_RE.finditer(text, header.end()))
    top_end = matches[0].start() if matches else len(text)
    top_cards = _parse_top_cards(stub, prefix, text[header.end() : top_end])
    turns = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        turns.append(_parse_turn(stub, prefix, match, text[match.end() : end]))
    parsed = ParsedThread(thread_id=thread_id, project_id=project_id, title=title, cards=top_cards, turns=tuple(turns))
    if render_transcript_v1(*parsed_rows(parsed)) != markdown:
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
    if render_transcript_v1(stub, [], [row]) != f"{prefix}{_BLOCK_BREAK}{block}\n":
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
            if render_transcript_v1(stub, [row], cards) == expected:
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
    head = rest
    cards: tuple[ParsedCard, ...] = ()
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
        worker_id=turn.worker_id,
        created_at=now if turn.created_at is None else turn.created_at,
        finished_at=None if turn.status == "pending" else (now if turn.finished_at is None else turn.finished_at),
    )


def _card_row(
    thread_id: str, turn_id: str | None, card: ParsedCard, card_id: int, default_time: float
) -> ActionCardRow:
    created_at = default_time if card.created_at is None else card.created_at
    return ActionCardRow(
        card_id=card_id, thread_id=thread_id, turn_id=turn_id, kind=card.kind, text=card.text, created_at=created_at
    )
