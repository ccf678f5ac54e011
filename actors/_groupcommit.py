"""Group commit for the persistence actor: several writes of the same kind in ONE transaction, each caller hearing
its own outcome.

Contract:
- `each_in_one_transaction(db, action, items, write)` applies `write(item)` to every item inside one
  `Database.batch` (one commit, one fsync, no savepoint per item; a single item runs as it is). When the batch
  fails, every item is applied again alone, so one bad item (an unknown thread, a used id) fails only itself.
  Returns, in order, each item's result or the `StorageError` that refused it. `write` is one database operation
  that applies completely or raises; the batch's rollback undid the ones that had succeeded before the retry.
  With `joined` (the items of an asked message joining a group commit, inside its savepoint) the batch and each
  item's retry are savepoints, and one item alone too, so a bad item refuses only itself, not the message.
- `each_alone(items, read)` is the same outcome list without a transaction (reads).
- `GroupCommits` is the persistence actor's part that answers the batched messages (`BeginTurns`,
  `StartNextFollowUps`, `EnqueueFollowUps`) and settles told `SettleFollowUp`s: begins (a follow-up's start is a
  read of its thread's queue head, its dispatch and its begin) are committed first, then appended to their
  transcripts (one append per thread), then answered, as single begins.
- `_flush(joining=None)` commits the told writes waiting in the actor's batch (pins `SaveMapping`, completions
  `CompleteTurn`, follow-up states `SettleFollowUp`) and, when given, the asked message `joining`, in ONE
  transaction: pins first, then the completions, the follow-up states, then `joining` in a savepoint of its own
  (its `StorageError` undoes only itself and is raised to its asker after the commit). Only after the commit are
  the transcripts appended (the writes the handlers asked for, in order), then every completion's caller told
  `TurnPersisted`, then `joining` answered. When that one transaction fails to commit, or a told write in it is
  refused (a group's writes open no savepoints, so one refused refuses the group: storage._transaction), nothing
  of it was applied and the same writes run again, each part in its own transaction
  ("persistence.group_commit_split" says so; a completion that fails then alone is told its error); a pin or
  follow-up state the storage refuses is logged once, when the transaction that refused it stands (the next
  change, or start-up reconciliation, writes it again).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from agenthost.actors._events import StorageTimed
from agenthost.actors._log import get_logger
from agenthost.actors._refs import tell_quietly
from agenthost.actors._upkeep import TranscriptWrite, Upkeep
from agenthost.protocol._messages import (
    BeginTurns,
    CompleteTurn,
    EnqueueFollowUps,
    NextFollowUpStarted,
    SaveMapping,
    SettleFollowUp,
    StartNextFollowUps,
    TurnBegun,
    TurnPersisted,
)
from agenthost.storage import Database, FollowUpStart, StorageError, TurnFinish, TurnRow

__all__ = ["GroupCommits", "each_alone", "each_in_one_transaction"]

Item = TypeVar("Item")
Result = TypeVar("Result")
Batched = BeginTurns | StartNextFollowUps | EnqueueFollowUps
Told = CompleteTurn | SettleFollowUp | SaveMapping


class _Refused(NamedTuple):
    """The joining message's own storage error, raised to its asker once the group has committed."""

    error: StorageError


_log = get_logger("agenthost.persistence")
Refusal = tuple[str, dict[str, str]]  # a told write the storage refused: the error event to log, and its fields


def each_in_one_transaction(
    db: Database, action: str, items: Sequence[Item], write: Callable[[Item], Result], *, joined: bool = False
) -> list[Result | StorageError]:
    alone = (lambda item: _in_a_group_of_its_own(db, action, write, item)) if joined else write
    if len(items) < 2:  # one item is its own transaction (joined: its own savepoint) already
        return each_alone(items, alone)
    try:
        with db.batch(f"{action} ({len(items)} at once)"):
            return [write(item) for item in items]
    except StorageError:
        return each_alone(items, alone)


def _in_a_group_of_its_own(db: Database, action: str, write: Callable[[Item], Result], item: Item) -> Result:
    """Inside an open group, a refused operation refuses the whole group; in a group of its own (a savepoint) only
    itself."""
    with db.batch(action):
        return write(item)


def each_alone(items: Sequence[Item], apply: Callable[[Item], Result]) -> list[Result | StorageError]:
    outcomes: list[Result | StorageError] = []
    for item in items:
        try:
            outcomes.append(apply(item))
        except StorageError as exc:
            outcomes.append(exc)
    return outcomes


class GroupCommits(Upkeep):
    """The batched messages and the group commit of the persistence actor (mixed into it, on top of its upkeep, whose
    `_transcript` runs or keeps its transcript writes and whose `_after_commit` checkpoints; the actor provides `db`,
    `transcripts`, `_handle`, `_wall` and the state below)."""

    _batch: list[Told]  # told writes waiting for the next group commit
    _answers_waiting: bool  # one of them is a CompleteTurn (its caller waits for the commit)
    _wall: Callable[[], float]

    def _handle(self, message: Any, now: float) -> Any:
        raise NotImplementedError

    # --- the group commit ----------------------------------------------------------------------------------------
    def _flush(self, joining: Any = None) -> Any:
        """Commit the waiting told writes and `joining` together (see the module contract); return its answer."""
        waiting, self._batch, self._answers_waiting = self._batch, [], False
        if not waiting and joining is None:
            return None
        now = self._wall()
        try:
            return self._commit_group(waiting, joining, now, together=True)
        except StorageError as exc:  # its COMMIT failed, or a write in it was refused: nothing of it stands
            asked = None if joining is None else type(joining).__name__
            _log.warning("persistence.group_commit_split", writes=len(waiting), asked=asked, error=repr(exc))
            return self._commit_group(waiting, joining, now, together=False)

    def _commit_group(self, waiting: list[Told], joining: Any, now: float, *, together: bool) -> Any:
        completions = [m for m in waiting if isinstance(m, CompleteTurn)]
        settles = [m for m in waiting if isinstance(m, SettleFollowUp)]
        later: list[TranscriptWrite] = []
        self._later = later
        started = time.perf_counter()
        try:
            with self.db.batch(_group_name(waiting, joining)) if together else contextlib.nullcontext():
                refused = self._save_mappings([m for m in waiting if isinstance(m, SaveMapping)], now)
                outcomes = self._finish(completions, now)
                refused += self._settle(settles)
                answer = self._joined(joining, now)
        finally:
            self._later = None
        _log.record(StorageTimed(op="commit", seconds=time.perf_counter() - started), "debug")
        for event, fields in refused:  # logged once it stands (a group refused as a whole is tried again, split)
            _log.error(event, **fields)
        for write in later:
            self._transcript(write)
        for completion, (row, error) in zip(completions, outcomes, strict=True):
            tell_quietly(completion.reply_to, TurnPersisted(turn_id=completion.turn_id, row=row, error=error))
        if waiting:
            _log.debug("persistence.group_commit", completions=len(completions), followups=len(settles))
        self._after_commit()
        if isinstance(answer, _Refused):
            raise answer.error
        return answer

    def _finish(self, completions: list[CompleteTurn], now: float) -> list[tuple[TurnRow | None, str | None]]:
        """The completed turns in one savepoint (when one fails, each alone); their end records go to the
        transcripts."""
        finishes = [TurnFinish(c.turn_id, "completed", c.assistant_text, None, now, c.worker_id) for c in completions]
        if not finishes:
            return []
        outcomes: list[tuple[TurnRow | None, str | None]]
        try:
            outcomes = [(row, None) for row in self.db.finish_turns(finishes)]
        except StorageError:
            outcomes = [self._finish_alone(finish) for finish in finishes]
        rows = [row for row, _ in outcomes if row is not None]
        if rows:
            self._transcript(lambda: self.transcripts.turns_written(rows))
        return outcomes

    def _finish_alone(self, finish: TurnFinish) -> tuple[TurnRow | None, str | None]:
        try:
            return self.db.finish_turns([finish])[0], None
        except StorageError as exc:
            return None, str(exc)

    def _joined(self, joining: Any, now: float) -> Any:
        """The joining message handled in a savepoint of its own: its storage error undoes only itself, and the
        transcript writes it asked for (its rows are gone with the savepoint)."""
        if joining is None:
            return None
        asked = len(self._later) if self._later is not None else 0
        try:
            with self.db.batch(type(joining).__name__):
                return self._handle(joining, now)
        except StorageError as exc:
            if self._later is not None:
                del self._later[asked:]
            return _Refused(exc)

    def _group(self, message: Batched, now: float) -> tuple[Any, ...]:
        db, joined = self.db, self._later is not None  # inside a group commit: joining its transaction
        match message:
            case BeginTurns():
                begins = message.begins
                turns = each_in_one_transaction(
                    db,
                    "beginning turns",
                    begins,
                    lambda b: db.begin_turn(b.turn_id, b.thread_id, b.user_text, now),
                    joined=joined,
                )
                return self._begun_rows(turns)
            case StartNextFollowUps():
                starts = each_in_one_transaction(
                    db,
                    "starting follow-ups",
                    message.starts,
                    lambda r: db.start_followup(
                        r.thread_id, now, include_manual=r.include_manual, retry_turn_id=r.retry_turn_id
                    ),
                    joined=joined,
                )
                return self._started(starts)
            case EnqueueFollowUps():
                enqueues = message.enqueues
                rows = each_in_one_transaction(
                    db,
                    "enqueueing follow-ups",
                    enqueues,
                    lambda e: db.enqueue_followup(e.followup_id, e.thread_id, e.text, now),
                    joined=joined,
                )
                return tuple(rows)

    def _started(self, starts: list[FollowUpStart | StorageError]) -> tuple[NextFollowUpStarted | StorageError, ...]:
        """Each start's head and its `TurnBegun` (the begun turns appended to their transcripts, as `_begun_rows`)."""
        turns = [start.turn for start in starts if isinstance(start, FollowUpStart) and start.turn is not None]
        begun = {b.turn.turn_id: b for b in self._begun_rows(turns) if isinstance(b, TurnBegun)}
        return tuple(
            start
            if isinstance(start, StorageError)
            else NextFollowUpStarted(
                followup=start.followup,
                more=start.more,
                begun=None if start.turn is None else begun[start.turn.turn_id],
            )
            for start in starts
        )

    def _begun_rows(self, turns: Sequence[TurnRow | StorageError]) -> tuple[TurnBegun | StorageError, ...]:
        """One transcript append per thread for the begun turns, then each its `TurnBegun` (or its error)."""
        begun = [row for row in turns if isinstance(row, TurnRow)]
        if begun:
            self._transcript(lambda: self.transcripts.turns_written(begun))
        threads = {row.thread_id: self.db.get_thread(row.thread_id) for row in begun}
        return tuple(
            TurnBegun(
                turn=row,
                settings=threads[row.thread_id].thread_settings(),
                project_id=threads[row.thread_id].project_id,
            )
            if isinstance(row, TurnRow)
            else row
            for row in turns
        )

    def _save_mappings(self, saves: list[SaveMapping], now: float) -> list[Refusal]:
        """Told pins, in one transaction; the refusals, to log (the pin is saved again at its next change)."""
        db = self.db
        saved = each_in_one_transaction(
            db, "saving mappings", saves, lambda m: db.save_mapping(m.thread_id, m.worker_id, m.runtime_thread_id, now)
        )
        return [
            ("persistence.mapping_save_failed", {"thread": save.thread_id, "error": repr(outcome)})
            for save, outcome in zip(saves, saved, strict=True)
            if isinstance(outcome, StorageError)
        ]

    def _settle(self, settles: list[SettleFollowUp]) -> list[Refusal]:
        """Told follow-up states, in one transaction; the refusals, to log (start-up reconciliation settles them)."""
        db = self.db
        settled = each_in_one_transaction(
            db, "settling follow-ups", settles, lambda m: db.set_followup_state(m.followup_id, m.state, m.error)
        )
        return [
            ("persistence.followup_settle_failed", {"followup": settle.followup_id, "error": repr(outcome)})
            for settle, outcome in zip(settles, settled, strict=True)
            if isinstance(outcome, StorageError)
        ]


def _group_name(waiting: list[Told], joining: Any) -> str:
    """What a group commit holds, for its error messages: the told writes waiting, and the asked message."""
    asked = "" if joining is None else f" with {type(joining).__name__}"
    return f"group commit of {len(waiting)} told writes{asked}"
