"""The turn state machine: `step(state, event) -> (state, effects)`, pure (no I/O, no clock, no randomness).

Rules (the coordinator's contract; data in actors._turnstate):
- Dispatch, in order: the user message and the turn's pending checkpoint are persisted (`Begin`), its deadline is
  armed, its worker is resolved (`Resolve`), the runtime thread is made ready (`thread/start` when the thread has
  none, `thread/resume` when it is not known loaded in the current generation of its worker), then `turn/start`.
- One turn per thread at a time. A message for a busy thread, for a thread that already has queued follow-ups, or
  arriving when `max_active_turns` run or when no worker is up, goes to the persisted follow-up queue (`Enqueue`)
  and runs, in order, when the thread, a slot and a worker are free. A begun turn that finds no worker up is
  "held" until one is. A turn's end starts its thread's next follow-up only when the thread may have one
  (`queued`: a message was queued for it, the queue was changed by an operator or found at start; a start that
  finds none clears it, and so does one that finds a follow-up with none behind it). A start reads the queue's
  head, dispatches it and begins its turn in one storage transaction (`StartFollowUp`).
- Stale runtime thread: `turn/start` answered "thread not found" -> resume, then retry `turn/start` as
  `STALE_THREAD_RETRY` allows (once), each retry one decision; a resume answered "no rollout found" invalidates the
  mapping, adds a card saying the runtime lost its copy, and starts a new runtime thread.
- Every turn ends exactly once (completed / interrupted / failed). A failed or interrupted end is persisted at once
  (`Persist`) and only then told (`TurnFinished`); a completed one is group-committed (`PersistComplete`) and told
  when the commit answers. An end the storage refuses is told as failed "not persisted yet" and written again by
  `PERSIST_RETRY` (each retry one decision; past the cap the coordinator escalates to its supervisor).
- The turn deadline (`turn_timeout_s`) resets the turn's approvals, interrupts a streaming turn and fails it.
- Approvals: a runtime's approval request is recorded as a card first; only a recorded one reaches the caller
  (an unrecorded one is refused to the runtime, so nothing runs off the record). Every other server request is
  answered at once with an error. Answers, withdrawals and resets are cards too.
- A worker going down (reconciliation, in this order): its turns' approvals are reset (cards, `ApprovalReset`), its
  turns fail (persisted), its loaded-thread cache is cleared, the mapping moves its pins; then queued follow-ups of
  the affected threads run. Output or answers from another generation of a worker are ignored.
"""

from __future__ import annotations

from typing import Any

from agenthost.actors import _turncalls as calls
from agenthost.actors import _turnends as ends
from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import HostClosedError, TurnNotActiveError
from agenthost.actors._events import TurnDispatched
from agenthost.actors._recovery import STALE_THREAD_RETRY, decide_retry
from agenthost.actors._turns import APPROVAL_METHODS, STEP_METHODS, nested_id, runtime_turn_of
from agenthost.actors._turnstate import Approval, Extras, State, Step, Turn
from agenthost.protocol._errors import is_no_rollout, is_thread_not_found
from agenthost.protocol._jsonrpc import Notification, Request, RpcError
from agenthost.protocol._messages import HOST_UNSUPPORTED_REQUEST, Delta, TurnStarted

__all__ = ["step"]

Out = list[ev.Effect]


def step(state: State, event: ev.Event) -> tuple[State, list[ev.Effect]]:
    out: Out = []
    _HANDLERS[type(event)](state, event, out)
    return state, out


# --- sending and dispatching -------------------------------------------------------------------------------------
def _send(s: State, e: ev.Send, out: Out) -> None:
    if not s.intake_open:
        raise HostClosedError("agenthost is shutting down and accepts no new messages")
    thread = e.thread_id
    why = (
        "thread busy"
        if thread in s.busy
        else "follow-ups queued"
        if thread in s.waiting or thread in s.starting
        else "no worker up"
        if not s.workers
        else "max active turns"
        if ends.slots_left(s) <= 0
        else None
    )
    if e.input is not None or e.passthrough:
        s.extras[e.turn_id] = Extras(input=e.input, passthrough=e.passthrough)
    if why is None:
        ends.begin(s, out, e)
        return
    out += [
        ev.Enqueue(turn_id=e.turn_id, thread_id=thread, text=e.text),
        ev.RegisterSink(turn_id=e.turn_id, sink=e.sink),
        ev.Accept(turn_id=e.turn_id, queued=True, reply_to=e.reply_to),
    ]
    s.queued.add(thread)
    if thread not in s.busy and thread not in s.waiting:
        s.waiting.append(thread)
    ends.log(out, "turns.queued", turn=e.turn_id, thread=thread, reason=why)


def _begun(s: State, e: ev.Begun, out: Out) -> None:
    s.beginning.pop(e.turn_id, None)
    extras = s.extras.pop(e.turn_id, None) or Extras()
    settings = e.settings
    turn = Turn(
        turn_id=e.turn_id,
        thread_id=e.thread_id,
        text=e.text,
        sink=e.sink,
        followup_id=e.followup_id,
        input=extras.input,
        passthrough=extras.passthrough,
        thread_params=dict(settings.thread) if settings is not None else {},
        turn_params=dict(settings.turn) if settings is not None else {},
    )
    s.turns[turn.turn_id] = turn
    s.busy[turn.thread_id] = turn.turn_id
    out += [
        ev.RegisterSink(turn_id=turn.turn_id, sink=e.sink),
        ev.ArmDeadline(turn_id=turn.turn_id, delay_s=s.turn_timeout_s),
    ]
    if e.followup_id is None:
        out.append(ev.Accept(turn_id=turn.turn_id, queued=False, reply_to=e.reply_to))
    else:
        ends.retry_settled(s, out)  # a follow-up went through: a refused start before it is behind us
    out.append(ev.Resolve(turn_id=turn.turn_id, thread_id=turn.thread_id))


def _begin_refused(s: State, e: ev.BeginRefused, out: Out) -> None:
    """The storage did not begin a direct send's turn: its caller hears why (nothing began)."""
    s.beginning.pop(e.turn_id, None)
    s.extras.pop(e.turn_id, None)
    if s.busy.get(e.thread_id) == e.turn_id:
        del s.busy[e.thread_id]
    out.append(ev.Refuse(reply_to=e.reply_to, exception=e.exception))
    ends.dispatch_next(s, e.thread_id, out)


def _followup_started(s: State, e: ev.FollowUpStarted, out: Out) -> None:
    if ends.followup_started(s, e, out):
        begun = ev.Begun(
            turn_id=e.turn_id,
            thread_id=e.thread_id,
            text=e.text,
            sink=e.sink,
            followup_id=e.followup_id,
            settings=e.settings,
        )
        _begun(s, begun, out)


def _resolved(s: State, e: ev.Resolved, out: Out) -> None:
    turn = s.turns.get(e.turn_id)
    if turn is None:
        return
    turn.worker_id, turn.runtime_thread_id = e.worker_id, e.runtime_thread_id
    ends.note(out, TurnDispatched(turn=turn.turn_id, thread=turn.thread_id, worker=e.worker_id))
    if e.runtime_thread_id is None:
        calls.start_thread(s, turn, out)
    elif calls.is_loaded(s, e.worker_id, e.runtime_thread_id):
        calls.start_turn(s, turn, out)
    else:
        calls.resume(s, turn, f"not loaded in runtime worker {e.worker_id} since its last start", out)


def _unresolved(s: State, e: ev.Unresolved, out: Out) -> None:
    turn = s.turns.get(e.turn_id)
    if turn is not None:
        turn.phase = "held"
        ends.log(out, "turns.held", turn=turn.turn_id, thread=turn.thread_id, reason=e.reason)


# --- answers from runtimes ---------------------------------------------------------------------------------------
def _call_answered(s: State, e: ev.CallAnswered, out: Out) -> None:
    entry = s.calls.pop(e.call_id, None)
    turn = None if entry is None else s.turns.get(entry[0])
    if entry is None or turn is None:
        return
    step_name = entry[1]
    if step_name in ("interrupt", "steer"):
        if e.error is not None:
            ends.log(out, f"turns.{step_name}_refused", "warning", turn=turn.turn_id, error=e.error.message)
        return
    if e.error is not None:
        _call_failed(s, turn, step_name, e.error, out)
        return
    result = e.result if isinstance(e.result, dict) else {}
    if step_name == "turn_start":
        turn.runtime_turn_id = nested_id(result, "turn")
        turn.phase = "streaming"
        out.append(ev.Emit(sink=turn.sink, event=TurnStarted(turn_id=turn.turn_id, worker_id=turn.worker_id or 0)))
        if turn.steers:
            calls.flush_steers(s, turn, out)
        return
    runtime_thread_id = nested_id(result, "thread")
    if runtime_thread_id is None:
        ends.finish(s, turn, "failed", f"{STEP_METHODS[step_name]} answered without thread.id: {e.result!r}", out)
        return
    assert turn.worker_id is not None
    out.append(
        ev.MappingUpdate(thread_id=turn.thread_id, worker_id=turn.worker_id, runtime_thread_id=runtime_thread_id)
    )
    turn.runtime_thread_id = runtime_thread_id
    generation = s.workers.get(turn.worker_id)
    if generation is not None:
        s.loaded.add((turn.worker_id, generation, runtime_thread_id))
    calls.start_turn(s, turn, out)


def _call_failed(s: State, turn: Turn, step_name: Step, error: RpcError, out: Out) -> None:
    if step_name == "turn_start" and is_thread_not_found(error):
        verdict = decide_retry(STALE_THREAD_RETRY, turn.stale_retries + 1)
        out.append(
            ev.Decide(
                child=f"turn {turn.turn_id}",
                decision=verdict.action,
                reason=f"runtime answered: {error.message}; {verdict.reason}",
                attempt=verdict.attempt,
            )
        )
        if verdict.action == "retry":
            turn.stale_retries += 1
            assert turn.worker_id is not None and turn.runtime_thread_id is not None
            generation = s.workers.get(turn.worker_id)
            if generation is not None:
                s.loaded.discard((turn.worker_id, generation, turn.runtime_thread_id))
            calls.resume(s, turn, f"runtime answered: {error.message}", out)
            return
    if step_name == "turn_start" and calls.retry_without_options(s, turn, error, out):
        return
    if step_name == "resume" and is_no_rollout(error) and turn.worker_id is not None:
        out += [
            ev.MappingUpdate(thread_id=turn.thread_id, worker_id=turn.worker_id, runtime_thread_id=None),
            ev.AddCard(
                thread_id=turn.thread_id,
                turn_id=turn.turn_id,
                kind="runtime thread recreated",
                text="The runtime no longer had this conversation; a new runtime thread was started. "
                "This transcript still holds the full history.",
            ),
        ]
        calls.start_thread(s, turn, out)
        return
    ends.finish(s, turn, "failed", f"{STEP_METHODS[step_name]} failed: {error.message}", out)


def _output(s: State, e: ev.Output, out: Out) -> None:
    """One stdout read. Hot path: a run of deltas for one turn becomes one coalesced `Delta` event."""
    if s.workers.get(e.worker_id) != e.generation:
        return
    run_turn: Turn | None = None
    run: list[str] = []
    for message in e.messages:
        if isinstance(message, Notification) and message.method == "item/agentMessage/delta":
            turn = _turn_for(s, e.worker_id, message.method, message.params)
            if turn is None:
                continue
            if turn is not run_turn:
                _flush_deltas(run_turn, run, out)
                run_turn, run = turn, []
            delta = message.params.get("delta", "")
            turn.items.setdefault(message.params.get("itemId", ""), []).append(delta)
            if turn.passthrough:  # the caller gets the runtime's own deltas instead of coalesced ones
                out.append(calls.notice(turn, message.method, message.params))
                continue
            run.append(delta)
            continue
        _flush_deltas(run_turn, run, out)
        run_turn, run = None, []
        if isinstance(message, Notification):
            _notification(s, e.worker_id, message, out)
        elif isinstance(message, Request):
            _server_request(s, e.worker_id, message, out)
    _flush_deltas(run_turn, run, out)


def _flush_deltas(turn: Turn | None, run: list[str], out: Out) -> None:
    if turn is not None and run:
        out.append(ev.Emit(sink=turn.sink, event=Delta(turn_id=turn.turn_id, text="".join(run), count=len(run))))


def _turn_for(s: State, worker_id: int, method: str, params: Any) -> Turn | None:
    """The active turn a runtime message belongs to: same worker and runtime thread, and, when the message names a
    runtime turn, that very turn (a late message of an earlier turn on the thread is not ours)."""
    if not isinstance(params, dict) or not isinstance(thread_id := params.get("threadId"), str):
        return None
    turn_id = s.routes.get((worker_id, thread_id))
    turn = None if turn_id is None else s.turns.get(turn_id)
    if turn is None:
        return None
    named = runtime_turn_of(method, params)
    return turn if named is None or named == turn.runtime_turn_id else None


def _notification(s: State, worker_id: int, note: Notification, out: Out) -> None:
    turn = _turn_for(s, worker_id, note.method, note.params)
    if turn is None:
        return
    method, params = note.method, note.params
    if turn.passthrough:  # before the host acts on it: a turn's end reaches its caller after this notice
        out.append(calls.notice(turn, method, params))
    if method == "turn/started":
        turn.started = True
        if turn.interrupt_requested:  # asked before the runtime could accept it ("no active turn" race)
            _send_interrupt(s, turn, out)
    elif method == "item/completed":
        item = params.get("item") or {}
        if item.get("type") == "agentMessage":
            turn.items[item.get("id", "")] = [item.get("text") or ""]  # the runtime's final word on the item
    elif method == "turn/completed":
        runtime_turn = params.get("turn") or {}
        status, error = runtime_turn.get("status"), runtime_turn.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        if status == "completed":
            ends.finish(s, turn, "completed", None, out)
        elif status == "interrupted":
            ends.finish(s, turn, "interrupted", message, out)
        else:
            ends.finish(
                s, turn, "failed", message or turn.runtime_error or f"runtime reported turn status {status!r}", out
            )
    elif method == "serverRequest/resolved":
        ends.withdraw(turn, params.get("requestId"), out)
    elif method == "error":
        message = (params.get("error") or {}).get("message")
        if params.get("willRetry", False):
            turn.retrying = message
        else:
            turn.runtime_error = message


# --- server requests -------------------------------------------------------------------------------------------
def _server_request(s: State, worker_id: int, request: Request, out: Out) -> None:
    turn = _turn_for(s, worker_id, request.method, request.params)
    if request.method not in APPROVAL_METHODS or turn is None:
        why = "no active turn for its thread" if turn is None else "not supported by agenthost"
        error = RpcError(code=HOST_UNSUPPORTED_REQUEST, message=f"{request.method}: {why}")
        out.append(ev.AnswerRuntime(worker_id=worker_id, request_id=request.id, error=error))
        return
    params = request.params
    approval = Approval(
        approval_id=f"approval-{turn.turn_id.removeprefix('turn-')}-{len(turn.asked) + 1}",
        turn_id=turn.turn_id,
        worker_id=worker_id,
        request_id=request.id,
        method=request.method,
        command=params.get("command"),
        reason=params.get("reason"),
        params=calls.passthrough_params(turn, params),
    )
    turn.asked.append(approval.approval_id)
    text = f"the runtime asks to run `{approval.command or request.method}`" + (
        f" ({approval.reason})" if approval.reason else ""
    )
    out.append(ev.StoreApprovalCard(approval=approval, thread_id=turn.thread_id, text=text))


def _stderr_line(s: State, e: ev.StderrLine, out: Out) -> None:
    if s.workers.get(e.worker_id) == e.generation:
        s.stderr[e.worker_id] = e.line


# --- commands from callers and timers ----------------------------------------------------------------------------
def _interrupt(s: State, e: ev.Interrupt, out: Out) -> None:
    turn = s.turns.get(e.turn_id)
    if turn is None:
        raise TurnNotActiveError(f"no active turn with id {e.turn_id!r}")
    turn.interrupt_requested = True
    if turn.phase == "streaming" and turn.started:
        _send_interrupt(s, turn, out)


def _send_interrupt(s: State, turn: Turn, out: Out) -> None:
    calls.call(
        s,
        turn,
        "interrupt",
        "turn/interrupt",
        {"threadId": turn.runtime_thread_id, "turnId": turn.runtime_turn_id},
        out,
    )


def _deadline(s: State, e: ev.DeadlinePassed, out: Out) -> None:
    turn = s.turns.get(e.turn_id)
    if turn is None:
        return
    why = f"turn deadline of {s.turn_timeout_s:g} s exceeded"
    if turn.retrying:
        why += f"; the runtime kept retrying: {turn.retrying}"
    if turn.worker_id is not None and turn.worker_id in s.stderr:
        why += f"; its last error: {s.stderr[turn.worker_id]}"
    ends.reset_approvals(s, turn, why, out)
    if turn.phase == "streaming":
        _send_interrupt(s, turn, out)
    ends.finish(s, turn, "failed", why, out)


def _stop_intake(s: State, e: ev.StopIntake, out: Out) -> None:
    s.intake_open = False


def _abort_all(s: State, e: ev.AbortAll, out: Out) -> None:
    s.dispatching = False
    for turn in list(s.turns.values()):
        ends.reset_approvals(s, turn, e.reason, out)
        ends.finish(s, turn, "failed", e.reason, out, then_dispatch=False)
    for record in list(s.unpersisted.values()):  # the runtimes stop: the ends the storage refused get a last try
        out.append(ev.Persist(record=record, retry=True))


_HANDLERS: dict[type, Any] = {
    ev.Send: _send,
    ev.Begun: _begun,
    ev.BeginRefused: _begin_refused,
    ev.FollowUpStarted: _followup_started,
    ev.Resolved: _resolved,
    ev.Unresolved: _unresolved,
    ev.CallAnswered: _call_answered,
    ev.Output: _output,
    ev.CardStored: ends.card_stored,
    ev.Answered: ends.answered,
    ev.Interrupt: _interrupt,
    ev.Steer: calls.steer,
    ev.DeadlinePassed: _deadline,
    ev.WorkerJoined: ends.worker_joined,
    ev.WorkerGone: ends.worker_gone,
    ev.WorkersReset: ends.workers_reset,
    ev.WorkerHealthChanged: ends.worker_health,
    ev.FinishStored: ends.finish_stored,
    ev.FinishRefused: ends.finish_refused,
    ev.Completed: ends.completed,
    ev.RetryDue: ends.retry_due,
    ev.QueueChanged: ends.queue_changed,
    ev.StderrLine: _stderr_line,
    ev.StopIntake: _stop_intake,
    ev.AbortAll: _abort_all,
}
