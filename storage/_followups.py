"""The follow-up queue of the agenthost database: messages that wait for their thread, in order.

Contract (a mixin of `Database`; every write is one transaction):
- A thread's queue is its follow-ups in "queued" or "failed" state, ordered by `seq`. `enqueue_followup` appends.
- `next_followup(thread, include_manual=False)` is the oldest "queued" one (a "failed" one is skipped, it waits for
  a retry); a thread in dispatch mode "manual" yields none unless `include_manual` (an explicit "send next").
  `queue_head` is the same and whether another "queued" one waits behind it (`QueueHead.more`), in one query.
- `begin_followup_turn` marks one "dispatched" and begins its turn in the same transaction. `start_followup` reads
  the head (as `queue_head`) and begins it so, all in ONE transaction: the head it names is the one that began.
- `set_followup_state`: "done" and "cancelled" are final; "failed" keeps the error of its turn (`last_error`);
  `retry_followup` queues a failed one again in its place (it runs as a new turn).
- User operations on waiting items ("queued" or "failed"): `move_followup(id, position)` reorders the thread's
  queue (position 0-based, clamped to the queue's length; the items keep the set of seq numbers they had),
  `edit_followup(id, text)`, `cancel_followup(id)` (final). Anything else raises `StorageError` naming the item and
  its state. `set_dispatch_mode(thread, "auto" | "manual")`.
"""

from __future__ import annotations

import msgspec

from ._dbcore import _NEXT_SEQ_SQL, DatabaseCore, _columns, _integer, _optional_text, _row, _text, _time
from ._errors import StorageError
from ._ids import validate_id
from ._rows import (
    DISPATCH_MODES,
    FOLLOWUP_STATES,
    DispatchMode,
    FollowUpRow,
    FollowUpStart,
    FollowUpState,
    QueueHead,
    ThreadRow,
    TurnRow,
)
from ._transaction import translate_errors

__all__ = ["FollowUpQueue"]

_FINAL_STATES: tuple[str, ...] = ("done", "cancelled")
_WAITING_STATES: tuple[str, ...] = ("queued", "failed")
# One statement each on the turn path; no row returned: the follow-up is unknown or not in a state that allows it.
_SET_STATE_SQL = (
    "UPDATE followups SET state = ?1, last_error = CASE WHEN ?1 = 'failed' THEN ?2 ELSE last_error END"
    f" WHERE followup_id = ?3 AND state NOT IN {_FINAL_STATES!r} RETURNING {_columns(FollowUpRow)}"
)
_DISPATCH_SQL = (
    "UPDATE followups SET state = 'dispatched', turn_id = ? WHERE followup_id = ? AND state = 'queued'"
    " RETURNING thread_id, text"
)


class FollowUpQueue(DatabaseCore):
    """The follow-up queue operations (see the module contract)."""

    __slots__ = ()

    def enqueue_followup(self, followup_id: str, thread_id: str, text: str, now: float) -> FollowUpRow:
        """Queue a message for the thread with seq = 1 + the thread's highest follow-up seq."""
        validate_id("follow-up id", followup_id)
        validate_id("thread id", thread_id)
        message = _text("follow-up text", text)
        created_at = _time("now", now)
        with self._transaction(f"enqueueing follow-up {followup_id!r}"):
            self._require_thread(thread_id)
            row = FollowUpRow(
                followup_id=followup_id, thread_id=thread_id, seq=0, text=message, state="queued", created_at=created_at
            )
            return self._insert_next(row, "follow-up id", "followup_id")

    def next_followup(self, thread_id: str, include_manual: bool = False) -> FollowUpRow | None:
        """The oldest (lowest seq) queued follow-up of the thread, or None (always None for a thread in manual mode
        unless `include_manual`)."""
        return self.queue_head(thread_id, include_manual).followup

    def queue_head(self, thread_id: str, include_manual: bool = False) -> QueueHead:
        """`next_followup` and whether another queued follow-up waits behind it, in one query."""
        validate_id("thread id", thread_id)
        with translate_errors(f"reading thread {thread_id!r}"):
            thread = self._require_thread(thread_id)
        if thread.dispatch_mode == "manual" and not include_manual:
            return QueueHead()
        rows = self._select_all(
            FollowUpRow, "followups", "WHERE thread_id = ? AND state = 'queued'", (thread_id,), "seq LIMIT 2"
        )
        return QueueHead(followup=rows[0] if rows else None, more=len(rows) > 1)

    def set_followup_state(self, followup_id: str, state: FollowUpState, error: str | None = None) -> FollowUpRow:
        """Move a follow-up to `state` ("failed" keeps `error`, the reason of its last turn); "done" and "cancelled"
        are final, a "failed" one can be queued again (`retry_followup`)."""
        validate_id("follow-up id", followup_id)
        if state not in FOLLOWUP_STATES:
            raise StorageError(f"follow-up state {state!r} is invalid: expected one of {FOLLOWUP_STATES}")
        error_text = _optional_text("follow-up error", error)  # kept only by "failed" (the statement's CASE)
        with self._transaction(f"setting state of follow-up {followup_id!r}"):
            for values in self._conn.execute(_SET_STATE_SQL, (state, error_text, followup_id)).fetchall():
                return _row(FollowUpRow, values)
            row = self._select_one(FollowUpRow, "followup_id", followup_id)
            if row is None:
                raise StorageError(f"unknown follow-up id {followup_id!r}")
            raise StorageError(f"follow-up {followup_id!r} is already {row.state}; terminal states are final")

    def retry_followup(self, followup_id: str) -> FollowUpRow:
        """Queue a failed follow-up again, keeping its place (seq); it runs as a new turn. Only "failed" ones."""
        validate_id("follow-up id", followup_id)
        with self._transaction(f"retrying follow-up {followup_id!r}"):
            row = self._require_row(FollowUpRow, "followup_id", followup_id)
            if row.state != "failed":
                raise StorageError(f"follow-up {followup_id!r} is {row.state}; only a failed one can be retried")
            self._conn.execute("UPDATE followups SET state = 'queued' WHERE followup_id = ?", (followup_id,))
        return msgspec.structs.replace(row, state="queued")

    def begin_followup_turn(self, followup_id: str, now: float, turn_id: str | None = None) -> TurnRow:
        """Mark a queued follow-up dispatched AND begin its turn in ONE transaction, so a crash can never leave a
        follow-up dispatched without its turn, or run it twice. The turn's id is `turn_id`, by default the
        follow-up's own id (a retried follow-up runs under a new one)."""
        validate_id("follow-up id", followup_id)
        turn = validate_id("turn id", turn_id if turn_id is not None else followup_id)
        created_at = _time("now", now)
        with self._transaction(f"dispatching follow-up {followup_id!r}"):
            for thread_id, text in self._conn.execute(_DISPATCH_SQL, (turn, followup_id)).fetchall():
                return self._begin_turn_row(turn, str(thread_id), str(text), created_at)
            followup = self._require_row(FollowUpRow, "followup_id", followup_id)
            raise StorageError(f"follow-up {followup_id!r} is {followup.state}, not queued; it runs only once")

    def start_followup(
        self, thread_id: str, now: float, *, include_manual: bool = False, retry_turn_id: str | None = None
    ) -> FollowUpStart:
        """Read the head of the thread's queue (`queue_head`) and, when there is one, dispatch it and begin its turn
        (`begin_followup_turn`), in ONE transaction. The turn's id is the follow-up's own, or `retry_turn_id` for a
        follow-up that ran before (failed and queued again); such a follow-up without `retry_turn_id` is refused,
        naming the turn it ran as."""
        with self._transaction(f"starting the next follow-up of thread {thread_id!r}"):
            head = self.queue_head(thread_id, include_manual)
            followup = head.followup
            if followup is None:
                return FollowUpStart()
            turn_id = followup.followup_id if followup.turn_id is None else retry_turn_id
            if turn_id is None:
                ran = f"follow-up {followup.followup_id!r} ran before as turn {followup.turn_id!r}"
                raise StorageError(f"{ran}: it needs a new turn id")
            turn = self.begin_followup_turn(followup.followup_id, now, turn_id)
            return FollowUpStart(followup=followup, more=head.more, turn=turn)

    def list_followups(self, thread_id: str) -> list[FollowUpRow]:
        validate_id("thread id", thread_id)
        with translate_errors(f"reading thread {thread_id!r}"):
            self._require_thread(thread_id)
        return self._select_all(FollowUpRow, "followups", "WHERE thread_id = ?", (thread_id,), "seq")

    def threads_with_open_followups(self) -> list[ThreadRow]:
        """The threads with a queued or dispatched follow-up, by (created_at, id): one query."""
        where = "WHERE thread_id IN (SELECT thread_id FROM followups WHERE state IN ('queued', 'dispatched'))"
        return self._select_all(ThreadRow, "threads", where, (), "created_at, thread_id")

    def queue_depths(self) -> dict[str, int]:
        """The number of queued follow-ups of each thread that has any."""
        sql = "SELECT thread_id, COUNT(*) FROM followups WHERE state = 'queued' GROUP BY thread_id ORDER BY thread_id"
        with translate_errors("counting queued follow-ups"):
            return {str(thread_id): int(count) for thread_id, count in self._conn.execute(sql)}

    def move_followup(self, followup_id: str, position: int) -> list[FollowUpRow]:
        """Move a waiting follow-up to `position` (0-based, clamped) in its thread's queue; return the queue."""
        validate_id("follow-up id", followup_id)
        if isinstance(position, bool) or not isinstance(position, int):
            raise StorageError(f"follow-up position {position!r} is invalid: must be an int")
        with self._transaction(f"moving follow-up {followup_id!r}"):
            row = self._waiting(followup_id, "moved")
            queue = self._select_all(
                FollowUpRow,
                "followups",
                "WHERE thread_id = ? AND state IN ('queued', 'failed')",
                (row.thread_id,),
                "seq",
            )
            order = [item for item in queue if item.followup_id != followup_id]
            order.insert(max(0, min(position, len(order))), row)
            seqs = sorted(item.seq for item in queue)
            # parked above every seq of the thread first (one that ran may hold a seq above the waiting ones), so
            # UNIQUE(thread_id, seq) holds at every step
            offset = _integer("seq", self._conn.execute(_NEXT_SEQ_SQL["followups"], (row.thread_id,)).get)
            for item in queue:
                self._conn.execute(
                    "UPDATE followups SET seq = seq + ? WHERE followup_id = ?", (offset, item.followup_id)
                )
            for item, seq in zip(order, seqs, strict=True):
                self._conn.execute("UPDATE followups SET seq = ? WHERE followup_id = ?", (seq, item.followup_id))
        return [item for item in self.list_followups(row.thread_id) if item.state in _WAITING_STATES]

    def edit_followup(self, followup_id: str, text: str) -> FollowUpRow:
        validate_id("follow-up id", followup_id)
        message = _text("follow-up text", text)
        with self._transaction(f"editing follow-up {followup_id!r}"):
            row = self._waiting(followup_id, "edited")
            self._conn.execute("UPDATE followups SET text = ? WHERE followup_id = ?", (message, followup_id))
        return msgspec.structs.replace(row, text=message)

    def cancel_followup(self, followup_id: str) -> FollowUpRow:
        validate_id("follow-up id", followup_id)
        with self._transaction(f"cancelling follow-up {followup_id!r}"):
            row = self._waiting(followup_id, "cancelled")
            self._conn.execute("UPDATE followups SET state = 'cancelled' WHERE followup_id = ?", (followup_id,))
        return msgspec.structs.replace(row, state="cancelled")

    def set_dispatch_mode(self, thread_id: str, mode: DispatchMode) -> ThreadRow:
        validate_id("thread id", thread_id)
        if mode not in DISPATCH_MODES:
            raise StorageError(f"dispatch mode {mode!r} is invalid: expected one of {DISPATCH_MODES}")
        with self._transaction(f"setting the dispatch mode of thread {thread_id!r}"):
            thread = self._require_thread(thread_id)
            self._conn.execute("UPDATE threads SET dispatch_mode = ? WHERE thread_id = ?", (mode, thread_id))
            self._forget_thread(thread_id)
        return msgspec.structs.replace(thread, dispatch_mode=mode)

    def _waiting(self, followup_id: str, action: str) -> FollowUpRow:
        """The follow-up, which must still wait in its queue ("queued" or "failed") to be `action`."""
        row = self._require_row(FollowUpRow, "followup_id", followup_id)
        if row.state not in _WAITING_STATES:
            raise StorageError(f"follow-up {followup_id!r} is {row.state}; only a queued or failed one can be {action}")
        return row
