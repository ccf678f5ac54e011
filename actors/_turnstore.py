"""The turn coordinator's storage effects: each asks the persistence actor (through the coordinator's `ask`, which
has its deadline rules) and turns its outcome into the machine's next event.

Contract: a storage refusal (`REFUSED`: a storage error, the persistence actor unavailable, dead or past its
deadline) never escapes except where the caller must hear it:
- `begin_direct`: the begins of direct sends, each `Begun` or `BeginRefused` carrying the storage's error for its
  caller; `begin_followup`: a follow-up that cannot be begun becomes `BeginRefused` (it stays queued).
  Dispatching a follow-up and beginning its turn is one transaction.
- `finish`: a refusal becomes `FinishRefused` (the machine retries it by policy); a turn already finished is only
  accepted on a retry (the earlier attempt landed after all).
- `forget_options` removes per-turn settings the runtime refused from the thread; a refusal is logged.
- `card`: False (logged) when refused. `set_followup` and `fetch_followup` log a refusal; start-up reconciliation
  settles the state, and a fetch that failed reads as an empty queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka

from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import HostUnavailableError
from agenthost.actors._log import get_logger
from agenthost.actors._turns import TurnRegistry, new_turn_id
from agenthost.actors._turnstate import Unpersisted
from agenthost.protocol._messages import (
    AddActionCard,
    BeginFollowUpTurn,
    BeginTurn,
    BeginTurns,
    EnqueueFollowUp,
    FinishTurn,
    NextFollowUp,
    SetFollowUpState,
    UpdateThread,
)
from agenthost.storage import StorageError, TurnAlreadyFinishedError

__all__ = ["REFUSED", "TurnStore"]

_log = get_logger("agenthost.turns")
REFUSED = (StorageError, HostUnavailableError, pykka.ActorDeadError, pykka.Timeout)  # the storage did not take it


def _begun(effect: ev.Begin, settings: Any) -> ev.Begun:
    return ev.Begun(
        turn_id=effect.turn_id,
        thread_id=effect.thread_id,
        text=effect.text,
        sink=effect.sink,
        followup_id=effect.followup_id,
        settings=settings,
        reply_to=effect.reply_to,
    )


class TurnStore:
    def __init__(self, ask: Callable[[Any], Any], registry: TurnRegistry) -> None:
        self.ask = ask  # asks the persistence actor, with the coordinator's deadline rules
        self._registry = registry

    def begin_followup(self, effect: ev.Begin) -> ev.Event:
        assert effect.followup_id is not None
        try:  # dispatched and begun in one transaction: a crash can neither lose nor repeat it
            begun = self.ask(BeginFollowUpTurn(followup_id=effect.followup_id, turn_id=effect.turn_id))
        except REFUSED as exc:
            return ev.BeginRefused(
                turn_id=effect.turn_id, thread_id=effect.thread_id, error=repr(exc), followup_id=effect.followup_id
            )
        return _begun(effect, begun.settings)

    def begin_direct(self, effects: list[ev.Begin]) -> list[ev.Event]:
        """Begin direct sends (their storage errors go back to their callers, as BeginRefused)."""
        begins = tuple(BeginTurn(turn_id=e.turn_id, thread_id=e.thread_id, user_text=e.text) for e in effects)
        try:
            answers: tuple[Any, ...] = self.ask(BeginTurns(begins=begins))
        except REFUSED as exc:  # the whole round: every caller hears why
            answers = (exc,) * len(effects)
        outcomes: list[ev.Event] = []
        for effect, answer in zip(effects, answers, strict=True):
            if isinstance(answer, BaseException):
                refused = ev.BeginRefused(
                    turn_id=effect.turn_id,
                    thread_id=effect.thread_id,
                    error=repr(answer),
                    exception=answer,
                    reply_to=effect.reply_to,
                )
                outcomes.append(refused)
            else:
                outcomes.append(_begun(effect, answer.settings))
        return outcomes

    def forget_options(self, thread_id: str, keys: tuple[str, ...]) -> None:
        try:
            self.ask(UpdateThread(thread_id=thread_id, turn_settings=dict.fromkeys(keys)))
        except REFUSED as exc:  # the next turn is refused once more and retried without them again
            _log.error("turns.forget_options_failed", thread=thread_id, keys=list(keys), error=repr(exc))

    def enqueue(self, effect: ev.Enqueue) -> None:
        self.ask(EnqueueFollowUp(followup_id=effect.turn_id, thread_id=effect.thread_id, text=effect.text))

    def finish(self, record: Unpersisted, retry: bool) -> ev.Event:
        finish = FinishTurn(
            turn_id=record.turn_id,
            status=record.status,
            assistant_text=record.text,
            error=record.error,
            worker_id=record.worker_id,
        )
        try:
            self.ask(finish)
        except TurnAlreadyFinishedError:
            if not retry:
                raise
        except REFUSED as exc:
            return ev.FinishRefused(record=record, reason=repr(exc), retry=retry)
        return ev.FinishStored(record=record, retry=retry)

    def card(self, thread_id: str, turn_id: str, kind: str, text: str) -> bool:
        """Store a card; False (logged) if the storage refused it."""
        try:
            self.ask(AddActionCard(thread_id=thread_id, turn_id=turn_id, kind=kind, text=text))
        except REFUSED as exc:
            _log.error("turns.card_failed", turn=turn_id, kind=kind, error=repr(exc))
            return False
        return True

    def set_followup(self, effect: ev.SetFollowUp) -> None:
        try:
            self.ask(SetFollowUpState(followup_id=effect.followup_id, state=effect.state, error=effect.error))
        except REFUSED as exc:  # start-up reconciliation settles it from its turn's status
            _log.error("turns.followup_state_failed", followup=effect.followup_id, error=repr(exc))

    def fetch_followup(self, thread_id: str, include_manual: bool) -> ev.Event:
        try:
            row = self.ask(NextFollowUp(thread_id=thread_id, include_manual=include_manual))
        except REFUSED as exc:
            _log.error("turns.followup_fetch_failed", thread=thread_id, error=repr(exc))
            row = None
        if row is None:
            return ev.FollowUpFetched(thread_id=thread_id)
        turn_id = row.followup_id if row.turn_id is None else new_turn_id()  # a retried one runs as a new turn
        return ev.FollowUpFetched(
            thread_id=thread_id,
            followup_id=row.followup_id,
            turn_id=turn_id,
            text=row.text,
            sink=self._registry.get(row.followup_id),
        )
