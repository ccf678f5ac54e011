"""The turn coordinator's effects: what each effect of the turn machine does (mixed into actors._coordinator).

Contract: `_do(effect)` carries out one effect and returns the event its outcome makes, or None. Enqueues,
follow-up starts and begins wait for the coordinator's storage round (actors._turnround); every other effect runs at
once, in the order the machine gave it:
- `Emit` puts an event in its caller's sink; `Accept`/`Refuse` answer a send's `reply_to`; `RegisterSink`/
  `ForgetSink` keep the host-owned registry of sinks;
- `CallRuntime` tells the worker a `RuntimeCall` (a `thread/start` gets the thread's project directory as `cwd`,
  its project asked of the persistence when the store does not know it); a worker that is not running answers at
  once with HOST_WORKER_EXITED; `AnswerRuntime` answers a server request (dropped when the worker is gone);
- `ArmDeadline`/`CancelDeadline`/`ArmRetry` set and cancel the injected clock's timers, each telling the
  coordinator its message when due;
- `Persist` asks the storage to finish a turn (its outcome is the next event), `PersistComplete` tells the group
  commit (answered later by `TurnPersisted`); both, and `MappingEvent`, first send the round's waiting updates;
- `AddCard`/`StoreApprovalCard` store cards (an approval card that cannot be stored refuses the approval);
  `SetFollowUp`/`ForgetOptions` update the storage; `PrepareResume` imports a runtime's state (an OSError is a
  warning: the resume still runs);
- `Log` and `Decide` are one structured event each; `Escalate` raises (a crash on purpose: the supervisor decides).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agenthost.actors import _turnevents as ev
from agenthost.actors._clock import Clock, Timer
from agenthost.actors._log import decision, get_logger
from agenthost.actors._refs import tell_quietly
from agenthost.actors._routes import Router
from agenthost.actors._turnround import StorageRound
from agenthost.actors._turns import TurnRegistry, emit
from agenthost.actors._turnstate import State
from agenthost.actors._turnstore import TurnStore
from agenthost.protocol._jsonrpc import RpcError
from agenthost.protocol._messages import (
    HOST_WORKER_EXITED,
    AnswerServerRequest,
    CompleteTurn,
    GetThread,
    RetryPersistence,
    RuntimeCall,
    TurnAccepted,
    TurnDeadline,
)

__all__ = ["Escalation", "TurnEffects"]

_log = get_logger("agenthost.turns")


class Escalation(RuntimeError):
    """The machine gave up on something its supervisor must decide (raised on purpose: a crash)."""


class TurnEffects:
    """The effects of the turn machine (the base of actors._coordinator's `TurnCoordinator`, which sets the state
    below in its `__init__` and provides `_ask`)."""

    actor_ref: Any
    _state: State
    _clock: Clock
    _persistence: Any
    _project_dir: Callable[[str], str]
    _registry: TurnRegistry
    _prepare_resume: Callable[[str, int], bool] | None
    _store: TurnStore
    _workers: dict[int, Any]  # worker id -> its actor ref (the machine knows the generations)
    _deadlines: dict[str, Timer]
    _retry_timer: Timer | None
    _router: Router
    _round: StorageRound

    def _ask(self, ref: Any, message: Any) -> Any:
        raise NotImplementedError

    def _do(self, effect: ev.Effect) -> ev.Event | None:
        if self._round.defer(effect):  # enqueues, starts and begins wait for one storage round
            return None
        match effect:
            case ev.Emit():
                emit(effect.sink, effect.event)
            case ev.Log():
                if effect.record is not None:
                    _log.record(effect.record, effect.level)
                else:
                    getattr(_log, effect.level)(effect.event, **effect.fields)
            case ev.CallRuntime():
                return self._call(effect)
            case ev.AnswerRuntime():
                ref = self._workers.get(effect.worker_id)
                if ref is not None:
                    tell_quietly(
                        ref, AnswerServerRequest(request_id=effect.request_id, result=effect.result, error=effect.error)
                    )
            case ev.Accept():
                effect.reply_to.set(TurnAccepted(turn_id=effect.turn_id, queued=effect.queued))
            case ev.Refuse():
                effect.reply_to.fail(effect.exception)
            case ev.RegisterSink():
                self._registry.put(effect.turn_id, effect.sink)
            case ev.ForgetSink():
                self._registry.pop(effect.turn_id)
            case ev.ArmDeadline():
                ref, due = self.actor_ref, TurnDeadline(turn_id=effect.turn_id)
                self._deadlines[effect.turn_id] = self._clock.call_later(
                    effect.delay_s, lambda: tell_quietly(ref, due), name="turn-deadline"
                )
            case ev.CancelDeadline():
                if (timer := self._deadlines.pop(effect.turn_id, None)) is not None:
                    timer.cancel()
            case ev.PrepareResume():
                self._prepare(effect)
            case ev.ForgetOptions():
                self._store.forget_options(effect.thread_id, effect.keys)
            case ev.MappingEvent():
                self._round.send_updates()
                self._router.worker_event(effect.message)
            case ev.AddCard():
                self._store.card(effect.thread_id, effect.turn_id, effect.kind, effect.text)
            case ev.StoreApprovalCard():
                ok = self._store.card(
                    effect.thread_id,
                    effect.approval.turn_id,
                    "approval requested",
                    f"{effect.approval.approval_id}: {effect.text}",
                )
                return ev.CardStored(approval=effect.approval, ok=ok)
            case ev.Persist():
                self._round.send_updates()
                return self._store.finish(effect.record, effect.retry)
            case ev.PersistComplete():
                self._round.send_updates()
                tell_quietly(
                    self._persistence,
                    CompleteTurn(
                        turn_id=effect.turn_id,
                        assistant_text=effect.text,
                        worker_id=effect.worker_id,
                        reply_to=self.actor_ref,
                    ),
                )
            case ev.SetFollowUp():
                self._store.settle_followup(effect)
            case ev.ArmRetry():
                ref = self.actor_ref
                self._retry_timer = self._clock.call_later(
                    effect.delay_s, lambda: tell_quietly(ref, RetryPersistence()), name="persist-retry"
                )
            case ev.Decide():
                decision(
                    _log,
                    supervisor="turns",
                    child=effect.child,
                    decision=effect.decision,
                    reason=effect.reason,
                    attempt=effect.attempt,
                    delay_s=effect.delay_s,
                )
            case ev.Escalate():
                raise Escalation(effect.reason)
        return None

    def _call(self, effect: ev.CallRuntime) -> ev.Event | None:
        params = effect.params
        if effect.method == "thread/start":
            project_id = self._store.project_of(effect.thread_id)
            if project_id is None:  # not begun lately (a resume after a restart): ask
                project_id = self._ask(self._persistence, GetThread(thread_id=effect.thread_id)).project_id
            params = {"cwd": self._project_dir(project_id), **params}
        call = RuntimeCall(
            call_id=effect.call_id,
            method=effect.method,
            params=params,
            timeout_s=self._state.request_timeout_s,
            reply_to=self.actor_ref,
        )
        ref = self._workers.get(effect.worker_id)
        if ref is None or not tell_quietly(ref, call):
            gone = RpcError(code=HOST_WORKER_EXITED, message=f"runtime worker {effect.worker_id} is not running")
            return ev.CallAnswered(call_id=effect.call_id, error=gone)
        return None

    def _prepare(self, effect: ev.PrepareResume) -> None:
        if self._prepare_resume is None:
            return
        try:
            if self._prepare_resume(effect.runtime_thread_id, effect.worker_id):
                _log.info("turns.runtime_state_imported", turn=effect.turn_id, worker=effect.worker_id)
        except OSError as exc:  # resume still runs: at worst the thread is recreated, as before
            _log.warning("turns.runtime_state_import_failed", turn=effect.turn_id, error=repr(exc))
