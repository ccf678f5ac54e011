"""The pure turn state machine (actors._turnmachine), property-tested with hypothesis against a fake shell.

A rule-based state machine drives random but protocol-shaped histories: sends on three threads, runtime answers
(success, "thread not found", "no rollout", other errors), notifications (deltas, approvals, withdrawals, turn
ends), caller answers and interrupts, deadlines, workers going up and down, storage refusing or accepting writes,
the group commit answering late, and the persistence retry. After every step the invariants below must hold; at
the end, with the storage healed and everything aborted, every begun turn has been told its end exactly once.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import InvalidDecisionError, TurnNotActiveError, UnknownApprovalError
from agenthost.actors._turnmachine import step
from agenthost.actors._turnstate import State
from agenthost.protocol._jsonrpc import Notification, Request, RpcError
from agenthost.protocol._messages import ApprovalRequested, ApprovalReset, TurnFinished

THREADS = ("t1", "t2", "t3")
WORKERS = (1, 2)
MAX_ACTIVE = 2


class World:
    """The machine plus a fake shell that answers its effects like the real one would."""

    def __init__(self) -> None:
        self.state = State(max_active_turns=MAX_ACTIVE, request_timeout_s=1.0, turn_timeout_s=5.0)
        self.queue: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)  # thread -> ids
        self.texts: dict[str, str] = {}
        self.sinks: dict[str, Any] = {}
        self.calls: dict[int, ev.CallRuntime] = {}
        self.generation = {worker: 1 for worker in WORKERS}
        self.mapping: dict[str, tuple[int, str | None]] = {}
        self.committing: list[str] = []
        self.told: collections.Counter[str] = collections.Counter()  # TurnFinished per turn
        self.after_end: list[str] = []  # events emitted for a turn after its TurnFinished
        self.begun: list[str] = []
        self.begun_followups: dict[str, list[str]] = collections.defaultdict(list)
        self.enqueued: dict[str, list[str]] = collections.defaultdict(list)
        self.requests: dict[int | str, tuple[str, int]] = {}  # open approval requests: id -> (turn, worker)
        self.answered: set[int | str] = set()
        self.durable: set[str] = set()  # turn ends the storage took
        self.storage_ok = True
        self.replied: dict[str, str] = {}  # a send's reply_to -> how it was answered
        self.cards_ok = True
        self.escalated = False
        self.next_id = 0
        self.next_request = 0

    # --- the shell ---------------------------------------------------------------------------------------------
    def run(self, event: Any) -> None:
        pending = [event]
        while pending:
            _, effects = step(self.state, pending.pop(0))
            for effect in effects:
                outcome = self.do(effect)
                if outcome is not None:
                    pending.append(outcome)

    def do(self, effect: Any) -> Any:
        match effect:
            case ev.Enqueue():
                self.queue[effect.thread_id].append(effect.turn_id)
                self.enqueued[effect.thread_id].append(effect.turn_id)
                self.texts[effect.turn_id] = effect.text
            case ev.Begin():
                assert self.state.busy.get(effect.thread_id) == effect.turn_id  # its thread is busy while it begins
                if not self.storage_ok:
                    return ev.BeginRefused(
                        turn_id=effect.turn_id, thread_id=effect.thread_id, error="refused", reply_to=effect.reply_to
                    )
                self.begun.append(effect.turn_id)
                return ev.Begun(
                    turn_id=effect.turn_id,
                    thread_id=effect.thread_id,
                    text=effect.text,
                    sink=effect.sink,
                    reply_to=effect.reply_to,
                )
            case ev.Accept():
                if effect.reply_to is not None:  # a direct send: its caller hears exactly once
                    assert effect.reply_to not in self.replied, f"{effect.reply_to} answered twice"
                    self.replied[effect.reply_to] = "queued" if effect.queued else "begun"
            case ev.Refuse():
                assert effect.reply_to not in self.replied, f"{effect.reply_to} answered twice"
                self.replied[effect.reply_to] = "refused"
            case ev.RegisterSink():
                self.sinks[effect.turn_id] = effect.sink
            case ev.Resolve():
                up = sorted(self.state.workers)
                if not up:
                    return ev.Unresolved(turn_id=effect.turn_id, reason="no worker up")
                worker, runtime_thread = self.mapping.get(effect.thread_id, (up[0], None))
                if worker not in up:
                    worker = up[0]
                self.mapping[effect.thread_id] = (worker, runtime_thread)
                return ev.Resolved(turn_id=effect.turn_id, worker_id=worker, runtime_thread_id=runtime_thread)
            case ev.CallRuntime():
                if effect.worker_id not in self.state.workers:
                    gone = RpcError(code=-32011, message="not running")
                    return ev.CallAnswered(call_id=effect.call_id, error=gone)
                self.calls[effect.call_id] = effect
            case ev.MappingUpdate():
                self.mapping[effect.thread_id] = (effect.worker_id, effect.runtime_thread_id)
            case ev.StoreApprovalCard():
                return ev.CardStored(approval=effect.approval, ok=self.cards_ok)
            case ev.AnswerRuntime():
                assert effect.request_id not in self.answered, "a server request answered twice"
                self.answered.add(effect.request_id)
                self.requests.pop(effect.request_id, None)
            case ev.Emit():
                self.emitted(effect.event)
            case ev.Persist():
                if not self.storage_ok:
                    return ev.FinishRefused(record=effect.record, reason="disk full", retry=effect.retry)
                self.durable.add(effect.record.turn_id)
                return ev.FinishStored(record=effect.record, retry=effect.retry)
            case ev.PersistComplete():
                self.committing.append(effect.turn_id)
            case ev.StartFollowUp():
                thread = effect.thread_id
                assert thread not in self.state.busy, f"a follow-up of {thread} started while it is busy"
                if not self.storage_ok:
                    return ev.FollowUpStarted(thread_id=thread, refused=True)
                if not self.queue[thread]:
                    return ev.FollowUpStarted(thread_id=thread)
                head = self.queue[thread].popleft()  # the head of its queue, in order
                self.begun_followups[thread].append(head)
                self.begun.append(head)
                return ev.FollowUpStarted(
                    thread_id=thread,
                    followup_id=head,
                    turn_id=head,
                    text=self.texts[head],
                    sink=self.sinks.get(head),
                    more=bool(self.queue[thread]),
                )
            case ev.Escalate():
                self.escalated = True
        return None

    def emitted(self, event: Any) -> None:
        turn_id = event.turn_id
        if self.told[turn_id]:
            self.after_end.append(f"{type(event).__name__} for {turn_id}")
        if isinstance(event, TurnFinished):
            self.told[turn_id] += 1
            if event.status == "completed" or "not persisted yet" not in (event.error or ""):
                assert turn_id in self.durable, f"{turn_id} told {event.status} before its end was durable"

    def new_id(self) -> str:
        self.next_id += 1
        return f"turn-{self.next_id:04d}"


class TurnMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        for worker in WORKERS:
            self.world.run(ev.WorkerJoined(worker_id=worker, generation=1))

    @property
    def state(self) -> State:
        return self.world.state

    # --- callers ------------------------------------------------------------------------------------------------
    @precondition(lambda self: not self.world.escalated)
    @rule(thread=st.sampled_from(THREADS), text=st.sampled_from(["hi", "RUN: ls"]))
    def send(self, thread: str, text: str) -> None:
        turn_id = self.world.new_id()
        self.world.run(
            ev.Send(turn_id=turn_id, thread_id=thread, text=text, sink=f"sink-{turn_id}", reply_to=f"reply-{turn_id}")
        )
        assert f"reply-{turn_id}" in self.world.replied  # every send is answered (the shell begins at once)
        if self.world.replied[f"reply-{turn_id}"] == "refused":
            assert turn_id not in self.world.begun and turn_id not in self.state.turns

    @rule(data=st.data(), decision=st.sampled_from(["accept", "decline", "cancel", "bogus"]))
    def answer_approval(self, data: st.DataObject, decision: str) -> None:
        ids = [*sorted(self.state.approvals), "approval-unknown"]
        approval_id = data.draw(st.sampled_from(ids))
        try:
            self.world.run(ev.Answered(approval_id=approval_id, decision=decision))
        except (UnknownApprovalError, InvalidDecisionError):
            assert approval_id == "approval-unknown" or decision == "bogus"

    @rule(data=st.data())
    def interrupt(self, data: st.DataObject) -> None:
        turn_id = data.draw(st.sampled_from([*sorted(self.state.turns), "turn-unknown"]))
        try:
            self.world.run(ev.Interrupt(turn_id=turn_id))
        except TurnNotActiveError:
            assert turn_id == "turn-unknown"

    @precondition(lambda self: bool(self.state.turns))
    @rule(data=st.data())
    def deadline(self, data: st.DataObject) -> None:
        self.world.run(ev.DeadlinePassed(turn_id=data.draw(st.sampled_from(sorted(self.state.turns)))))

    # --- runtimes -----------------------------------------------------------------------------------------------
    @precondition(lambda self: bool(self.world.calls))
    @rule(data=st.data(), answer=st.sampled_from(["ok", "not_found", "no_rollout", "error"]))
    def answer_call(self, data: st.DataObject, answer: str) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.world.calls)))
        call = self.world.calls.pop(call_id)
        errors = {"not_found": "thread not found: x", "no_rollout": "no rollout found for thread id x", "error": "boom"}
        if answer == "ok":
            result = {"thread": {"id": f"rt-{call.thread_id}"}, "turn": {"id": f"rturn-{call_id}"}}
            self.world.run(ev.CallAnswered(call_id=call_id, result=result))
        else:
            self.world.run(ev.CallAnswered(call_id=call_id, error=RpcError(code=-32600, message=errors[answer])))

    @precondition(lambda self: any(t.phase == "streaming" for t in self.state.turns.values()))
    @rule(data=st.data(), kind=st.sampled_from(["delta", "approval", "resolved", "completed", "failed", "interrupted"]))
    def runtime_says(self, data: st.DataObject, kind: str) -> None:
        streaming = sorted(t.turn_id for t in self.state.turns.values() if t.phase == "streaming")
        turn = self.state.turns[data.draw(st.sampled_from(streaming))]
        assert turn.worker_id is not None
        base = {"threadId": turn.runtime_thread_id, "turnId": turn.runtime_turn_id}
        world = self.world
        if kind == "delta":
            message: Any = Notification(method="item/agentMessage/delta", params={**base, "itemId": "m", "delta": "x"})
        elif kind == "approval":
            world.next_request += 1
            world.requests[world.next_request] = (turn.turn_id, turn.worker_id)
            message = Request(
                id=world.next_request, method="item/commandExecution/requestApproval", params={**base, "command": "ls"}
            )
        elif kind == "resolved":
            open_ids = [r for r, (t, _) in world.requests.items() if t == turn.turn_id] or [0]
            message = Notification(method="serverRequest/resolved", params={**base, "requestId": open_ids[0]})
        else:
            message = Notification(
                method="turn/completed",
                params={"threadId": turn.runtime_thread_id, "turn": {"id": turn.runtime_turn_id, "status": kind}},
            )
        generation = world.generation[turn.worker_id]
        world.run(ev.Output(worker_id=turn.worker_id, generation=generation, messages=(message,)))

    @precondition(lambda self: any(t.phase == "streaming" for t in self.state.turns.values()))
    @rule(data=st.data())
    def an_older_generation_says_the_turn_ended(self, data: st.DataObject) -> None:
        streaming = sorted(t.turn_id for t in self.state.turns.values() if t.phase == "streaming")
        turn = self.state.turns[data.draw(st.sampled_from(streaming))]
        assert turn.worker_id is not None
        ended = Notification(
            method="turn/completed",
            params={"threadId": turn.runtime_thread_id, "turn": {"id": turn.runtime_turn_id, "status": "completed"}},
        )
        stale = self.world.generation[turn.worker_id] - 1
        _, effects = step(self.state, ev.Output(worker_id=turn.worker_id, generation=stale, messages=(ended,)))
        assert effects == [] and turn.turn_id in self.state.turns  # an old process cannot end a newer one's turn

    @rule(worker=st.sampled_from(WORKERS))
    def worker_down(self, worker: int) -> None:
        if worker in self.state.workers:
            self.world.run(ev.WorkerGone(worker_id=worker, generation=self.world.generation[worker], reason="killed"))
            self.world.calls = {k: c for k, c in self.world.calls.items() if c.worker_id != worker}

    @rule(worker=st.sampled_from(WORKERS))
    def worker_up(self, worker: int) -> None:
        if worker not in self.state.workers:
            self.world.generation[worker] += 1
            self.world.run(ev.WorkerJoined(worker_id=worker, generation=self.world.generation[worker]))

    # --- storage ------------------------------------------------------------------------------------------------
    @rule(ok=st.booleans(), cards=st.booleans())
    def storage(self, ok: bool, cards: bool) -> None:
        self.world.storage_ok, self.world.cards_ok = ok, cards

    @precondition(lambda self: bool(self.world.committing))
    @rule(data=st.data())
    def group_commit_answers(self, data: st.DataObject) -> None:
        turn_id = data.draw(st.sampled_from(self.world.committing))
        self.world.committing.remove(turn_id)
        if self.world.storage_ok:
            self.world.durable.add(turn_id)
            self.world.run(ev.Completed(turn_id=turn_id))
        else:
            self.world.run(ev.Completed(turn_id=turn_id, error="disk full"))

    @precondition(lambda self: self.state.retry_armed and not self.world.escalated)
    @rule()
    def retry_due(self) -> None:
        self.world.run(ev.RetryDue())

    # --- invariants ---------------------------------------------------------------------------------------------
    @invariant()
    def each_turn_is_told_at_most_once_and_nothing_after(self) -> None:
        assert max(self.world.told.values(), default=0) <= 1
        assert self.world.after_end == []

    @invariant()
    def one_turn_per_thread_and_slots_respected(self) -> None:
        state = self.state
        assert len(state.turns) <= state.max_active_turns
        assert sorted(state.busy.values()) == sorted(state.turns)
        assert {t.thread_id: t.turn_id for t in state.turns.values()} == state.busy
        assert state.reserved == 0  # slots are reserved only while a fetch is being answered

    @invariant()
    def followups_start_in_queue_order(self) -> None:
        for thread, begun in self.world.begun_followups.items():
            queued = self.world.enqueued[thread]
            assert begun == [turn for turn in queued if turn in begun]

    @invariant()
    def approvals_belong_to_open_turns(self) -> None:
        for approval_id, approval in self.state.approvals.items():
            assert approval_id in self.state.turns[approval.turn_id].approvals

    def teardown(self) -> None:
        world = self.world
        if world.escalated:
            return  # the coordinator crashes on purpose here; the host's reconciliation settles the rest
        world.storage_ok = True
        for turn_id in list(world.committing):
            world.durable.add(turn_id)
            world.run(ev.Completed(turn_id=turn_id))
        world.run(ev.AbortAll(reason="end of test"))
        while self.state.retry_armed:
            world.run(ev.RetryDue())
        assert not self.state.turns and not self.state.ending
        told_once = [turn for turn in world.begun if world.told[turn] != 1]
        assert told_once == [], f"begun turns not told exactly once: {told_once}"


TurnMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_turn_machine_properties = pytest.mark.timeout(300)(TurnMachine.TestCase)


def test_a_send_while_no_worker_is_up_is_queued_and_runs_when_one_joins() -> None:
    world = World()
    world.run(ev.Send(turn_id="turn-a", thread_id="t1", text="hi", sink="sink-a"))
    assert world.queue["t1"] == collections.deque(["turn-a"]) and not world.begun
    world.run(ev.WorkerJoined(worker_id=1, generation=1))
    assert world.begun == ["turn-a"] and world.state.turns["turn-a"].worker_id == 1


def test_a_worker_going_down_resets_approvals_before_failing_its_turns() -> None:
    world = World()
    world.run(ev.WorkerJoined(worker_id=1, generation=1))
    world.run(ev.Send(turn_id="turn-a", thread_id="t1", text="RUN: ls", sink="sink-a"))
    (call_id,) = world.calls
    world.calls.clear()
    world.run(ev.CallAnswered(call_id=call_id, result={"thread": {"id": "rt"}}))
    (call_id,) = world.calls
    world.calls.clear()
    world.run(ev.CallAnswered(call_id=call_id, result={"turn": {"id": "rturn"}}))
    request = Request(
        id=7,
        method="item/commandExecution/requestApproval",
        params={"threadId": "rt", "turnId": "rturn", "command": "ls"},
    )
    _, effects = step(world.state, ev.Output(worker_id=1, generation=1, messages=(request,)))
    (store,) = [e for e in effects if isinstance(e, ev.StoreApprovalCard)]
    world.run(ev.CardStored(approval=store.approval, ok=True))
    _, effects = step(world.state, ev.WorkerGone(worker_id=1, generation=1, reason="killed"))
    kinds = [type(e).__name__ + (f":{type(e.event).__name__}" if isinstance(e, ev.Emit) else "") for e in effects]
    reset, persist, mapping = kinds.index("Emit:ApprovalReset"), kinds.index("Persist"), kinds.index("MappingEvent")
    assert reset < persist < mapping  # approvals reset, turn failed (persisted), then the pins move
    assert isinstance(effects[reset].event, ApprovalReset) and not any(
        isinstance(e, ev.Emit) and isinstance(e.event, ApprovalRequested) for e in effects
    )
