"""How turns end, what approvals do, and how the follow-up queue moves: the second half of the turn state machine
(actors._turnmachine has the rules). Pure functions over `State` that append effects to `out`.
"""

from __future__ import annotations

from typing import Any

from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import UnknownApprovalError
from agenthost.actors._events import ApprovalsReset, HostEvent, TurnEnded, TurnPersistFailed
from agenthost.actors._recovery import PERSIST_RETRY, decide_retry
from agenthost.actors._turns import validate_decision
from agenthost.actors._turnstate import State, Turn, Unpersisted
from agenthost.protocol._jsonrpc import RpcError
from agenthost.protocol._messages import (
    HOST_UNSUPPORTED_REQUEST,
    ApprovalRequested,
    ApprovalReset,
    ApprovalResolved,
    TurnFinished,
    WorkerDown,
    WorkerUp,
)

Out = list[ev.Effect]


def log(out: Out, event: str, level: Any = "info", **fields: Any) -> None:
    out.append(ev.Log(level=level, event=event, fields=fields))


def note(out: Out, event: HostEvent, level: Any = "info") -> None:
    """A typed event (actors._events) as an effect."""
    out.append(ev.Log(level=level, record=event))


def slots_left(s: State) -> int:
    """Turns that may still start now: `max_active_turns` minus the running ones, those being begun, and the slots
    reserved for follow-ups being started."""
    return s.max_active_turns - len(s.turns) - len(s.beginning) - s.reserved


def begin(s: State, out: Out, e: Any) -> None:
    """Ask the storage to begin a direct send's turn; its thread is busy and its slot taken from now until it is
    answered."""
    s.beginning[e.turn_id] = e.thread_id
    s.busy[e.thread_id] = e.turn_id
    out.append(ev.Begin(turn_id=e.turn_id, thread_id=e.thread_id, text=e.text, sink=e.sink, reply_to=e.reply_to))


# --- approvals ---------------------------------------------------------------------------------------------------
def card_stored(s: State, e: ev.CardStored, out: Out) -> None:
    approval = e.approval
    turn = s.turns.get(approval.turn_id)
    if not e.ok or turn is None:  # never let a command run on an approval that is not on record
        message = f"{approval.method}: refused, the approval could not be recorded (storage error)"
        error = RpcError(code=HOST_UNSUPPORTED_REQUEST, message=message)
        out.append(ev.AnswerRuntime(worker_id=approval.worker_id, request_id=approval.request_id, error=error))
        return
    s.approvals[approval.approval_id] = approval
    turn.approvals[approval.approval_id] = approval
    log(out, "turns.approval_requested", turn=turn.turn_id, approval=approval.approval_id, method=approval.method)
    out.append(
        ev.Emit(
            sink=turn.sink,
            event=ApprovalRequested(
                turn_id=turn.turn_id,
                approval_id=approval.approval_id,
                method=approval.method,
                command=approval.command,
                reason=approval.reason,
                params=approval.params,
            ),
        )
    )


def answered(s: State, e: ev.Answered, out: Out) -> None:
    decision = validate_decision(e.decision)
    approval = s.approvals.get(e.approval_id)
    if approval is None:
        raise UnknownApprovalError(f"unknown or already answered approval id {e.approval_id!r}")
    turn = s.turns[approval.turn_id]
    _drop_approval(s, turn, approval.approval_id)
    out += [
        ev.AddCard(
            thread_id=turn.thread_id,
            turn_id=turn.turn_id,
            kind="approval answered",
            text=f"{approval.approval_id}: {decision}",
        ),
        ev.AnswerRuntime(worker_id=approval.worker_id, request_id=approval.request_id, result={"decision": decision}),
        ev.Emit(sink=turn.sink, event=ApprovalResolved(turn_id=turn.turn_id, approval_id=approval.approval_id)),
    ]
    log(out, "turns.approval_answered", turn=turn.turn_id, approval=approval.approval_id, decision=decision)


def withdraw(turn: Turn, request_id: Any, out: Out) -> None:
    for approval in list(turn.approvals.values()):
        if approval.request_id == request_id and type(approval.request_id) is type(request_id):
            turn.approvals.pop(approval.approval_id, None)
            out += [
                ev.AddCard(
                    thread_id=turn.thread_id,
                    turn_id=turn.turn_id,
                    kind="approval withdrawn",
                    text=f"{approval.approval_id}: the runtime withdrew the request",
                ),
                ev.Emit(sink=turn.sink, event=ApprovalResolved(turn_id=turn.turn_id, approval_id=approval.approval_id)),
            ]


def _drop_approval(s: State, turn: Turn, approval_id: str) -> None:
    turn.approvals.pop(approval_id, None)
    s.approvals.pop(approval_id, None)


def reset_approvals(s: State, turn: Turn, why: str, out: Out) -> None:
    if turn.approvals:
        note(out, ApprovalsReset(turn=turn.turn_id, approvals=sorted(turn.approvals), reason=why), "warning")
    for approval in list(turn.approvals.values()):
        text = (
            f"the request to run `{approval.command or approval.method}` was reset: {why} before it could run. "
            "Nothing was executed; send the message again to retry."
        )
        _drop_approval(s, turn, approval.approval_id)
        out += [
            ev.AddCard(
                thread_id=turn.thread_id,
                turn_id=turn.turn_id,
                kind="approval reset",
                text=f"{approval.approval_id}: {text}",
            ),
            ev.Emit(
                sink=turn.sink,
                event=ApprovalReset(
                    turn_id=turn.turn_id, approval_id=approval.approval_id, message=f"{approval.approval_id}: {text}"
                ),
            ),
        ]


# --- ending a turn -----------------------------------------------------------------------------------------------
def finish(s: State, turn: Turn, status: Any, error: str | None, out: Out, *, then_dispatch: bool = True) -> None:
    if s.turns.pop(turn.turn_id, None) is None:
        return
    s.busy.pop(turn.thread_id, None)
    if turn.worker_id is not None and turn.runtime_thread_id is not None:
        s.routes.pop((turn.worker_id, turn.runtime_thread_id), None)
    for call_id in [cid for cid, (tid, _) in s.calls.items() if tid == turn.turn_id]:
        del s.calls[call_id]
    for approval_id in list(turn.approvals):
        _drop_approval(s, turn, approval_id)
    text = turn.reply_text()
    out.append(ev.CancelDeadline(turn_id=turn.turn_id))
    note(out, TurnEnded(turn=turn.turn_id, thread=turn.thread_id, status=status, error=error))
    record = Unpersisted(
        turn_id=turn.turn_id,
        thread_id=turn.thread_id,
        status=status,
        text=text,
        error=error,
        worker_id=turn.worker_id,
        followup_id=turn.followup_id,
        sink=turn.sink,
    )
    s.ending[turn.turn_id] = record
    if status == "completed":  # group-committed; the caller hears TurnFinished once it is durable
        out.append(ev.PersistComplete(turn_id=turn.turn_id, text=text, worker_id=turn.worker_id))
    else:  # failures and interruptions bypass the batch: durable before anyone hears of them
        out.append(ev.Persist(record=record))
    if then_dispatch:
        dispatch_next(s, turn.thread_id, out)


def finish_stored(s: State, e: ev.FinishStored, out: Out) -> None:
    record = e.record
    if e.retry:
        s.unpersisted.pop(record.turn_id, None)
        log(out, "turns.persist_recovered", "warning", turn=record.turn_id, status=record.status)
        retry_settled(s, out)
        return
    if s.ending.pop(record.turn_id, None) is not None:
        _announce(record, record.status, record.error, out)


def finish_refused(s: State, e: ev.FinishRefused, out: Out) -> None:
    record = e.record
    if e.retry:
        _keep_for_retry(s, record, out)
        return
    note(out, TurnPersistFailed(turn=record.turn_id, error=e.reason), "error")
    if s.ending.pop(record.turn_id, None) is not None:
        _keep_for_retry(s, record, out)
        _announce(
            record, record.status, f"{record.error or record.status}; not persisted yet (retrying): {e.reason}", out
        )


def completed(s: State, e: ev.Completed, out: Out) -> None:
    record = s.ending.pop(e.turn_id, None)
    if record is None:
        return
    if e.error is None:
        _announce(record, "completed", None, out)
        return
    note(out, TurnPersistFailed(turn=record.turn_id, error=e.error), "error")
    _keep_for_retry(s, record, out)
    _announce(record, "failed", f"the turn completed but is not persisted yet (retrying): {e.error}", out)


def _announce(record: Unpersisted, status: Any, error: str | None, out: Out) -> None:
    """Tell the caller how the turn ended (its end is durable, or kept for retry) and settle its follow-up."""
    if record.followup_id is not None:
        out.append(
            ev.SetFollowUp(
                followup_id=record.followup_id,
                state="done" if status == "completed" else "failed",
                error=None if status == "completed" else (error or status),
            )
        )
    out += [
        ev.ForgetSink(turn_id=record.turn_id),
        ev.Emit(
            sink=record.sink, event=TurnFinished(turn_id=record.turn_id, status=status, text=record.text, error=error)
        ),
    ]


def _keep_for_retry(s: State, record: Unpersisted, out: Out) -> None:
    s.unpersisted[record.turn_id] = record
    retry_later(s, out, f"{len(s.unpersisted)} turn ends refused by the storage")


def retry_later(s: State, out: Out, what: str) -> None:
    """The storage refused something the turns must do again (turn ends to persist, a follow-up to start):
    one retry timer for all of it, from the persistence retry policy; at its `RetryDue` the turn ends are persisted
    again and the waiting threads dispatched. Past the policy's cap: escalate."""
    if s.retry_armed:
        return
    s.retry_attempt += 1
    verdict = decide_retry(PERSIST_RETRY, s.retry_attempt)
    reason = f"{what}; {verdict.reason}"
    out.append(
        ev.Decide(
            child="persistence",
            decision=verdict.action,
            reason=reason,
            attempt=verdict.attempt,
            delay_s=verdict.delay_s,
        )
    )
    if verdict.action == "retry":
        s.retry_armed = True
        out.append(ev.ArmRetry(delay_s=verdict.delay_s))
    else:
        out.append(ev.Escalate(reason=f"the storage refused {PERSIST_RETRY.max_attempts} times in a row: {reason}"))


def retry_due(s: State, e: ev.RetryDue, out: Out) -> None:
    s.retry_armed = False
    for record in list(s.unpersisted.values()):
        out.append(ev.Persist(record=record, retry=True))
    dispatch_waiting(s, out)  # follow-ups whose start the storage refused


def retry_settled(s: State, out: Out) -> None:
    """Something the storage had refused went through: with no turn end left to persist, the next refusal counts
    from attempt 1 again."""
    if not s.unpersisted:
        s.retry_attempt = 0


# --- the follow-up queue -----------------------------------------------------------------------------------------
def dispatch_next(s: State, thread_id: str, out: Out) -> None:
    """A thread's turn ended (or was refused): its next follow-up goes first, if it may have one; the freed slot
    goes to the waiting threads."""
    if thread_id in s.queued and thread_id not in s.busy and thread_id not in s.waiting:
        s.waiting.appendleft(thread_id)
    dispatch_waiting(s, out)


def dispatch_waiting(s: State, out: Out) -> None:
    """Start the next follow-up of waiting threads while a slot and a worker are free (slots are reserved until the
    start answers, so the order of the queue is kept). A thread whose start is still unanswered keeps its place and
    is not started twice."""
    unanswered: list[str] = []
    while s.dispatching and s.waiting and s.workers and slots_left(s) > 0:
        thread_id = s.waiting.popleft()
        if thread_id in s.busy:
            continue
        if thread_id in s.starting:
            unanswered.append(thread_id)
            continue
        s.reserved += 1
        s.starting.add(thread_id)
        out.append(ev.StartFollowUp(thread_id=thread_id, include_manual=thread_id in s.send_next))
    s.waiting.extendleft(reversed(unanswered))


def queue_changed(s: State, e: ev.QueueChanged, out: Out) -> None:
    s.queued.add(e.thread_id)
    if e.send_next:
        s.send_next.add(e.thread_id)
    dispatch_next(s, e.thread_id, out)


def followup_started(s: State, e: ev.FollowUpStarted, out: Out) -> bool:
    """The queue's side of a start's answer; True when it began a turn (the machine takes it as `Begun`)."""
    s.reserved -= 1
    s.starting.discard(e.thread_id)
    if e.refused:  # not "none queued": nothing of it stands; the thread keeps its place and is tried again
        if e.thread_id not in s.waiting:
            s.waiting.appendleft(e.thread_id)
        retry_later(s, out, f"the next follow-up of thread {e.thread_id} could not be started")
        return False
    if e.followup_id is None:
        retry_settled(s, out)
        s.queued.discard(e.thread_id)  # nothing (dispatchable) left: its turn ends start no more until a change
        dispatch_waiting(s, out)  # its slot is free again: the next waiting thread may run
        return False
    s.send_next.discard(e.thread_id)
    if not e.more:  # none waits behind it: the end of its turn starts nothing unless a change comes first
        s.queued.discard(e.thread_id)
    return True


# --- workers -----------------------------------------------------------------------------------------------------
def worker_joined(s: State, e: ev.WorkerJoined, out: Out) -> None:
    s.workers[e.worker_id] = e.generation
    out.append(ev.MappingEvent(message=WorkerUp(worker_id=e.worker_id, generation=e.generation, ref=None)))
    for turn in [t for t in s.turns.values() if t.phase == "held"]:
        turn.phase = "dispatching"
        out.append(ev.Resolve(turn_id=turn.turn_id, thread_id=turn.thread_id))
    dispatch_waiting(s, out)


def worker_gone(s: State, e: ev.WorkerGone, out: Out) -> None:
    if s.workers.get(e.worker_id) != e.generation:
        return
    del s.workers[e.worker_id]
    why = f"runtime worker {e.worker_id} exited ({e.reason})"
    if e.reason.startswith("agenthost"):
        why = f"runtime worker {e.worker_id} stopped: {e.reason}"
    affected = [turn for turn in s.turns.values() if turn.worker_id == e.worker_id and turn.phase != "held"]
    for turn in affected:
        reset_approvals(s, turn, why, out)
    for turn in affected:
        finish(s, turn, "failed", why, out, then_dispatch=False)
    s.loaded = {entry for entry in s.loaded if entry[0] != e.worker_id}
    log(out, "turns.runtime_cache_cleared", worker=e.worker_id)
    out.append(ev.MappingEvent(message=WorkerDown(worker_id=e.worker_id, generation=e.generation, reason=e.reason)))
    log(out, "turns.worker_reconciled", worker=e.worker_id, turns_failed=len(affected))
    for turn in affected:
        dispatch_next(s, turn.thread_id, out)


def workers_reset(s: State, e: ev.WorkersReset, out: Out) -> None:
    for worker_id, generation in list(s.workers.items()):
        worker_gone(s, ev.WorkerGone(worker_id=worker_id, generation=generation, reason=e.reason), out)


def worker_health(s: State, e: ev.WorkerHealthChanged, out: Out) -> None:
    out.append(ev.MappingEvent(message=e.message))
