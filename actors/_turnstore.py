"""The turn coordinator's storage effects: each asks the persistence actor (through the coordinator's `ask`, which
has its deadline rules) and turns its outcome into the machine's next event.

Contract: a storage refusal (`REFUSED`: a storage error, the persistence actor unavailable, dead or past its
deadline) never escapes except where the caller must hear it. The begins, enqueues and follow-up starts are
batched: one ask (one transaction) for many effects, each effect getting its own outcome; a refusal of the whole
round is every effect's outcome.
- `begin_direct`: the begins of direct sends, each `Begun` or `BeginRefused` carrying the storage's error for its
  caller. `start_followups`: per thread the head of its queue, dispatched and begun in one transaction (a crash can
  neither lose nor repeat it; a follow-up that ran before runs as a new turn), as `FollowUpStarted`: begun, none
  (also for a thread that does not exist), or refused (logged; nothing of it stands, the machine tries it again at
  its retry). `enqueue`: per follow-up None or its error.
- `finish`: a refusal becomes `FinishRefused` (the machine retries it by policy); a turn already finished is only
  accepted on a retry (the earlier attempt landed after all).
- `project_of(thread_id)`: the project of a thread one of the last PROJECTS_KEPT begins named (from their
  answers), None when not among them.
- `forget_options` removes per-turn settings the runtime refused from the thread; a refusal is logged.
- `take_back(message, answer)`: a begin, start or enqueue round that answered past the ask deadline was refused to
  every caller; what the storage took of it is told back (`TakeBack`: its turns end failed, follow-ups they ran
  queue again, enqueued ones are cancelled) with one `TakenBack` event. Anything else answered late is left as it
  is.
- `card`: False (logged) when refused. `settle_followup` is told (group-committed with the completions; a refusal
  is logged by the storage); start-up reconciliation settles the state.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import pykka

from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import HostUnavailableError
from agenthost.actors._events import TakenBack
from agenthost.actors._log import get_logger
from agenthost.actors._turns import TurnRegistry, new_turn_id
from agenthost.actors._turnstate import Unpersisted
from agenthost.protocol._messages import (
    AddActionCard,
    BeginTurn,
    BeginTurns,
    EnqueueFollowUp,
    EnqueueFollowUps,
    FinishTurn,
    NextFollowUpStarted,
    SettleFollowUp,
    StartNextFollowUp,
    StartNextFollowUps,
    TakeBack,
    TakenBegin,
    TurnBegun,
    UpdateThread,
)
from agenthost.storage import StorageError, TurnAlreadyFinishedError, UnknownThreadError

__all__ = ["REFUSED", "TurnStore"]

_log = get_logger("agenthost.turns")
PROJECTS_KEPT = 4096  # threads whose project the store remembers from their last begin
TAKEN_BACK_NOTE = (
    "taken back: the storage answered past the ask deadline, after the host had given this begin up (a direct "
    "send's caller heard it refused); it did not run, and a queued message runs again as a new turn"
)
REFUSED = (StorageError, HostUnavailableError, pykka.ActorDeadError, pykka.Timeout)  # the storage did not take it


class TurnStore:
    def __init__(self, ask: Callable[[Any], Any], tell: Callable[[Any], Any], registry: TurnRegistry) -> None:
        self.ask = ask  # asks the persistence actor, with the coordinator's deadline rules
        self._tell = tell
        self._registry = registry
        self._projects: collections.OrderedDict[str, str] = collections.OrderedDict()  # thread -> its project

    def project_of(self, thread_id: str) -> str | None:
        return self._projects.get(thread_id)

    def _begin_outcome(self, effect: ev.Begin, answer: Any) -> ev.Event:
        """`Begun`, or `BeginRefused` carrying the storage's error for the direct send's caller."""
        if isinstance(answer, BaseException):
            return ev.BeginRefused(
                turn_id=effect.turn_id,
                thread_id=effect.thread_id,
                error=repr(answer),
                exception=answer,
                reply_to=effect.reply_to,
            )
        self._remember_project(effect.thread_id, answer)
        return ev.Begun(
            turn_id=effect.turn_id,
            thread_id=effect.thread_id,
            text=effect.text,
            sink=effect.sink,
            settings=answer.settings,
            reply_to=effect.reply_to,
        )

    def _remember_project(self, thread_id: str, answer: TurnBegun) -> None:
        if answer.project_id:
            self._projects[thread_id] = answer.project_id
            self._projects.move_to_end(thread_id)
            if len(self._projects) > PROJECTS_KEPT:
                self._projects.popitem(last=False)

    def begin_direct(self, effects: list[ev.Begin]) -> list[ev.Event]:
        """Begin direct sends (their storage errors go back to their callers, as BeginRefused)."""
        begins = tuple(BeginTurn(turn_id=e.turn_id, thread_id=e.thread_id, user_text=e.text) for e in effects)
        answers = self._round(BeginTurns(begins=begins), len(effects))  # refused whole: every caller hears why
        return [self._begin_outcome(effect, answer) for effect, answer in zip(effects, answers, strict=True)]

    def forget_options(self, thread_id: str, keys: tuple[str, ...]) -> None:
        try:
            self.ask(UpdateThread(thread_id=thread_id, turn_settings=dict.fromkeys(keys)))
        except REFUSED as exc:  # the next turn is refused once more and retried without them again
            _log.error("turns.forget_options_failed", thread=thread_id, keys=list(keys), error=repr(exc))

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

    def start_followups(self, effects: list[ev.StartFollowUp]) -> list[ev.Event]:
        """Start the heads of several threads' queues in one round (see the module contract)."""
        starts = tuple(
            StartNextFollowUp(thread_id=e.thread_id, include_manual=e.include_manual, retry_turn_id=new_turn_id())
            for e in effects
        )
        answers = self._round(StartNextFollowUps(starts=starts), len(effects))
        return [self._started(effect, answer) for effect, answer in zip(effects, answers, strict=True)]

    def _started(self, effect: ev.StartFollowUp, answer: Any) -> ev.FollowUpStarted:
        thread_id = effect.thread_id
        if isinstance(answer, UnknownThreadError):  # (a send to it was queued, its enqueue refused): no queue
            return ev.FollowUpStarted(thread_id=thread_id)
        if isinstance(answer, BaseException):
            _log.error("turns.followup_start_failed", thread=thread_id, error=repr(answer))
            return ev.FollowUpStarted(thread_id=thread_id, refused=True)
        started: NextFollowUpStarted = answer
        row, begun = started.followup, started.begun
        if begun is None:  # (the storage begins a head whenever it found one)
            return ev.FollowUpStarted(thread_id=thread_id)
        self._remember_project(thread_id, begun)
        return ev.FollowUpStarted(
            thread_id=thread_id,
            followup_id=row.followup_id,
            turn_id=begun.turn.turn_id,
            text=row.text,
            sink=self._registry.get(row.followup_id),
            more=started.more,
            settings=begun.settings,
        )

    def enqueue(self, effects: list[ev.Enqueue]) -> list[BaseException | None]:
        """Queue several follow-ups in one transaction: per effect None (durable) or the error that refused it."""
        enqueues = tuple(EnqueueFollowUp(followup_id=e.turn_id, thread_id=e.thread_id, text=e.text) for e in effects)
        answers = self._round(EnqueueFollowUps(enqueues=enqueues), len(effects))
        return [answer if isinstance(answer, BaseException) else None for answer in answers]

    def settle_followup(self, effect: ev.SetFollowUp) -> None:
        """Told, group-committed with the completions; a refusal is logged by the storage (start-up reconciliation
        settles it from its turn's status)."""
        self._tell(SettleFollowUp(followup_id=effect.followup_id, state=effect.state, error=effect.error))

    def take_back(self, message: Any, answer: Any) -> None:
        """The late answer of a round refused to its callers: tell the storage to take back what it took."""
        if not isinstance(answer, tuple):
            return  # refused whole after all (or not a round): nothing was taken
        begun: list[TakenBegin] = []
        enqueued: list[str] = []
        match message:
            case BeginTurns():
                begun = [TakenBegin(turn_id=b.turn_id) for b, a in zip(message.begins, answer, strict=True) if _took(a)]
            case StartNextFollowUps():
                begun = [
                    TakenBegin(turn_id=a.begun.turn.turn_id, followup_id=a.followup.followup_id)
                    for a in answer
                    if _took(a) and a.begun is not None
                ]
            case EnqueueFollowUps():
                enqueued = [e.followup_id for e, a in zip(message.enqueues, answer, strict=True) if _took(a)]
        if not begun and not enqueued:
            return
        turns = [taken.turn_id for taken in begun]
        _log.record(TakenBack(ask=type(message).__name__, turns=turns, followups=enqueued), "warning")
        self._tell(TakeBack(begun=tuple(begun), enqueued=tuple(enqueued), error=TAKEN_BACK_NOTE))

    def _round(self, message: Any, count: int) -> tuple[Any, ...]:
        """One batched ask: its outcomes, or the refusal of the whole round as every item's outcome."""
        try:
            answers: tuple[Any, ...] = self.ask(message)
        except StorageError as exc:
            return (exc,) * count
        except REFUSED as exc:  # what a caller hears: the host's error, never pykka's
            unavailable = HostUnavailableError(f"agenthost's storage cannot take this now: {exc}")
            return (unavailable,) * count
        return answers


def _took(answer: Any) -> bool:
    return not isinstance(answer, BaseException)
