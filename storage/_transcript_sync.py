"""Keeping thread transcripts in step with the database, which is the source of truth.

Contract:
- ``sync_transcript(db, store, thread_id, *, repair, convert=False)`` compares a thread's transcript with its rows
  and returns a ``TranscriptCheck`` whose ``problem`` is None when the transcript holds exactly what the database
  has (a v1 transcript: when its markers agree with the turns, one by one), else says what is wrong: missing,
  unreadable, a torn tail (bytes after the last complete record), a record the database contradicts, or the
  records it lacks. With ``repair`` it fixes it: a torn tail is cut and the missing records are appended (a rename,
  then per turn in seq order begin and end, then the cards in card_id order) in one append; anything else (missing,
  unreadable, a v1 transcript that disagrees, a record the database contradicts, a turn missing before a later
  one) is rewritten whole from the database by atomic replace. ``convert`` also rewrites an agreeing v1 transcript
  (as v2). ``size`` is the transcript's size afterwards. A failed repair raises ``StorageIOError``; without
  ``repair`` nothing is written.
- ``TranscriptWriter(root, db, fs=None)`` writes each committed change to its thread's transcript (the persistence
  actor's only transcript path). Its methods never raise for a transcript failure: they return the failures as
  ``(thread_id, StorageError)`` pairs. ``thread_created`` writes the new transcript by atomic replace;
  ``turns_written`` (a begun turn: its begin record; a finished one: its end record; one append per thread),
  ``card_added`` and ``renamed`` append: one write per thread, whatever the thread's length, NOT fsynced yet:
  ``sync_appends()`` fsyncs every transcript appended to since its last call (one fsync per thread however many
  appends it got) and returns the failures (such a thread is stale); ``unsynced`` counts those transcripts. The
  same in two halves, for fsyncs on another thread: ``take_unsynced()`` hands those transcripts over,
  ``fsync_transcripts(store, paths)`` (module function, no writer state) fsyncs them, ``note_synced(outcomes)`` takes
  the outcome back (a thread appended to or failed meanwhile does not count as synced). The
  database is the truth and marks every changed thread in the change's own transaction, so an append lost to a
  power cut before its fsync is only a transcript start-up repairs. The first append to a thread since the writer
  started (or forgot it: it remembers the last ``cached`` threads' tails) finds the end of its last complete record from
  the end of the file and cuts any torn tail there first. A thread whose write failed is stale: its next write, and
  ``retry_stale`` (also run after every write that succeeded), repair it with ``sync_transcript(repair=True,
  convert=True)`` instead of appending; so does a write to a thread whose transcript is missing, v1 (converted once, on
  its first write) or changed size behind the writer. ``take_synced`` returns and forgets the threads whose transcript
  held every change when last written and has been fsynced since (an atomic replace or a repair fsyncs at once; an
  append at its ``sync_appends``): the caller unmarks them in the database (``Database.mark_transcripts_synced``).
"""

from __future__ import annotations

import collections
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec

from ._database import Database
from ._errors import StorageError
from ._paths import StorageRoot
from ._rows import ActionCardRow, ThreadRow, TurnRow
from ._transcript_format import (
    MAGIC,
    BeginTrailer,
    CardTrailer,
    EndTrailer,
    HeaderTrailer,
    Record,
    TitleTrailer,
    begin_record,
    card_record,
    checkpoint_phase,
    end_record,
    last_record_end,
    scan_records,
    title_record,
)
from ._transcripts import AtomicFs, TranscriptStore, parse_checkpoints, render_transcript

__all__ = ["TAILS_CACHED", "Failure", "TranscriptCheck", "TranscriptWriter", "fsync_transcripts", "sync_transcript"]

TAILS_CACHED = 4096  # threads whose transcript tail (path, size) the writer remembers
Failure = tuple[str, StorageError]


class TranscriptCheck(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    path: str
    problem: str | None = None  # None: the transcript holds exactly what the database has
    repaired: str | None = None  # what a repair did
    size: int = 0  # the transcript's size in bytes after the check


class _Plan(NamedTuple):
    problem: str | None
    rewrite: bool  # repair by rewriting the whole transcript from the database
    size: int = 0  # the transcript's size now
    keep: int = 0  # bytes to keep (the end of its last complete record) before appending
    missing: tuple[tuple[str, bytes], ...] = ()  # (what, record) to append


def sync_transcript(
    db: Database, store: TranscriptStore, thread_id: str, *, repair: bool, convert: bool = False
) -> TranscriptCheck:
    """Compare (and with ``repair``, fix) one thread's transcript (see the module contract)."""
    thread = db.get_thread(thread_id)
    turns = db.list_turns(thread_id)
    cards = db.list_action_cards(thread_id)
    path = store.path(thread.project_id, thread_id)
    plan = _plan(store.fs, path, thread, turns, cards, convert)
    check = TranscriptCheck(thread_id=thread_id, path=str(path), problem=plan.problem, size=plan.size)
    if not repair or (plan.problem is None and not plan.rewrite):
        return check
    if plan.rewrite:
        text = render_transcript(thread, turns, cards)
        store.write(thread.project_id, thread_id, text)
        done = "converted to v2" if plan.problem is None else "rewritten from the database"
        return msgspec.structs.replace(check, repaired=done, size=len(text.encode("utf-8")))
    actions = []
    if plan.keep < plan.size:
        store.truncate(path, plan.keep)
        actions.append(f"cut {plan.size - plan.keep} torn bytes")
    data = b"".join(record for _, record in plan.missing)
    if data:
        store.append(path, data)
        actions.append(f"appended {len(plan.missing)} records from the database")
    return msgspec.structs.replace(check, repaired=", ".join(actions), size=plan.keep + len(data))


def _plan(
    fs: AtomicFs,
    path: Path,
    thread: ThreadRow,
    turns: Sequence[TurnRow],
    cards: Sequence[ActionCardRow],
    convert: bool,
) -> _Plan:
    try:
        data = fs.read(path)
    except FileNotFoundError:
        return _Plan("missing", rewrite=True)
    except OSError as error:
        return _Plan(f"unreadable: {error}", rewrite=True)
    records, end = scan_records(data)
    if not records:
        if b"\n" + MAGIC in data:
            return _Plan("its header record is damaged", rewrite=True, size=len(data))
        return _plan_v1(data, turns, convert)
    header = records[0].trailer
    if not isinstance(header, HeaderTrailer) or (header.thread, header.project, header.at) != (
        thread.thread_id,
        thread.project_id,
        thread.created_at,
    ):
        return _Plan("its header is not the database's thread", rewrite=True, size=len(data))
    diff = _diff(records[1:], header.title, thread, turns, cards)
    if isinstance(diff, str):
        return _Plan(diff, rewrite=True, size=len(data))
    problems = []
    if end < len(data):
        problems.append(f"{len(data) - end} bytes of an incomplete record at its end")
    if diff:
        whats = [what for what, _ in diff]
        problems.append(f"lacks {len(whats)} records: {', '.join(whats[:3])}{', ...' if len(whats) > 3 else ''}")
    return _Plan("; ".join(problems) or None, rewrite=False, size=len(data), keep=end, missing=tuple(diff))


def _plan_v1(data: bytes, turns: Sequence[TurnRow], convert: bool) -> _Plan:
    try:
        found = parse_checkpoints(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        return _Plan(f"unreadable: {error}", rewrite=True, size=len(data))
    expected = [(turn.turn_id, checkpoint_phase(turn.status)) for turn in turns]
    for index in range(max(len(found), len(expected))):
        have = found[index] if index < len(found) else None
        want = expected[index] if index < len(expected) else None
        if have != want:
            detail = f"checkpoint {index + 1}: transcript says {_marker(have)}, database says {_marker(want)}"
            return _Plan(detail, rewrite=True, size=len(data))
    return _Plan(None, rewrite=convert, size=len(data))


def _marker(marker: tuple[str, str] | None) -> str:
    return "nothing" if marker is None else f"turn {marker[0]} {marker[1]}"


def _diff(
    records: Sequence[Record],
    title: str,
    thread: ThreadRow,
    turns: Sequence[TurnRow],
    cards: Sequence[ActionCardRow],
) -> str | list[tuple[str, bytes]]:
    """Why the records contradict the rows (a str), or the records they lack, in the order to append them."""
    by_id = {turn.turn_id: turn for turn in turns}
    begun: set[str] = set()
    ended: set[str] = set()
    have_cards: Counter[tuple[str | None, str, str | None, float]] = Counter()
    last_seq = 0
    for record in records:
        trailer, texts = record.trailer, record.texts
        if isinstance(trailer, TitleTrailer):
            title = trailer.title
        elif isinstance(trailer, BeginTrailer):
            turn = by_id.get(trailer.turn)
            if (
                turn is None
                or trailer.turn in begun
                or (turn.seq, turn.user_text, turn.created_at)
                != (
                    trailer.seq,
                    texts[0],
                    trailer.at,
                )
            ):
                return f"its start of turn {trailer.seq} ({trailer.turn}) is not the database's"
            begun.add(trailer.turn)
            last_seq = max(last_seq, trailer.seq)
        elif isinstance(trailer, EndTrailer):
            turn = by_id.get(trailer.turn)
            if (
                turn is None
                or trailer.turn not in begun
                or trailer.turn in ended
                or (turn.status, turn.assistant_text, turn.error, turn.worker_id, turn.finished_at)
                != (trailer.status, texts[0], texts[1], trailer.worker, trailer.at)
            ):
                return f"its end of turn {trailer.seq} ({trailer.turn}, {trailer.status}) is not the database's"
            ended.add(trailer.turn)
        elif isinstance(trailer, CardTrailer):
            have_cards[(trailer.turn, trailer.kind, texts[0], trailer.at)] += 1
        else:
            return "it has a second header"
    missing: list[tuple[str, bytes]] = []
    if title != thread.title:
        missing.append(("the new title", title_record(thread)))
    for turn in turns:
        if turn.turn_id not in begun:
            if turn.seq < last_seq:
                return f"it lacks turn {turn.seq} ({turn.turn_id}) but has later ones"
            missing.append((f"the start of turn {turn.seq}", begin_record(turn)))
        if turn.status != "pending" and turn.turn_id not in ended:
            missing.append((f"the end of turn {turn.seq} ({turn.status})", end_record(turn)))
    for card in cards:
        key = (card.turn_id, card.kind, card.text, card.created_at)
        if have_cards[key] > 0:
            have_cards[key] -= 1
        else:
            missing.append((f"a {card.kind!r} card", card_record(card)))
    if +have_cards:
        return f"it has {sum((+have_cards).values())} cards the database does not have"
    return missing


class TranscriptWriter:
    """Writes each committed change to its thread's transcript (see the module contract)."""

    def __init__(self, root: StorageRoot, db: Database, *, fs: AtomicFs | None = None, cached: int = TAILS_CACHED):
        self.store = TranscriptStore(root, fs=fs)
        self.stale: set[str] = set()  # threads whose last write failed
        self._db = db
        self._cached = cached
        self._tails: collections.OrderedDict[str, tuple[Path, int]] = collections.OrderedDict()
        self._synced: set[str] = set()
        self._unsynced: dict[str, Path] = {}  # thread -> its transcript, appended to since the last sync_appends

    @property
    def unsynced(self) -> int:
        return len(self._unsynced)

    def thread_created(self, thread: ThreadRow) -> list[Failure]:
        return self._finish(self._write(thread.thread_id, None))

    def turns_written(self, rows: Sequence[TurnRow]) -> list[Failure]:
        """Begin records of pending rows, end records of finished ones: one append per thread."""
        records: dict[str, list[bytes]] = {}
        for row in rows:
            records.setdefault(row.thread_id, []).append(
                begin_record(row) if row.status == "pending" else end_record(row)
            )
        failures: list[Failure] = []
        for thread_id, parts in records.items():
            failures.extend(self._write(thread_id, b"".join(parts)))
        return self._finish(failures)

    def card_added(self, card: ActionCardRow) -> list[Failure]:
        return self._finish(self._write(card.thread_id, card_record(card)))

    def renamed(self, thread: ThreadRow) -> list[Failure]:
        return self._finish(self._write(thread.thread_id, title_record(thread)))

    def retry_stale(self) -> list[Failure]:
        """Repair the stale threads in id order; stop at the first failure (the disk is likely still failing)."""
        for thread_id in sorted(self.stale):
            failures = self._write(thread_id, None)
            if failures:
                return failures
        return []

    def sync_appends(self) -> list[Failure]:
        """fsync every transcript appended to since the last call; a failure leaves its thread stale."""
        return self.note_synced(fsync_transcripts(self.store, self.take_unsynced()))

    def take_unsynced(self) -> dict[str, Path]:
        """The transcripts appended to since the last call, by thread, for `fsync_transcripts` (on any thread);
        hand its outcome to `note_synced`."""
        unsynced, self._unsynced = self._unsynced, {}
        return unsynced

    def note_synced(self, outcomes: dict[str, StorageError | None]) -> list[Failure]:
        """The outcome of fsyncing what `take_unsynced` gave: a failure leaves its thread stale (returned); a
        success counts for a thread that got no append and no failure since (a later append waits for its own)."""
        failures: list[Failure] = []
        for thread_id, error in outcomes.items():
            if error is not None:
                self._forget(thread_id)
                failures.append((thread_id, error))
            elif thread_id not in self._unsynced and thread_id not in self.stale:
                self._synced.add(thread_id)
        return failures

    def take_synced(self) -> list[str]:
        synced, self._synced = sorted(self._synced), set()
        return synced

    def read(self, project_id: str, thread_id: str) -> str:
        return self.store.read(project_id, thread_id)

    def _finish(self, failures: list[Failure]) -> list[Failure]:
        return failures or self.retry_stale()

    def _write(self, thread_id: str, data: bytes | None) -> list[Failure]:
        """Append ``data`` (None: nothing new to append, only repair) or, when that cannot be trusted, repair."""
        try:
            tail = None if data is None or thread_id in self.stale else self._tail(thread_id)
            if tail is None or data is None:
                check = sync_transcript(self._db, self.store, thread_id, repair=True, convert=True)
                tail = (Path(check.path), check.size)
                if check.repaired is None:  # nothing written now; bytes of an earlier append may not be durable yet
                    self.store.sync(tail[0])
                self._unsynced.pop(thread_id, None)
                self._synced.add(thread_id)
            else:
                self.store.append(tail[0], data, sync=False)
                tail = (tail[0], tail[1] + len(data))
                self._unsynced[thread_id] = tail[0]
                self._synced.discard(thread_id)
        except StorageError as error:
            self._forget(thread_id)
            return [(thread_id, error)]
        self._tails[thread_id] = tail
        self._tails.move_to_end(thread_id)
        if len(self._tails) > self._cached:
            self._tails.popitem(last=False)
        self.stale.discard(thread_id)
        return []

    def _forget(self, thread_id: str) -> None:
        """A write or fsync of the thread's transcript failed: stale until repaired from the database."""
        self._tails.pop(thread_id, None)
        self._unsynced.pop(thread_id, None)
        self._synced.discard(thread_id)
        self.stale.add(thread_id)

    def _tail(self, thread_id: str) -> tuple[Path, int] | None:
        """Where the next record goes: the remembered tail while the file still has that size, else the end of the
        file's last complete record (a torn tail after it is cut); None: the transcript must be repaired."""
        fs = self.store.fs
        known = self._tails.get(thread_id)
        try:
            if known is not None:
                return known if fs.size(known[0]) == known[1] else None
            path = self.store.path(self._db.get_thread(thread_id).project_id, thread_id)
            size = fs.size(path)
            end = last_record_end(lambda offset, length: fs.read(path, offset, length), size)
        except OSError:
            return None
        if end is None:
            return None  # no v2 record: a v1 transcript (converted by the repair) or a damaged one
        if end < size:
            self.store.truncate(path, end)
        return path, end


def fsync_transcripts(store: TranscriptStore, paths: dict[str, Path]) -> dict[str, StorageError | None]:
    """fsync each transcript (one fsync each, in order) and say, by thread, how it went (None: durable). Touches
    no state of a writer: safe on a thread of its own while the writer goes on."""
    outcomes: dict[str, StorageError | None] = {}
    for thread_id, path in paths.items():
        try:
            store.sync(path)
        except StorageError as error:
            outcomes[thread_id] = error
        else:
            outcomes[thread_id] = None
    return outcomes
