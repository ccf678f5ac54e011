"""Turn coordinator: the actor around the turn state machine (actors._turnmachine has the rules).

Contract: every message becomes one machine event; the machine's effects are carried out in order (each by
actors._turneffects, mixed in), and an effect that has an outcome feeds it back as the next event at once, so one
message is handled completely before the next. The effects' I/O:
- persistence (asked, each with a deadline, through actors._turnstore, which has the rules for refusals): begin,
  enqueue, finish, cards (an approval card that cannot be stored refuses the approval), follow-up states and
  starts; completed turns are told to the group commit and answered later by `TurnPersisted`;
- the mapping (asked, through actors._routes, which remembers its routes): resolve, bind, invalidate, worker
  up/down/health;
- workers (told): runtime calls (a worker that is not running answers at once with HOST_WORKER_EXITED), answers
  to server requests, and `RuntimeRequest`s that belong to no turn (to the lowest worker id that is up; its answer
  goes straight to the asker's `reply_to`);
- callers: events into their sinks; the host-owned `TurnRegistry` keeps the sinks so a replacement coordinator can
  still tell callers how their turns ended;
- timers (injected clock): each turn's deadline, the persistence retry, and the look for late answers.
Start-up (`on_child_start`) runs the reconciliation of actors._reconcile first. `Escalate` crashes the coordinator
on purpose (its supervisor decides); so does any unexpected exception (actors._refs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pykka

from agenthost.actors import _turnevents as ev
from agenthost.actors._clock import Clock, Timer
from agenthost.actors._deadline_asks import DeadlineAsks
from agenthost.actors._errors import (
    HostClosedError,
    HostUnavailableError,
    InvalidDecisionError,
    NoHealthyWorkerError,
    TurnNotActiveError,
    UnknownApprovalError,
)
from agenthost.actors._log import get_logger
from agenthost.actors._reconcile import reconcile
from agenthost.actors._refs import FaultHook, Reply, SupervisedActor, ask, tell_quietly
from agenthost.actors._routes import Router
from agenthost.actors._turneffects import TurnEffects
from agenthost.actors._turnmachine import step
from agenthost.actors._turnround import StorageRound
from agenthost.actors._turns import CoordinatorSettings, TurnRegistry, emit, new_turn_id
from agenthost.actors._turnstate import State
from agenthost.actors._turnstore import TurnStore
from agenthost.protocol._messages import (
    AbortActiveTurns,
    ActiveTurn,
    AnswerApproval,
    CallResult,
    CloseIntake,
    FollowUpsChanged,
    InterruptTurn,
    ListActiveTurns,
    ListApprovals,
    ListPendingTurns,
    PendingApproval,
    ResetWorkers,
    RetryPersistence,
    RuntimeCall,
    RuntimeOutput,
    RuntimeRequest,
    RuntimeStderr,
    SendMessage,
    SteerTurn,
    TurnAccepted,
    TurnDeadline,
    TurnFinished,
    TurnPersisted,
    WorkerDown,
    WorkerHealth,
    WorkerUp,
)
from agenthost.storage import StorageError, validate_id

__all__ = ["TurnCoordinator"]

_log = get_logger("agenthost.turns")
MAX_BEGIN_BATCH = 256  # direct sends whose begins are committed together at most
LATE_ANSWER_POLL_S = 0.05  # how often an ask's answer past its deadline is looked for (injected clock, seconds)


class _LateAnswersDue(msgspec.Struct, frozen=True):
    """Timer message: look for the late answers of asks past their deadline."""


class TurnCoordinator(TurnEffects, SupervisedActor):
    child_name = "turns"
    expected_errors = (HostClosedError, UnknownApprovalError, TurnNotActiveError, InvalidDecisionError, StorageError)

    def __init__(
        self,
        *,
        persistence_ref: pykka.ActorRef[Any],
        mapping_ref: pykka.ActorRef[Any],
        clock: Clock,
        settings: CoordinatorSettings,
        project_dir: Callable[[str], str],
        registry: TurnRegistry | None = None,
        prepare_resume: Callable[[str, int], bool] | None = None,
        supervisor_ref: Any = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        super().__init__(supervisor_ref=supervisor_ref, fault_hook=fault_hook)
        self._persistence = persistence_ref
        self._clock = clock
        self._project_dir = project_dir
        self._registry = registry or TurnRegistry()
        self._prepare_resume = prepare_resume
        self._state = State(
            max_active_turns=settings.max_active_turns,
            request_timeout_s=settings.request_timeout_s,
            turn_timeout_s=settings.turn_timeout_s,
            approval_policy=settings.approval_policy,
            sandbox=settings.sandbox,
        )
        self._ask_timeout_s = settings.ask_timeout_s
        self._store = TurnStore(
            lambda message: self._ask(persistence_ref, message),
            lambda message: tell_quietly(persistence_ref, message),
            self._registry,
        )
        self._asks = DeadlineAsks(settings.ask_timeout_s, self._store.take_back)
        self._late_timer: Timer | None = None
        self._workers: dict[int, Any] = {}  # worker id -> its actor ref (the machine knows the generations)
        self._deadlines: dict[str, Timer] = {}
        self._retry_timer: Timer | None = None
        self._router = Router(lambda message: self._ask(mapping_ref, message))  # remembers the mapping's routes
        self._round = StorageRound(self._store, self._registry, self._router.resolve)  # effects waiting for one round

    def on_child_start(self) -> None:
        threads = reconcile(self._persistence, self._registry, self._ask_timeout_s)
        self._state.waiting.extend(threads)
        self._state.queued.update(threads)

    def _ask(self, ref: pykka.ActorRef[Any], message: Any) -> Any:
        """Ask with the ask deadline (actors._deadline_asks: a slow actor is not asked again until it answered);
        while an answer is late it is looked for every LATE_ANSWER_POLL_S, so a begin or enqueue refused to its
        callers but taken by the storage after all is taken back (actors._turnstore) even when nothing more is
        asked."""
        try:
            return self._asks.ask(ref, message)
        except pykka.Timeout:
            self._watch_late_answers()
            raise

    def _watch_late_answers(self) -> None:
        if self._late_timer is None and self._asks.waiting:
            due = _LateAnswersDue()
            self._late_timer = self._clock.call_later(
                LATE_ANSWER_POLL_S, lambda: tell_quietly(self.actor_ref, due), name="late-answers"
            )

    # --- messages -> events ----------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        """Sends, turn ends, runtime output and call answers may leave storage effects waiting, to share one storage
        round with those of the messages queued behind them (none of these depends on an effect still waiting: a
        runtime only speaks of turns already begun); the round goes when the mailbox is empty, `MAX_BEGIN_BATCH`
        wait, or before (and after) any other message, so every other message (an interrupt, an approval, a
        deadline ...) sees the storage effects of those before it."""
        batching = isinstance(message, SendMessage | TurnPersisted | RuntimeOutput | CallResult)
        if not batching or (isinstance(message, SendMessage) and message.thread_id in self._state.starting):
            self._flush_round()  # (a send to a thread being started would queue behind it)
        answer = self._handle(message)
        if self._round and (not batching or len(self._round) >= MAX_BEGIN_BATCH or self.actor_inbox.empty()):
            self._flush_round()
        if isinstance(message, SendMessage) and message.reply_to is None:  # asked: answered once its round went
            self._flush_round()
            accepted: TurnAccepted = answer.wait(0.0)
            return accepted
        return answer

    def _handle(self, message: Any) -> Any:
        match message:
            case RuntimeOutput():
                self._run(
                    ev.Output(worker_id=message.worker_id, generation=message.generation, messages=message.messages)
                )
            case RuntimeStderr():
                self._run(ev.StderrLine(worker_id=message.worker_id, generation=message.generation, line=message.line))
            case CallResult():
                self._run(ev.CallAnswered(call_id=message.call_id, result=message.result, error=message.error))
            case TurnPersisted():
                self._run(ev.Completed(turn_id=message.turn_id, error=message.error))
            case SendMessage():
                return self._send(message)
            case AnswerApproval():
                self._run(ev.Answered(approval_id=message.approval_id, decision=message.decision))
            case InterruptTurn():
                self._run(ev.Interrupt(turn_id=message.turn_id))
            case RuntimeRequest():
                return self._pass_request(message)
            case SteerTurn():
                self._run(ev.Steer(turn_id=message.turn_id, text=message.text, input=message.input))
            case TurnDeadline():
                self._deadlines.pop(message.turn_id, None)
                self._run(ev.DeadlinePassed(turn_id=message.turn_id))
            case RetryPersistence():
                self._retry_timer = None
                self._run(ev.RetryDue())
            case _LateAnswersDue():
                self._late_timer = None
                self._asks.poll()
                self._watch_late_answers()
            case WorkerUp():
                self._workers[message.worker_id] = message.ref
                self._run(ev.WorkerJoined(worker_id=message.worker_id, generation=message.generation))
            case WorkerDown():
                self._run(
                    ev.WorkerGone(worker_id=message.worker_id, generation=message.generation, reason=message.reason)
                )
            case WorkerHealth():
                self._run(ev.WorkerHealthChanged(message=message))
            case FollowUpsChanged():
                for followup_id in message.cancelled:  # their callers hear they will not run
                    why = "cancelled: the message was removed from the queue before it ran"
                    emit(
                        self._registry.pop(followup_id),
                        TurnFinished(turn_id=followup_id, status="interrupted", text="", error=why),
                    )
                self._run(ev.QueueChanged(thread_id=message.thread_id, send_next=message.send_next))
            case ResetWorkers():
                self._run(ev.WorkersReset(reason=message.reason))
            case ListActiveTurns():
                return tuple(
                    ActiveTurn(
                        turn_id=t.turn_id,
                        thread_id=t.thread_id,
                        worker_id=t.worker_id,
                        phase=t.phase,
                        pending_approvals=tuple(t.approvals),
                    )
                    for t in self._state.turns.values()
                )
            case ListApprovals():
                state = self._state
                return tuple(
                    PendingApproval(
                        approval_id=a.approval_id,
                        turn_id=a.turn_id,
                        thread_id=state.turns[a.turn_id].thread_id,
                        method=a.method,
                        command=a.command,
                        reason=a.reason,
                    )
                    for a in state.approvals.values()
                )
            case CloseIntake():
                self._run(ev.StopIntake())
            case AbortActiveTurns():
                self._run(ev.AbortAll(reason=message.reason))
            case _:
                return super().handle(message)
        return None

    def _send(self, message: SendMessage) -> Reply | None:
        """A told send (`reply_to` set) is answered when its begin (or enqueue) is durable, in its storage round;
        an asked one gets the `Reply` to wait on (`handle` flushes the round first)."""
        reply = message.reply_to if message.reply_to is not None else Reply()
        try:
            turn_id = new_turn_id() if message.turn_id is None else validate_id("turn id", message.turn_id)
            if turn_id in self._state.turns or turn_id in self._state.beginning or self._registry.get(turn_id):
                raise StorageError(f"turn id {turn_id!r} is already in use")
            event = ev.Send(
                turn_id=turn_id,
                thread_id=message.thread_id,
                text=message.text,
                sink=message.sink,
                input=message.input,
                passthrough=message.passthrough,
                reply_to=reply,
            )
            self._run(event)
        except self.expected_errors as exc:
            if message.reply_to is None:
                raise
            reply.fail(exc)
            return None
        return reply if message.reply_to is None else None

    def _flush_round(self) -> None:
        """Send what waits (enqueues, follow-up starts, begins) to the storage in rounds and feed the outcomes back."""
        self._round.flush(self._run)

    def _pass_request(self, message: RuntimeRequest) -> int:
        up = sorted(worker for worker in self._state.workers if worker in self._workers)
        if not up:
            raise NoHealthyWorkerError(f"no runtime worker is up to answer {message.method}")
        call = RuntimeCall(
            call_id=0,
            method=message.method,
            params=message.params,
            timeout_s=self._state.request_timeout_s,
            reply_to=message.reply_to,
        )
        if not tell_quietly(self._workers[up[0]], call):
            raise NoHealthyWorkerError(f"runtime worker {up[0]} stopped before it could answer {message.method}")
        return up[0]

    def _run(self, event: ev.Event) -> None:
        """Step the machine, carry out its effects in order, and feed each outcome back at once."""
        pending: list[ev.Event] = [event]
        while pending:
            _, effects = step(self._state, pending.pop(0))
            for effect in effects:
                outcome = self._do(effect)
                if outcome is not None:
                    pending.append(outcome)

    def on_crash(self, error: BaseException) -> None:
        """Sends waiting for their storage round: their callers hear at once (nothing began or was queued)."""
        self._round.fail_all(HostUnavailableError(f"agenthost's turns crashed before this message began: {error!r}"))

    def on_stop(self) -> None:
        """Completions still in the group commit: wait for it (any ask flushes it) and tell their callers."""
        waiting = [r for r in self._state.ending.values() if r.status == "completed"]
        if not waiting:
            return
        try:
            pending = {row.turn_id for row in ask(self._persistence, ListPendingTurns(), timeout_s=10.0)}
        except Exception:  # noqa: BLE001 - persistence gone: the callers' handles time out; start-up repair settles
            return
        for record in waiting:
            if record.turn_id not in pending:
                self._run(ev.Completed(turn_id=record.turn_id))
