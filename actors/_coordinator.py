"""Turn coordinator: dispatches user messages to runtimes and turns runtime output into durable turns.

Contract (dispatch, in this order): the user message is appended and the turn's *pending* checkpoint written
(durable before anything is sent to a runtime); a concurrency slot is reserved; the runtime thread is resolved
through the mapping actor (`thread/start` when the thread has none yet); `turn/start` is sent.
- One turn per thread at a time. A message for a busy thread, or one arriving when `max_active_turns` are running,
  goes to the persisted follow-up queue and is dispatched, in order, when the thread/slot frees up.
- Lazy resume: a runtime thread is used with `turn/start` only while it is known loaded in the current generation
  of its worker (started or resumed there); otherwise `thread/resume` runs first. A worker going down clears its
  entries, so after any runtime restart a thread is resumed on its next use.
- Stale runtime thread: `turn/start` answered with -32600 "thread not found:" -> `thread/resume`; if that answers
  "no rollout found" the mapping is invalidated and a new runtime thread is started (an action card says the
  runtime lost its copy of the history). `turn/start` is then retried exactly once.
- Every turn ends exactly once, as completed / interrupted / failed, and is persisted (`FinishTurn`, durable) before
  its subscriber sees `TurnFinished`. A host-side deadline (`turn_timeout_s`, injected clock) fails a turn the
  runtime never finishes and sends `turn/interrupt`.
- Worker down (reconciliation, in this order): pending approvals of its turns are reset with an action card in the
  transcript and an `ApprovalReset` event; its active turns end as failed (persisted at once); its calls and its
  loaded-thread cache are forgotten; the mapping moves its pins (asked, so done before any queued message is
  dispatched again). `ResetWorkers` does this for every known worker (the pool was stopped).
- Start-up reconciliation (a new coordinator, after a host or coordinator restart): every turn still "pending" in
  the database is ended as failed with a note, and its caller, if the host's `TurnRegistry` still has it, hears
  `TurnFinished`; dispatched follow-ups are settled; queued follow-ups are dispatched once workers are up.
- Approvals leave durable cards (requested / answered / withdrawn / reset, each `<approval id>: ...`), so a host
  that died with an approval open resets it with a card at the next start. An approval request whose card cannot
  be stored is refused to the runtime at once: no command ever runs on an approval that is not on record.
- A turn end the storage refuses (disk full, I/O error) is reported to the caller as failed "not persisted yet"
  and retried with backoff (1, 2, 4 ... 30 s, injected clock) until it lands with its real outcome.
- Every server->client request is answered: approvals when the caller decides (or reset on worker death), all
  others at once with a HOST_UNSUPPORTED_REQUEST error, so no runtime turn can block on the host.
- Output from an older generation of a worker is ignored.
"""

from __future__ import annotations

import collections
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import pykka

from agenthost.actors._clock import Clock, Timer
from agenthost.actors._log import get_logger
from agenthost.actors._mapping import NoHealthyWorkerError
from agenthost.actors._recovery import next_delay
from agenthost.actors._refs import SupervisedActor, ask, tell_quietly, unknown_message
from agenthost.actors._turns import (
    APPROVAL_METHODS,
    PERSIST_RETRY,
    STEP_METHODS,
    Approval,
    CoordinatorSettings,
    HostClosedError,
    TurnNotActiveError,
    TurnRegistry,
    TurnState,
    UnknownApprovalError,
    emit,
    flush_deltas,
    nested_id,
    new_turn_id,
    runtime_turn_of,
    validate_decision,
)
from agenthost.protocol._errors import is_no_rollout, is_thread_not_found
from agenthost.protocol._jsonrpc import Notification, Request, RpcError
from agenthost.protocol._messages import (
    HOST_UNSUPPORTED_REQUEST,
    HOST_WORKER_EXITED,
    AbortActiveTurns,
    ActiveTurn,
    AddActionCard,
    AnswerApproval,
    AnswerServerRequest,
    ApprovalRequested,
    ApprovalReset,
    ApprovalResolved,
    BeginFollowUpTurn,
    BeginTurn,
    BindRuntimeThread,
    CallResult,
    CloseIntake,
    CompleteTurn,
    EnqueueFollowUp,
    FinishTurn,
    GetThread,
    InterruptTurn,
    InvalidateRuntimeThread,
    ListActionCards,
    ListActiveTurns,
    ListFollowUps,
    ListPendingTurns,
    ListThreads,
    ListTurns,
    NextFollowUp,
    ResetWorkers,
    ResolveThread,
    RetryPersistence,
    RuntimeCall,
    RuntimeOutput,
    SendMessage,
    SetFollowUpState,
    TurnAccepted,
    TurnDeadline,
    TurnFinished,
    TurnPersisted,
    TurnStarted,
    WorkerDown,
    WorkerHealth,
    WorkerUp,
)
from agenthost.storage import RESTARTED_NOTE, FollowUpState, StorageError, TurnAlreadyFinishedError

__all__ = ["TurnCoordinator"]

_log = get_logger("agenthost.turns")


class TurnCoordinator(SupervisedActor):
    child_name = "turns"

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
    ) -> None:
        super().__init__(supervisor_ref=supervisor_ref)
        self._prepare_resume = prepare_resume
        self._registry = registry or TurnRegistry()
        self._persistence = persistence_ref
        self._mapping = mapping_ref
        self._clock = clock
        self._settings = settings
        self._project_dir = project_dir
        self._turns: dict[str, TurnState] = {}
        self._busy: dict[str, str] = {}  # thread id -> active turn id
        self._routes: dict[tuple[int, str], str] = {}  # (worker, runtime thread) -> turn id
        self._calls: dict[int, tuple[str, str]] = {}  # call id -> (turn id, step)
        self._call_ids = itertools.count(1)
        self._approvals: dict[str, Approval] = {}
        self._workers: dict[int, tuple[int, Any]] = {}  # worker id -> (generation, ref)
        self._waiting: collections.deque[str] = collections.deque()  # threads waiting for a slot
        self._loaded: set[tuple[int, int, str]] = set()  # (worker, generation, runtime thread) known loaded
        self._persisting: dict[str, tuple[TurnState, str]] = {}  # completed turns waiting for the group commit
        self._unpersisted: dict[str, FinishTurn] = {}  # turn ends the storage refused (disk full, I/O): retried
        self._retry_attempt = 0
        self._retry_timer: Timer | None = None
        self._intake_open = True

    def on_child_start(self) -> None:
        """Settle what a previous coordinator (or host process) left unfinished; see the module contract."""
        reason = RESTARTED_NOTE
        for row in ask(self._persistence, ListPendingTurns()):
            self._reset_orphaned_approvals(row.thread_id, row.turn_id)
            ask(
                self._persistence,
                FinishTurn(turn_id=row.turn_id, status="failed", assistant_text=row.assistant_text, error=reason),
            )
            emit(
                self._registry.pop(row.turn_id),
                TurnFinished(turn_id=row.turn_id, status="failed", text=row.assistant_text, error=reason),
            )
            _log.warning("turns.reconciled_pending", turn=row.turn_id, thread=row.thread_id)
        for thread in ask(self._persistence, ListThreads()):
            self._settle_followups(thread.thread_id)

    def _reset_orphaned_approvals(self, thread_id: str, turn_id: str) -> None:
        """Approvals a dead host left open (requested, never answered/withdrawn/reset) get their reset card."""
        opened: dict[str, str] = {}
        for card in ask(self._persistence, ListActionCards(thread_id=thread_id)):
            if card.turn_id != turn_id or not card.kind.startswith("approval "):
                continue
            approval_id = card.text.split(":", 1)[0]
            if card.kind == "approval requested":
                opened[approval_id] = card.text
            else:
                opened.pop(approval_id, None)
        for approval_id in opened:
            text = (
                f"{approval_id}: reset: agenthost restarted while this approval waited for an answer. "
                "Nothing was executed; send the message again to retry."
            )
            ask(
                self._persistence, AddActionCard(thread_id=thread_id, turn_id=turn_id, kind="approval reset", text=text)
            )
            _log.warning("turns.approvals_reset", turn=turn_id, approvals=[approval_id], reason="agenthost restarted")

    def _settle_followups(self, thread_id: str) -> None:
        statuses = {t.turn_id: t.status for t in ask(self._persistence, ListTurns(thread_id=thread_id))}
        for followup in ask(self._persistence, ListFollowUps(thread_id=thread_id)):
            if followup.state == "dispatched":
                settled: FollowUpState = "done" if statuses.get(followup.followup_id) == "completed" else "failed"
                ask(self._persistence, SetFollowUpState(followup_id=followup.followup_id, state=settled))
            elif followup.state == "queued" and thread_id not in self._waiting:
                self._waiting.append(thread_id)

    # --- dispatch ---------------------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        match message:
            case RuntimeOutput():
                self._on_output(message)
            case CallResult():
                self._on_call_result(message)
            case TurnPersisted():
                self._on_persisted(message)
            case RetryPersistence():
                self._on_retry_persistence()
            case SendMessage():
                return self._on_send(message)
            case AnswerApproval():
                return self._on_answer(message)
            case InterruptTurn():
                return self._on_interrupt(message.turn_id)
            case TurnDeadline():
                self._on_deadline(message.turn_id)
            case WorkerUp():
                self._workers[message.worker_id] = (message.generation, message.ref)
                ask(self._mapping, message)
                self._dispatch_waiting()
            case WorkerDown():
                self._on_worker_down(message)
            case WorkerHealth():
                ask(self._mapping, message)
            case ResetWorkers():
                for worker_id, (generation, _) in list(self._workers.items()):
                    self._on_worker_down(WorkerDown(worker_id=worker_id, generation=generation, reason=message.reason))
            case ListActiveTurns():
                return tuple(self._active(turn) for turn in self._turns.values())
            case CloseIntake():
                self._intake_open = False
            case AbortActiveTurns():
                for turn in list(self._turns.values()):
                    self._reset_approvals(turn, message.reason)
                    self._finish(turn, "failed", message.reason, dispatch_next=False)
            case _:
                unknown_message("turn coordinator", message)
        return None

    def _on_send(self, message: SendMessage) -> TurnAccepted:
        if not self._intake_open:
            raise HostClosedError("agenthost is shutting down and accepts no new messages")
        ask(self._persistence, GetThread(thread_id=message.thread_id))  # raises for an unknown/invalid id
        turn_id = new_turn_id()
        thread_busy = message.thread_id in self._busy
        if thread_busy or len(self._turns) >= self._settings.max_active_turns:
            ask(self._persistence, EnqueueFollowUp(followup_id=turn_id, thread_id=message.thread_id, text=message.text))
            self._registry.put(turn_id, message.sink)
            if not thread_busy and message.thread_id not in self._waiting:
                self._waiting.append(message.thread_id)
            _log.info("turns.queued", turn=turn_id, thread=message.thread_id, thread_busy=thread_busy)
            return TurnAccepted(turn_id=turn_id, queued=True)
        self._dispatch(turn_id, message.thread_id, message.text, message.sink, followup=False)
        return TurnAccepted(turn_id=turn_id, queued=False)

    def _dispatch(self, turn_id: str, thread_id: str, text: str, sink: Any, *, followup: bool) -> None:
        if followup:  # dispatched + turn begun in one transaction: a crash can neither lose nor repeat it
            ask(self._persistence, BeginFollowUpTurn(followup_id=turn_id))
        else:
            ask(self._persistence, BeginTurn(turn_id=turn_id, thread_id=thread_id, user_text=text))
        self._registry.put(turn_id, sink)
        turn = TurnState(turn_id=turn_id, thread_id=thread_id, text=text, sink=sink, followup=followup)
        self._turns[turn_id] = turn
        self._busy[thread_id] = turn_id
        ref = self.actor_ref
        turn.deadline = self._clock.call_later(
            self._settings.turn_timeout_s, lambda: tell_quietly(ref, TurnDeadline(turn_id=turn_id))
        )
        try:
            route = ask(self._mapping, ResolveThread(thread_id=thread_id))
        except NoHealthyWorkerError as exc:
            self._finish(turn, "failed", str(exc))
            return
        turn.worker_id = route.worker_id
        turn.runtime_thread_id = route.runtime_thread_id
        _log.info("turns.dispatched", turn=turn_id, thread=thread_id, worker=route.worker_id)
        if route.runtime_thread_id is None:
            self._start_thread(turn)
        elif self._is_loaded(route.worker_id, route.runtime_thread_id):
            self._start_turn(turn)
        else:
            self._resume(turn, f"not loaded in runtime worker {route.worker_id} since its last start")

    def _is_loaded(self, worker_id: int, runtime_thread_id: str) -> bool:
        worker = self._workers.get(worker_id)
        return worker is not None and (worker_id, worker[0], runtime_thread_id) in self._loaded

    def _resume(self, turn: TurnState, reason: str) -> None:
        _log.info("turns.resuming", turn=turn.turn_id, runtime_thread=turn.runtime_thread_id, reason=reason)
        if self._prepare_resume is not None and turn.runtime_thread_id and turn.worker_id is not None:
            try:
                if self._prepare_resume(turn.runtime_thread_id, turn.worker_id):
                    _log.info("turns.runtime_state_imported", turn=turn.turn_id, worker=turn.worker_id)
            except OSError as exc:  # resume still runs: at worst the thread is recreated, as before
                _log.warning("turns.runtime_state_import_failed", turn=turn.turn_id, error=repr(exc))
        self._call(turn, "resume", "thread/resume", {"threadId": turn.runtime_thread_id})

    def _start_thread(self, turn: TurnState) -> None:
        thread = ask(self._persistence, GetThread(thread_id=turn.thread_id))
        params = {
            "cwd": self._project_dir(thread.project_id),
            "approvalPolicy": self._settings.approval_policy,
            "sandbox": self._settings.sandbox,
        }
        self._call(turn, "thread_start", "thread/start", params)

    def _start_turn(self, turn: TurnState) -> None:
        assert turn.worker_id is not None and turn.runtime_thread_id is not None
        self._routes[(turn.worker_id, turn.runtime_thread_id)] = turn.turn_id
        params = {"threadId": turn.runtime_thread_id, "input": [{"type": "text", "text": turn.text}]}
        self._call(turn, "turn_start", "turn/start", params)

    def _call(self, turn: TurnState, step: str, method: str, params: Any) -> None:
        turn.phase = step
        call_id = next(self._call_ids)
        self._calls[call_id] = (turn.turn_id, step)
        worker = self._workers.get(turn.worker_id) if turn.worker_id is not None else None
        call = RuntimeCall(
            call_id=call_id,
            method=method,
            params=params,
            timeout_s=self._settings.request_timeout_s,
            reply_to=self.actor_ref,
        )
        if worker is None or not tell_quietly(worker[1], call):
            gone = RpcError(code=HOST_WORKER_EXITED, message=f"runtime worker {turn.worker_id} is not running")
            self._on_call_result(CallResult(call_id=call_id, worker_id=turn.worker_id or 0, error=gone))

    # --- replies from runtimes --------------------------------------------------------------------------------
    def _on_call_result(self, reply: CallResult) -> None:
        entry = self._calls.pop(reply.call_id, None)
        if entry is None:
            return
        turn = self._turns.get(entry[0])
        if turn is None:
            return
        step, error = entry[1], reply.error
        if step == "interrupt":
            if error is not None:
                _log.warning("turns.interrupt_refused", turn=turn.turn_id, error=error.message)
            return
        if error is not None:
            self._on_call_error(turn, step, error)
            return
        result = reply.result if isinstance(reply.result, dict) else {}
        if step in ("thread_start", "resume"):
            runtime_thread_id = nested_id(result, "thread")
            if runtime_thread_id is None:
                self._finish(turn, "failed", f"{step} answered without thread.id: {reply.result!r}")
                return
            assert turn.worker_id is not None
            ask(
                self._mapping,
                BindRuntimeThread(
                    thread_id=turn.thread_id, worker_id=turn.worker_id, runtime_thread_id=runtime_thread_id
                ),
            )
            turn.runtime_thread_id = runtime_thread_id
            worker = self._workers.get(turn.worker_id)
            if worker is not None:
                self._loaded.add((turn.worker_id, worker[0], runtime_thread_id))
            self._start_turn(turn)
        elif step == "turn_start":
            turn.runtime_turn_id = nested_id(result, "turn")
            turn.phase = "streaming"
            emit(turn.sink, TurnStarted(turn_id=turn.turn_id, worker_id=turn.worker_id or 0))

    def _on_call_error(self, turn: TurnState, step: str, error: RpcError) -> None:
        if step == "turn_start" and is_thread_not_found(error) and not turn.retried:
            turn.retried = True
            assert turn.worker_id is not None and turn.runtime_thread_id is not None
            worker = self._workers.get(turn.worker_id)
            if worker is not None:
                self._loaded.discard((turn.worker_id, worker[0], turn.runtime_thread_id))
            self._resume(turn, f"runtime answered: {error.message}")
            return
        if step == "resume" and is_no_rollout(error):
            ask(self._mapping, InvalidateRuntimeThread(thread_id=turn.thread_id))
            ask(
                self._persistence,
                AddActionCard(
                    thread_id=turn.thread_id,
                    turn_id=turn.turn_id,
                    kind="runtime thread recreated",
                    text="The runtime no longer had this conversation; a new runtime thread was started. "
                    "This transcript still holds the full history.",
                ),
            )
            self._start_thread(turn)
            return
        self._finish(turn, "failed", f"{STEP_METHODS[step]} failed: {error.message}")

    def _on_output(self, output: RuntimeOutput) -> None:
        """Route one stdout read. Hot path: a run of deltas for one turn becomes one coalesced `Delta` event."""
        known = self._workers.get(output.worker_id)
        if known is None or known[0] != output.generation:
            return
        worker_id = output.worker_id
        run_turn: TurnState | None = None
        run: list[str] = []
        for message in output.messages:
            if isinstance(message, Notification) and message.method == "item/agentMessage/delta":
                params = message.params
                turn = self._turn_for(worker_id, message.method, params)
                if turn is None:
                    continue
                if turn is not run_turn:
                    flush_deltas(run_turn, run)
                    run_turn, run = turn, []
                delta = params.get("delta", "")
                turn.items.setdefault(params.get("itemId", ""), []).append(delta)
                run.append(delta)
                continue
            flush_deltas(run_turn, run)
            run_turn, run = None, []
            if isinstance(message, Notification):
                self._on_notification(worker_id, message)
            elif isinstance(message, Request):
                self._on_server_request(worker_id, message)
        flush_deltas(run_turn, run)

    def _turn_for(self, worker_id: int, method: str, params: Any) -> TurnState | None:
        """The active turn a runtime message belongs to: same worker and runtime thread, and, when the message
        names a runtime turn, that very turn (a late message of an earlier turn on the thread is not ours)."""
        if not isinstance(params, dict) or not isinstance(thread_id := params.get("threadId"), str):
            return None
        turn_id = self._routes.get((worker_id, thread_id))
        turn = None if turn_id is None else self._turns.get(turn_id)
        if turn is None:
            return None
        named = runtime_turn_of(method, params)
        return turn if named is None or named == turn.runtime_turn_id else None

    def _on_notification(self, worker_id: int, note: Notification) -> None:
        method, params = note.method, note.params
        turn = self._turn_for(worker_id, method, params)
        if turn is None:
            return
        if method == "turn/started":
            turn.started = True
            if turn.interrupt_requested:  # asked before the runtime could accept it ("no active turn" race)
                self._send_interrupt(turn)
        elif method == "item/completed":
            item = params.get("item") or {}
            if item.get("type") == "agentMessage":
                turn.items[item.get("id", "")] = [item.get("text") or ""]  # the runtime's final word on the item
        elif method == "turn/completed":
            self._on_turn_completed(turn, params.get("turn") or {})
        elif method == "serverRequest/resolved":
            self._on_request_resolved(turn, params.get("requestId"))
        elif method == "error" and not params.get("willRetry", False):
            turn.runtime_error = (params.get("error") or {}).get("message")

    def _on_turn_completed(self, turn: TurnState, runtime_turn: dict[str, Any]) -> None:
        status = runtime_turn.get("status")
        error = (
            (runtime_turn.get("error") or {}).get("message") if isinstance(runtime_turn.get("error"), dict) else None
        )
        if status == "completed":
            self._finish(turn, "completed", None)
        elif status == "interrupted":
            self._finish(turn, "interrupted", error)
        else:
            self._finish(turn, "failed", error or turn.runtime_error or f"runtime reported turn status {status!r}")

    def _on_server_request(self, worker_id: int, request: Request) -> None:
        turn = self._turn_for(worker_id, request.method, request.params)
        if request.method not in APPROVAL_METHODS or turn is None:
            why = "no active turn for its thread" if turn is None else "not supported by agenthost"
            self._answer(
                worker_id, request.id, error=RpcError(code=HOST_UNSUPPORTED_REQUEST, message=f"{request.method}: {why}")
            )
            return
        params = request.params
        approval = Approval(
            approval_id=f"approval-{uuid.uuid4().hex[:12]}",
            turn_id=turn.turn_id,
            worker_id=worker_id,
            request_id=request.id,
            method=request.method,
            command=params.get("command"),
        )
        reason = params.get("reason")
        recorded = self._approval_card(
            turn,
            "approval requested",
            approval.approval_id,
            f"the runtime asks to run `{approval.command or request.method}`" + (f" ({reason})" if reason else ""),
        )
        if not recorded:  # never let a command run on an approval that is not on record
            message = f"{request.method}: refused, the approval could not be recorded (storage error)"
            self._answer(worker_id, request.id, error=RpcError(code=HOST_UNSUPPORTED_REQUEST, message=message))
            return
        self._approvals[approval.approval_id] = approval
        turn.approvals[approval.approval_id] = approval
        _log.info("turns.approval_requested", turn=turn.turn_id, approval=approval.approval_id, method=request.method)
        emit(
            turn.sink,
            ApprovalRequested(
                turn_id=turn.turn_id,
                approval_id=approval.approval_id,
                method=request.method,
                command=approval.command,
                reason=reason,
            ),
        )

    def _on_request_resolved(self, turn: TurnState, request_id: Any) -> None:
        for approval in list(turn.approvals.values()):
            if approval.request_id == request_id and type(approval.request_id) is type(request_id):
                self._drop_approval(turn, approval.approval_id)
                self._approval_card(
                    turn, "approval withdrawn", approval.approval_id, "the runtime withdrew the request"
                )
                emit(turn.sink, ApprovalResolved(turn_id=turn.turn_id, approval_id=approval.approval_id))

    def _answer(
        self, worker_id: int, request_id: int | str, *, result: Any = None, error: RpcError | None = None
    ) -> None:
        worker = self._workers.get(worker_id)
        if worker is not None:
            tell_quietly(worker[1], AnswerServerRequest(request_id=request_id, result=result, error=error))

    # --- commands from the caller -----------------------------------------------------------------------------
    def _on_answer(self, message: AnswerApproval) -> None:
        decision = validate_decision(message.decision)
        approval = self._approvals.get(message.approval_id)
        if approval is None:
            raise UnknownApprovalError(f"unknown or already answered approval id {message.approval_id!r}")
        turn = self._turns[approval.turn_id]
        self._drop_approval(turn, approval.approval_id)
        self._approval_card(turn, "approval answered", approval.approval_id, f"{decision}")
        self._answer(approval.worker_id, approval.request_id, result={"decision": decision})
        _log.info("turns.approval_answered", turn=turn.turn_id, approval=approval.approval_id, decision=decision)
        emit(turn.sink, ApprovalResolved(turn_id=turn.turn_id, approval_id=approval.approval_id))

    def _approval_card(self, turn: TurnState, kind: str, approval_id: str, text: str) -> bool:
        """Every step of an approval is a durable card `<approval id>: <text>` under its turn, so a host that died
        with the approval open can still reset it with a message at its next start. False if it was not stored."""
        card = AddActionCard(thread_id=turn.thread_id, turn_id=turn.turn_id, kind=kind, text=f"{approval_id}: {text}")
        try:
            ask(self._persistence, card)
        except Exception as exc:  # noqa: BLE001 - reported; the caller decides what an unrecorded step means
            _log.error("turns.approval_card_failed", turn=turn.turn_id, approval=approval_id, error=repr(exc))
            return False
        return True

    def _drop_approval(self, turn: TurnState, approval_id: str) -> None:
        turn.approvals.pop(approval_id, None)
        self._approvals.pop(approval_id, None)

    def _on_interrupt(self, turn_id: str) -> None:
        turn = self._turns.get(turn_id)
        if turn is None:
            raise TurnNotActiveError(f"no active turn with id {turn_id!r}")
        turn.interrupt_requested = True
        if turn.phase == "streaming" and turn.started:
            self._send_interrupt(turn)

    def _send_interrupt(self, turn: TurnState) -> None:
        params = {"threadId": turn.runtime_thread_id, "turnId": turn.runtime_turn_id}
        phase = turn.phase
        self._call(turn, "interrupt", "turn/interrupt", params)
        turn.phase = phase

    def _on_deadline(self, turn_id: str) -> None:
        turn = self._turns.get(turn_id)
        if turn is None:
            return
        why = f"turn deadline of {self._settings.turn_timeout_s:g} s exceeded"
        self._reset_approvals(turn, why)
        if turn.phase == "streaming":
            self._send_interrupt(turn)
        self._finish(turn, "failed", why)

    # --- worker lifecycle -------------------------------------------------------------------------------------
    def _on_worker_down(self, message: WorkerDown) -> None:
        known = self._workers.get(message.worker_id)
        if known is None or known[0] != message.generation:
            return
        del self._workers[message.worker_id]
        why = f"runtime worker {message.worker_id} exited ({message.reason})"
        if message.reason.startswith("agenthost"):
            why = f"runtime worker {message.worker_id} stopped: {message.reason}"
        affected = [turn for turn in self._turns.values() if turn.worker_id == message.worker_id]
        for turn in affected:
            self._reset_approvals(turn, why)
        for turn in affected:
            self._finish(turn, "failed", why, dispatch_next=False)
        self._loaded = {entry for entry in self._loaded if entry[0] != message.worker_id}
        _log.info("turns.runtime_cache_cleared", worker=message.worker_id)
        ask(self._mapping, message)
        _log.info("turns.worker_reconciled", worker=message.worker_id, turns_failed=len(affected))
        for turn in affected:
            self._dispatch_next(turn.thread_id)

    def _reset_approvals(self, turn: TurnState, why: str) -> None:
        if turn.approvals:
            _log.warning("turns.approvals_reset", turn=turn.turn_id, approvals=sorted(turn.approvals), reason=why)
        for approval in list(turn.approvals.values()):
            text = (
                f"the request to run `{approval.command or approval.method}` was reset: {why} before it could run. "
                "Nothing was executed; send the message again to retry."
            )
            self._approval_card(turn, "approval reset", approval.approval_id, text)
            self._drop_approval(turn, approval.approval_id)
            emit(
                turn.sink,
                ApprovalReset(
                    turn_id=turn.turn_id, approval_id=approval.approval_id, message=f"{approval.approval_id}: {text}"
                ),
            )

    # --- ending a turn ----------------------------------------------------------------------------------------
    def _finish(self, turn: TurnState, status: Any, error: str | None, *, dispatch_next: bool = True) -> None:
        if self._turns.pop(turn.turn_id, None) is None:
            return
        if turn.deadline is not None:
            turn.deadline.cancel()
        self._busy.pop(turn.thread_id, None)
        if turn.worker_id is not None and turn.runtime_thread_id is not None:
            self._routes.pop((turn.worker_id, turn.runtime_thread_id), None)
        for call_id in [cid for cid, (tid, _) in self._calls.items() if tid == turn.turn_id]:
            del self._calls[call_id]
        for approval_id in list(turn.approvals):
            self._drop_approval(turn, approval_id)
        text = turn.reply_text()
        _log.info("turns.finished", turn=turn.turn_id, thread=turn.thread_id, status=status, error=error)
        if status == "completed":  # group-committed; the caller hears TurnFinished once it is durable
            self._persisting[turn.turn_id] = (turn, text)
            self._persistence.tell(
                CompleteTurn(
                    turn_id=turn.turn_id, assistant_text=text, worker_id=turn.worker_id, reply_to=self.actor_ref
                )
            )
        else:  # failures and interruptions bypass the batch: durable before anyone hears of them
            finish = FinishTurn(
                turn_id=turn.turn_id, status=status, assistant_text=text, error=error, worker_id=turn.worker_id
            )
            try:
                ask(self._persistence, finish)
            except Exception as exc:  # noqa: BLE001 - the caller must still hear how the turn ended
                _log.error("turns.persist_failed", turn=turn.turn_id, error=repr(exc))
                self._keep_for_retry(finish)
                error = f"{error or status}; not persisted yet (retrying): {exc!r}"
            self._announce(turn, status, text, error)
        if dispatch_next:
            self._dispatch_next(turn.thread_id)

    def _on_persisted(self, message: TurnPersisted) -> None:
        entry = self._persisting.pop(message.turn_id, None)
        if entry is None:
            return
        turn, text = entry
        if message.error is not None:
            _log.error("turns.persist_failed", turn=turn.turn_id, error=message.error)
            self._keep_for_retry(
                FinishTurn(turn_id=turn.turn_id, status="completed", assistant_text=text, worker_id=turn.worker_id)
            )
            self._announce(
                turn, "failed", text, f"the turn completed but is not persisted yet (retrying): {message.error}"
            )
        else:
            self._announce(turn, "completed", text, None)

    def _keep_for_retry(self, finish: FinishTurn) -> None:
        """Keep a turn end the storage refused and retry it with backoff until it lands (e.g. disk space freed)."""
        self._unpersisted[finish.turn_id] = finish
        if self._retry_timer is None:
            self._retry_attempt += 1
            delay = next_delay(PERSIST_RETRY, self._retry_attempt)
            ref = self.actor_ref
            self._retry_timer = self._clock.call_later(delay, lambda: tell_quietly(ref, RetryPersistence()))

    def _on_retry_persistence(self) -> None:
        self._retry_timer = None
        for turn_id, finish in list(self._unpersisted.items()):
            try:
                ask(self._persistence, finish)
            except TurnAlreadyFinishedError:
                pass  # settled meanwhile (e.g. by a reconciliation): nothing left to retry
            except (StorageError, pykka.ActorDeadError):
                continue  # still refused (or storage restarting): kept for the next try
            del self._unpersisted[turn_id]
            _log.warning("turns.persist_recovered", turn=turn_id, status=finish.status)
        if self._unpersisted:
            self._keep_for_retry(next(iter(self._unpersisted.values())))
        else:
            self._retry_attempt = 0

    def _announce(self, turn: TurnState, status: Any, text: str, error: str | None) -> None:
        """Tell the caller how the turn ended (its end is durable by now) and settle its follow-up entry."""
        if turn.followup:
            try:
                settled: FollowUpState = "done" if status == "completed" else "failed"
                ask(self._persistence, SetFollowUpState(followup_id=turn.turn_id, state=settled))
            except Exception as exc:  # noqa: BLE001 - start-up reconciliation settles it from the turn's status
                _log.error("turns.followup_state_failed", turn=turn.turn_id, error=repr(exc))
        self._registry.pop(turn.turn_id)
        emit(turn.sink, TurnFinished(turn_id=turn.turn_id, status=status, text=text, error=error))

    def on_stop(self) -> None:
        """Completions still in the group commit: wait for it (any ask flushes it) and tell their callers."""
        if not self._persisting:
            return
        try:
            pending = {row.turn_id for row in ask(self._persistence, ListPendingTurns(), timeout_s=10.0)}
        except Exception:  # noqa: BLE001 - persistence gone: the callers' handles time out; start-up repair settles
            return
        for turn_id, (turn, text) in list(self._persisting.items()):
            if turn_id not in pending:
                self._announce(turn, "completed", text, None)
        self._persisting.clear()

    def _dispatch_next(self, thread_id: str) -> None:
        if thread_id not in self._busy:
            self._dispatch_followup(thread_id)
        self._dispatch_waiting()

    def _dispatch_followup(self, thread_id: str) -> bool:
        if len(self._turns) >= self._settings.max_active_turns:
            if thread_id not in self._waiting and self._has_followup(thread_id):
                self._waiting.append(thread_id)
            return False
        followup = ask(self._persistence, NextFollowUp(thread_id=thread_id))
        if followup is None:
            return False
        sink = self._registry.get(followup.followup_id)
        self._dispatch(followup.followup_id, thread_id, followup.text, sink, followup=True)
        return True

    def _has_followup(self, thread_id: str) -> bool:
        return ask(self._persistence, NextFollowUp(thread_id=thread_id)) is not None

    def _dispatch_waiting(self) -> None:
        while self._waiting and len(self._turns) < self._settings.max_active_turns:
            thread_id = self._waiting.popleft()
            if thread_id not in self._busy:
                self._dispatch_followup(thread_id)

    def _active(self, turn: TurnState) -> ActiveTurn:
        return ActiveTurn(
            turn_id=turn.turn_id,
            thread_id=turn.thread_id,
            worker_id=turn.worker_id,
            phase=turn.phase,
            pending_approvals=tuple(turn.approvals),
        )
