"""Group commit for the persistence actor: several writes of the same kind in ONE transaction, each caller hearing
its own outcome.

Contract:
- `each_in_one_transaction(db, action, items, write)` applies `write(item)` to every item inside one
  `Database.batch` (one commit, one fsync). When the batch fails, every item is applied again alone, so one bad
  item (an unknown thread, a used id) fails only itself. Returns, in order, each item's result or the
  `StorageError` that refused it. `write` is one database operation that applies completely or raises; the
  batch's rollback undid the ones that had succeeded before the retry.
- `each_alone(items, read)` is the same outcome list without a transaction (reads).
- `GroupCommits` is the persistence actor's part that answers the batched messages (`BeginTurns`,
  `BeginFollowUpTurns`, `EnqueueFollowUps`, `NextFollowUps`) and settles told `SettleFollowUp`s: begins are
  committed first, then appended to their transcripts (one append per thread), then answered, as single begins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from agenthost.actors._log import get_logger
from agenthost.protocol._messages import (
    BeginFollowUpTurns,
    BeginTurns,
    EnqueueFollowUps,
    NextFollowUps,
    SaveMapping,
    SettleFollowUp,
    TurnBegun,
)
from agenthost.storage import Database, StorageError, TranscriptWriter, TurnRow

__all__ = ["GroupCommits", "each_alone", "each_in_one_transaction"]

Item = TypeVar("Item")
Result = TypeVar("Result")
Batched = BeginTurns | BeginFollowUpTurns | EnqueueFollowUps | NextFollowUps

_log = get_logger("agenthost.persistence")


def each_in_one_transaction(
    db: Database, action: str, items: Sequence[Item], write: Callable[[Item], Result]
) -> list[Result | StorageError]:
    if not items:
        return []
    try:
        with db.batch(f"{action} ({len(items)} at once)"):
            return [write(item) for item in items]
    except StorageError:
        return each_alone(items, write)


def each_alone(items: Sequence[Item], apply: Callable[[Item], Result]) -> list[Result | StorageError]:
    outcomes: list[Result | StorageError] = []
    for item in items:
        try:
            outcomes.append(apply(item))
        except StorageError as exc:
            outcomes.append(exc)
    return outcomes


class GroupCommits:
    """The batched messages of the persistence actor (mixed into it: it provides `db`, `transcripts`,
    `_transcript`)."""

    @property
    def db(self) -> Database:
        raise NotImplementedError

    @property
    def transcripts(self) -> TranscriptWriter:
        raise NotImplementedError

    def _transcript(self, write: Callable[[], list[tuple[str, StorageError]]]) -> None:
        raise NotImplementedError

    def _group(self, message: Batched, now: float) -> tuple[Any, ...]:
        db = self.db
        match message:
            case BeginTurns():
                begins = message.begins
                turns = each_in_one_transaction(
                    db, "beginning turns", begins, lambda b: db.begin_turn(b.turn_id, b.thread_id, b.user_text, now)
                )
                return self._begun_rows(turns)
            case BeginFollowUpTurns():
                dispatches = message.begins
                turns = each_in_one_transaction(
                    db,
                    "dispatching follow-ups",
                    dispatches,
                    lambda b: db.begin_followup_turn(b.followup_id, now, b.turn_id),
                )
                return self._begun_rows(turns)
            case EnqueueFollowUps():
                enqueues = message.enqueues
                rows = each_in_one_transaction(
                    db,
                    "enqueueing follow-ups",
                    enqueues,
                    lambda e: db.enqueue_followup(e.followup_id, e.thread_id, e.text, now),
                )
                return tuple(rows)
            case NextFollowUps():
                return tuple(each_alone(message.requests, lambda r: db.next_followup(r.thread_id, r.include_manual)))

    def _begun_rows(self, turns: list[TurnRow | StorageError]) -> tuple[TurnBegun | StorageError, ...]:
        """One transcript append per thread for the begun turns, then each its `TurnBegun` (or its error)."""
        begun = [row for row in turns if isinstance(row, TurnRow)]
        if begun:
            self._transcript(lambda: self.transcripts.turns_written(begun))
        threads = {row.thread_id for row in begun}
        settings = {thread: self.db.get_thread(thread).thread_settings() for thread in threads}
        return tuple(
            TurnBegun(turn=row, settings=settings[row.thread_id]) if isinstance(row, TurnRow) else row for row in turns
        )

    def _save_mappings(self, saves: list[SaveMapping], now: float) -> None:
        """Told pins, in one transaction; a refusal is logged (the pin is saved again at its next change)."""
        db = self.db
        saved = each_in_one_transaction(
            db, "saving mappings", saves, lambda m: db.save_mapping(m.thread_id, m.worker_id, m.runtime_thread_id, now)
        )
        for save, outcome in zip(saves, saved, strict=True):
            if isinstance(outcome, StorageError):
                _log.error("persistence.mapping_save_failed", thread=save.thread_id, error=repr(outcome))

    def _settle(self, settles: list[SettleFollowUp]) -> None:
        """Told follow-up states, in one transaction; a refusal is logged (start-up reconciliation settles it)."""
        db = self.db
        settled = each_in_one_transaction(
            db, "settling follow-ups", settles, lambda m: db.set_followup_state(m.followup_id, m.state, m.error)
        )
        for settle, outcome in zip(settles, settled, strict=True):
            if isinstance(outcome, StorageError):
                _log.error("persistence.followup_settle_failed", followup=settle.followup_id, error=repr(outcome))
