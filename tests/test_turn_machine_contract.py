"""The turn state machine's rules one example at a time (actors._turnmachine, actors._turnends): each test steps the
pure machine through a short, explicit history and checks the effects and the state it leaves. The properties over
random histories are in tests/test_turn_machine.py."""

from __future__ import annotations

import collections
import json
from typing import Any

import pytest

from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import HostClosedError, UnknownApprovalError
from agenthost.actors._recovery import PERSIST_RETRY
from agenthost.actors._turnmachine import step
from agenthost.actors._turnstate import State
from agenthost.protocol._jsonrpc import Notification, RpcError, decode_line
from agenthost.protocol._messages import HOST_UNSUPPORTED_REQUEST
from agenthost.storage import ThreadSettings

Effects = list[Any]


def machine(*, max_active: int = 2, workers: tuple[int, ...] = (1,)) -> State:
    state = State(max_active_turns=max_active, request_timeout_s=1.0, turn_timeout_s=5.0)
    for worker_id in workers:
        step(state, ev.WorkerJoined(worker_id=worker_id, generation=1))
    return state


def only(effects: Effects, kind: type) -> list[Any]:
    return [effect for effect in effects if isinstance(effect, kind)]


def logged(effects: Effects, name: str) -> list[dict[str, Any]]:
    return [effect.fields for effect in only(effects, ev.Log) if effect.event == name]


def begin(state: State, turn_id: str, thread_id: str, text: str = "hi") -> Effects:
    """A caller's message that starts at once (the shell stores it and answers `Begun`)."""
    _, effects = step(state, ev.Send(turn_id=turn_id, thread_id=thread_id, text=text, sink=f"sink-{turn_id}"))
    (started,) = only(effects, ev.Begin)
    _, effects = step(state, ev.Begun(turn_id=turn_id, thread_id=thread_id, text=started.text, sink=started.sink))
    return effects


def call_of(effects: Effects) -> Any:
    (call,) = only(effects, ev.CallRuntime)
    return call


def turn_completed(runtime_turn: str = "rturn-1", status: str = "completed") -> Notification:
    """The runtime's `turn/completed` for a turn on runtime thread rt-1."""
    return Notification(
        method="turn/completed", params={"threadId": "rt-1", "turn": {"id": runtime_turn, "status": status}}
    )


def streaming(state: State, turn_id: str = "turn-a", thread_id: str = "t1") -> None:
    """Begin a turn on worker 1 with a new runtime thread and let the runtime accept it."""
    begin(state, turn_id, thread_id)
    _, effects = step(state, ev.Resolved(turn_id=turn_id, worker_id=1, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-1"}}))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-1"}}))
    started = Notification(method="turn/started", params={"threadId": "rt-1", "turn": {"id": "rturn-1"}})
    step(state, ev.Output(worker_id=1, generation=1, messages=(started,)))
    assert state.turns[turn_id].phase == "streaming" and state.turns[turn_id].started


def test_a_send_starts_while_a_slot_is_left_and_waits_when_none_is() -> None:
    state = machine(max_active=2)
    begin(state, "turn-a", "t1")
    _, effects = step(state, ev.Send(turn_id="turn-b", thread_id="t2", text="hi", sink="sink-b"))
    assert only(effects, ev.Begin) and not only(effects, ev.Enqueue)  # the second of two slots
    step(state, ev.Begun(turn_id="turn-b", thread_id="t2", text="hi", sink="sink-b"))
    _, effects = step(state, ev.Send(turn_id="turn-c", thread_id="t3", text="hi", sink="sink-c"))
    assert [e.turn_id for e in only(effects, ev.Enqueue)] == ["turn-c"] and not only(effects, ev.Begin)
    assert logged(effects, "turns.queued")[0]["reason"] == "max active turns"


def test_a_refused_follow_up_start_waits_in_line_once() -> None:
    state = machine()
    _, effects = step(state, ev.QueueChanged(thread_id="t1", send_next=False))
    for _ in range(2):
        assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t1"]
        step(state, ev.FollowUpStarted(thread_id="t1", refused=True))
        assert state.waiting == collections.deque(["t1"]) and (state.reserved, state.starting) == (0, set())
        _, effects = step(state, ev.RetryDue())
    assert state.retry_attempt == 2


def test_a_begun_turn_that_finds_no_worker_is_held_until_one_joins() -> None:
    state = machine()
    effects = begin(state, "turn-a", "t1")
    assert [r.turn_id for r in only(effects, ev.Resolve)] == ["turn-a"]
    _, effects = step(state, ev.Unresolved(turn_id="turn-a", reason="no runtime worker is up"))
    assert state.turns["turn-a"].phase == "held"
    assert logged(effects, "turns.held") == [{"turn": "turn-a", "thread": "t1", "reason": "no runtime worker is up"}]
    _, effects = step(state, ev.WorkerJoined(worker_id=2, generation=1))
    assert [(r.turn_id, r.thread_id) for r in only(effects, ev.Resolve)] == [("turn-a", "t1")]
    assert state.turns["turn-a"].phase == "dispatching"


def test_a_mapped_thread_not_loaded_in_this_generation_is_resumed_first() -> None:
    state = machine()
    begin(state, "turn-a", "t1")
    _, effects = step(state, ev.Resolved(turn_id="turn-a", worker_id=1, runtime_thread_id="rt-1"))
    resume = call_of(effects)
    assert (resume.method, resume.params["threadId"]) == ("thread/resume", "rt-1")
    assert [(p.runtime_thread_id, p.worker_id) for p in only(effects, ev.PrepareResume)] == [("rt-1", 1)]
    _, effects = step(state, ev.CallAnswered(call_id=resume.call_id, result={"thread": {"id": "rt-1"}}))
    assert call_of(effects).method == "turn/start"
    assert state.loaded == {(1, 1, "rt-1")}  # known loaded now: the next turn on it starts at once
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-1"}}))
    output = turn_completed()
    step(state, ev.Output(worker_id=1, generation=1, messages=(output,)))
    step(state, ev.Completed(turn_id="turn-a"))  # the turn ended (nothing queued for t1: nothing to fetch)
    assert "t1" not in state.starting and "t1" not in state.busy
    begin(state, "turn-b", "t1")
    _, effects = step(state, ev.Resolved(turn_id="turn-b", worker_id=1, runtime_thread_id="rt-1"))
    assert call_of(effects).method == "turn/start"


def test_a_send_to_a_thread_whose_next_follow_up_is_being_started_queues_behind_it_and_it_starts_once() -> None:
    state = machine()
    streaming(state)
    step(state, ev.QueueChanged(thread_id="t1", send_next=False))  # an operator queued a follow-up for t1
    output = turn_completed()
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(output,)))
    effects += step(state, ev.Completed(turn_id="turn-a"))[1]
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t1"]
    _, effects = step(state, ev.Send(turn_id="turn-b", thread_id="t1", text="hi", sink="sink-b"))
    assert only(effects, ev.Begin) == [] and [e.turn_id for e in only(effects, ev.Enqueue)] == ["turn-b"]
    _, effects = step(state, ev.RetryDue())  # the queue moves on while t1's start is unanswered: not started twice
    assert only(effects, ev.StartFollowUp) == [] and list(state.waiting) == ["t1"] and state.reserved == 1
    _, effects = step(state, ev.FollowUpStarted(thread_id="t1", followup_id="f-1", turn_id="f-1", text="first"))
    assert [r.turn_id for r in only(effects, ev.Resolve)] == ["f-1"]  # the follow-up queued first runs first
    assert state.busy["t1"] == "f-1" and "t1" not in state.starting and "t1" in state.queued  # turn-b still waits


def dispatch_three(state: State) -> dict[str, Any]:
    """Turns a, b, c on threads t-a, t-b, t-c, each resolved to worker 1: their first runtime calls, by name."""
    calls = {}
    for name in ("a", "b", "c"):
        begin(state, f"turn-{name}", f"t-{name}")
        _, effects = step(state, ev.Resolved(turn_id=f"turn-{name}", worker_id=1, runtime_thread_id=None))
        calls[name] = call_of(effects)
    return calls


def test_call_ids_stay_unique_while_calls_are_open() -> None:
    state = machine(max_active=3)
    calls = dispatch_three(state)
    assert len({call.call_id for call in calls.values()}) == 3
    for name, call in calls.items():  # each answer goes to its own turn
        _, effects = step(state, ev.CallAnswered(call_id=call.call_id, result={"thread": {"id": f"rt-{name}"}}))
        started = call_of(effects)
        assert (started.method, started.thread_id, started.params["threadId"]) == (
            "turn/start",
            f"t-{name}",
            f"rt-{name}",
        )


def test_an_interrupt_call_keeps_the_turn_streaming() -> None:
    state = machine()
    streaming(state)
    _, effects = step(state, ev.Interrupt(turn_id="turn-a"))
    interrupt = call_of(effects)
    assert (interrupt.method, interrupt.params) == ("turn/interrupt", {"threadId": "rt-1", "turnId": "rturn-1"})
    assert state.turns["turn-a"].phase == "streaming"
    _, effects = step(state, ev.DeadlinePassed(turn_id="turn-a"))  # a streaming turn is interrupted at its deadline
    assert call_of(effects).method == "turn/interrupt"


def test_the_turn_started_event_names_the_worker() -> None:
    state = machine(workers=(1, 2))
    begin(state, "turn-a", "t1")
    _, effects = step(state, ev.Resolved(turn_id="turn-a", worker_id=2, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-1"}}))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-1"}}))
    (emitted,) = only(effects, ev.Emit)
    assert (emitted.sink, emitted.event.turn_id, emitted.event.worker_id) == ("sink-turn-a", "turn-a", 2)
    assert (state.turns["turn-a"].phase, state.turns["turn-a"].runtime_turn_id) == ("streaming", "rturn-1")


def test_thread_not_found_is_resumed_and_retried_once_then_the_turn_fails() -> None:
    state = machine()
    begin(state, "turn-a", "t1")
    _, effects = step(state, ev.Resolved(turn_id="turn-a", worker_id=1, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-1"}}))
    assert state.loaded == {(1, 1, "rt-1")}
    not_found = RpcError(code=-32600, message="thread not found: rt-1")
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, error=not_found))
    (retry,) = only(effects, ev.Decide)
    assert (retry.child, retry.decision, retry.attempt) == ("turn turn-a", "retry", 1)
    assert retry.reason == "runtime answered: thread not found: rt-1; retry 1 of 1, after 0.0 s"
    assert state.loaded == set()  # no longer known loaded
    resume = call_of(effects)
    assert (resume.method, resume.params["threadId"]) == ("thread/resume", "rt-1")
    _, effects = step(state, ev.CallAnswered(call_id=resume.call_id, result={"thread": {"id": "rt-1"}}))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, error=not_found))  # again
    (give_up,) = only(effects, ev.Decide)
    assert (give_up.decision, give_up.attempt) == ("give_up", 2)
    assert not only(effects, ev.CallRuntime) and "turn-a" not in state.turns
    (persist,) = only(effects, ev.Persist)
    assert (persist.record.status, persist.record.error) == ("failed", "turn/start failed: thread not found: rt-1")


def test_a_failed_thread_start_fails_the_turn_without_a_retry() -> None:
    state = machine()
    begin(state, "turn-a", "t1")
    _, effects = step(state, ev.Resolved(turn_id="turn-a", worker_id=1, runtime_thread_id=None))
    not_found = RpcError(code=-32600, message="thread not found: x")  # only a turn/start is retried on it
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, error=not_found))
    assert not only(effects, ev.Decide) and not only(effects, ev.CallRuntime)
    (persist,) = only(effects, ev.Persist)
    assert persist.record.error == "thread/start failed: thread not found: x"


def resumed(state: State, turn_id: str = "turn-a", thread_id: str = "t1") -> Any:
    """Begin a turn whose thread is mapped to runtime thread rt-1 but not loaded: returns the thread/resume call."""
    begin(state, turn_id, thread_id)
    _, effects = step(state, ev.Resolved(turn_id=turn_id, worker_id=1, runtime_thread_id="rt-1"))
    return call_of(effects)


def test_a_resume_without_a_rollout_starts_a_new_runtime_thread_and_says_so() -> None:
    state = machine()
    resume = resumed(state)
    no_rollout = RpcError(code=-32600, message="no rollout found for thread id rt-1")
    _, effects = step(state, ev.CallAnswered(call_id=resume.call_id, error=no_rollout))
    assert [(m.thread_id, m.worker_id, m.runtime_thread_id) for m in only(effects, ev.MappingUpdate)] == [
        ("t1", 1, None)
    ]
    (card,) = only(effects, ev.AddCard)
    assert (card.thread_id, card.turn_id, card.kind) == ("t1", "turn-a", "runtime thread recreated")
    assert call_of(effects).method == "thread/start"


def test_other_resume_errors_and_a_no_rollout_answer_to_another_call_fail_the_turn() -> None:
    state = machine()
    resume = resumed(state)
    _, effects = step(state, ev.CallAnswered(call_id=resume.call_id, error=RpcError(code=-32603, message="boom")))
    assert not only(effects, ev.CallRuntime) and not only(effects, ev.AddCard)
    assert only(effects, ev.Persist)[0].record.error == "thread/resume failed: boom"
    begin(state, "turn-b", "t2")
    _, effects = step(state, ev.Resolved(turn_id="turn-b", worker_id=1, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-2"}}))
    no_rollout = RpcError(code=-32600, message="no rollout found for thread id rt-2")
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, error=no_rollout))  # to turn/start
    assert not only(effects, ev.CallRuntime) and not only(effects, ev.MappingUpdate)
    assert only(effects, ev.Persist)[0].record.error == "turn/start failed: no rollout found for thread id rt-2"


def test_output_from_a_worker_that_is_gone_or_of_another_generation_is_ignored() -> None:
    state = machine(workers=(1, 2))
    streaming(state)
    ended = turn_completed()
    for generation in (0, 2):
        _, effects = step(state, ev.Output(worker_id=1, generation=generation, messages=(ended,)))
        assert effects == [] and "turn-a" in state.turns
    step(state, ev.WorkerGone(worker_id=2, generation=1, reason="killed"))
    _, effects = step(state, ev.Output(worker_id=2, generation=1, messages=(ended,)))  # late output of a gone worker
    assert effects == []


def test_deltas_for_other_threads_are_skipped_and_the_rest_of_the_read_is_handled() -> None:
    state = machine()
    streaming(state)

    def delta(thread: str, text: str) -> Notification:
        return Notification(
            method="item/agentMessage/delta",
            params={"threadId": thread, "turnId": "rturn-1", "itemId": "m", "delta": text},
        )

    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(delta("rt-x", "?"), delta("rt-1", "ok"))))
    (emitted,) = only(effects, ev.Emit)
    assert (emitted.event.turn_id, emitted.event.text, emitted.event.count) == ("turn-a", "ok", 1)


def test_a_runtime_error_notification_is_not_a_delta_and_explains_a_failed_turn() -> None:
    state = machine()
    streaming(state)
    error = Notification(method="error", params={"threadId": "rt-1", "turnId": "rturn-1", "error": {"message": "boom"}})
    failed = turn_completed(status="failed")
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(error,)))
    assert not only(effects, ev.Emit)
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(failed,)))
    (persist,) = only(effects, ev.Persist)
    assert (persist.record.status, persist.record.error) == ("failed", "boom")


# --- the rules mutation testing found untested (mutation/README.md) -------------------------------------------------
def read(state: State, *messages: Any, worker: int = 1, generation: int = 1) -> Effects:
    """One stdout read of a worker: `messages` are JSON-RPC lines (dicts) decoded as the shell decodes them (so
    their strings are fresh objects, not the interned literals of this file), or ready-made messages."""
    decoded = tuple(
        decode_line(json.dumps({"jsonrpc": "2.0", **m}).encode()) if isinstance(m, dict) else m for m in messages
    )
    _, effects = step(state, ev.Output(worker_id=worker, generation=generation, messages=decoded))
    return effects


def note(method: str, **params: Any) -> dict[str, Any]:
    return {"method": method, "params": {"threadId": "rt-1", **params}}


def accepted(state: State, turn_id: str = "turn-a", thread_id: str = "t1", settings: Any = None) -> Effects:
    """Begin a turn on worker 1 with a new runtime thread (rt-1): returns the effects of the thread/start answer
    (the turn/start call)."""
    _, effects = step(state, ev.Send(turn_id=turn_id, thread_id=thread_id, text="hi", sink=f"sink-{turn_id}"))
    (started,) = only(effects, ev.Begin)
    begun = ev.Begun(turn_id=turn_id, thread_id=thread_id, text="hi", sink=started.sink, settings=settings)
    step(state, begun)
    _, effects = step(state, ev.Resolved(turn_id=turn_id, worker_id=1, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-1"}}))
    return effects


def test_a_sends_own_input_items_go_to_the_runtime_instead_of_its_text() -> None:
    state = machine()
    items = ({"type": "text", "text": "look"}, {"type": "image", "url": "https://example.invalid/a.png"})
    _, effects = step(state, ev.Send(turn_id="turn-a", thread_id="t1", text="look", sink="sink-a", input=items))
    step(state, ev.Begun(turn_id="turn-a", thread_id="t1", text="look", sink="sink-a"))
    _, effects = step(state, ev.Resolved(turn_id="turn-a", worker_id=1, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-1"}}))
    assert call_of(effects).params["input"] == list(items)
    assert not state.turns["turn-a"].passthrough


def test_a_refused_direct_send_frees_its_thread_whatever_string_object_the_refusal_carries() -> None:
    state = machine()
    step(state, ev.Send(turn_id="turn-a", thread_id="t1", text="hi", sink="sink-a", reply_to="caller"))
    same_id = "".join(["turn-", "a"])  # equal, not identical: events are data (msgspec), ids compare by value
    _, effects = step(state, ev.BeginRefused(turn_id=same_id, thread_id="t1", error="disk full", reply_to="caller"))
    assert [r.reply_to for r in only(effects, ev.Refuse)] == ["caller"]
    assert "t1" not in state.busy
    assert not only(effects, ev.StartFollowUp)  # nothing was queued for t1
    _, effects = step(state, ev.Send(turn_id="turn-b", thread_id="t1", text="again", sink="sink-b"))
    assert [b.turn_id for b in only(effects, ev.Begin)] == ["turn-b"] and not only(effects, ev.Enqueue)


def test_the_turn_started_event_names_worker_zero_too() -> None:
    state = machine(workers=(0,))
    begin(state, "turn-a", "t1")
    _, effects = step(state, ev.Resolved(turn_id="turn-a", worker_id=0, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-1"}}))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-1"}}))
    (emitted,) = only(effects, ev.Emit)
    assert emitted.event.worker_id == 0


def test_a_turn_start_refusing_the_threads_options_is_started_again_once_without_them() -> None:
    state = machine()
    settings = ThreadSettings(thread={"model": "m1"}, turn={"effort": "high", "model": "m2"})
    effects = accepted(state, settings=settings)
    first = call_of(effects)
    assert (first.method, first.params["effort"], first.params["model"]) == ("turn/start", "high", "m2")
    refused = RpcError(code=-32602, message="unknown field effort")
    _, effects = step(state, ev.CallAnswered(call_id=first.call_id, error=refused))
    (decision,) = only(effects, ev.Decide)
    assert (decision.child, decision.decision) == ("turn turn-a", "retry")
    (card,) = only(effects, ev.AddCard)
    assert (card.thread_id, card.turn_id, card.kind) == ("t1", "turn-a", "runtime options refused")
    (dropped,) = only(effects, ev.Emit)
    assert (dropped.sink, dropped.event.options, dropped.event.reason) == (
        "sink-turn-a",
        ("effort", "model"),
        "unknown field effort",
    )
    assert [(f.thread_id, f.keys) for f in only(effects, ev.ForgetOptions)] == [("t1", ("effort", "model"))]
    again = call_of(effects)
    assert again.method == "turn/start" and "effort" not in again.params and "model" not in again.params
    _, effects = step(state, ev.CallAnswered(call_id=again.call_id, error=refused))  # once only
    assert not only(effects, ev.CallRuntime) and not only(effects, ev.Decide)
    assert only(effects, ev.Persist)[0].record.error == "turn/start failed: unknown field effort"


def test_a_failed_thread_start_or_resume_is_not_retried_without_the_options() -> None:
    settings = ThreadSettings(turn={"effort": "high"})
    for runtime_thread in (None, "rt-1"):  # thread/start, thread/resume
        state = machine()
        _, effects = step(state, ev.Send(turn_id="turn-a", thread_id="t1", text="hi", sink="sink-a"))
        step(state, ev.Begun(turn_id="turn-a", thread_id="t1", text="hi", sink="sink-a", settings=settings))
        _, effects = step(state, ev.Resolved(turn_id="turn-a", worker_id=1, runtime_thread_id=runtime_thread))
        boom = RpcError(code=-32603, message="boom")
        _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, error=boom))
        assert not only(effects, ev.Decide) and not only(effects, ev.CallRuntime) and not only(effects, ev.AddCard)
        assert only(effects, ev.Persist)[0].record.status == "failed" and "turn-a" not in state.turns


def test_a_passthrough_turn_gets_every_runtime_delta_of_a_read_and_no_coalesced_one() -> None:
    state = machine()
    step(state, ev.Send(turn_id="turn-a", thread_id="t1", text="hi", sink="sink-a", passthrough=True))
    step(state, ev.Begun(turn_id="turn-a", thread_id="t1", text="hi", sink="sink-a"))
    _, effects = step(state, ev.Resolved(turn_id="turn-a", worker_id=1, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-1"}}))
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-1"}}))
    delta = "item/agentMessage/delta"
    effects = read(
        state,
        note(delta, turnId="rturn-1", itemId="m", delta="Hel"),
        note(delta, turnId="rturn-1", itemId="m", delta="lo"),
        note("turn/completed", turn={"id": "rturn-1", "status": "completed"}),
    )
    emitted = [e.event for e in only(effects, ev.Emit)]
    assert [(type(e).__name__, e.method, e.params["threadId"]) for e in emitted] == [
        ("RuntimeNotice", delta, "t1"),
        ("RuntimeNotice", delta, "t1"),
        ("RuntimeNotice", "turn/completed", "t1"),
    ]
    assert [e.params["delta"] for e in emitted[:2]] == ["Hel", "lo"]
    assert [p.text for p in only(effects, ev.PersistComplete)] == ["Hello"]


def test_an_interrupt_asked_before_the_runtime_announced_the_turn_goes_out_when_it_does() -> None:
    state = machine()
    effects = accepted(state)
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-1"}}))
    assert state.turns["turn-a"].phase == "streaming" and not state.turns["turn-a"].started
    _, effects = step(state, ev.Interrupt(turn_id="turn-a"))
    assert not only(effects, ev.CallRuntime)  # the runtime would answer "no active turn"
    effects = read(state, note("windows/worldWritableWarning"), note("thread/tokenUsage/updated", turnId="rturn-1"))
    assert not only(effects, ev.CallRuntime)  # other notifications do not announce the turn
    effects = read(state, note("turn/started", turn={"id": "rturn-1"}))
    interrupt = call_of(effects)
    assert (interrupt.method, interrupt.params) == ("turn/interrupt", {"threadId": "rt-1", "turnId": "rturn-1"})


def test_the_reply_is_the_runtimes_final_agent_message_and_only_agent_messages() -> None:
    state = machine()
    streaming(state)
    delta = "item/agentMessage/delta"
    read(state, note(delta, turnId="rturn-1", itemId="m", delta="Hel"), note(delta, turnId="rturn-1", itemId="m"))
    effects = read(
        state,
        note("item/completed", turnId="rturn-1", item={"type": "agentMessage", "id": "m", "text": "Hello."}),
        note("item/completed", turnId="rturn-1", item={"type": "reasoning", "id": "r", "text": "thinking"}),
        note("item/completed", turnId="rturn-1", item={"id": "x", "text": "no type"}),
        note("item/completed", turnId="rturn-1"),
        note("turn/completed", turn={"id": "rturn-1", "status": "completed"}),
    )
    assert [p.text for p in only(effects, ev.PersistComplete)] == ["Hello."]


def test_a_turn_completed_without_a_status_fails_the_turn_and_says_so() -> None:
    state = machine()
    streaming(state)
    effects = read(state, note("turn/completed", turn={"id": "rturn-1"}))
    (persist,) = only(effects, ev.Persist)
    assert (persist.record.status, persist.record.error) == ("failed", "runtime reported turn status None")


def approval_request(request_id: int, command: str, reason: str | None = None) -> dict[str, Any]:
    params = {"threadId": "rt-1", "turnId": "rturn-1", "itemId": f"c{request_id}", "command": command}
    if reason is not None:
        params["reason"] = reason
    return {"id": request_id, "method": "item/commandExecution/requestApproval", "params": params}


def test_approval_requests_are_numbered_per_turn_recorded_and_withdrawn_by_the_runtime() -> None:
    state = machine()
    streaming(state)
    # ids past the small-int cache: the request and its withdrawal are decoded separately (equal, not identical)
    effects = read(state, approval_request(1007, "ls", "to list"), approval_request(1008, "rm x"))
    stored = only(effects, ev.StoreApprovalCard)
    assert [(c.approval.approval_id, c.approval.request_id, c.thread_id) for c in stored] == [
        ("approval-a-1", 1007, "t1"),
        ("approval-a-2", 1008, "t1"),
    ]
    assert [c.text for c in stored] == ["the runtime asks to run `ls` (to list)", "the runtime asks to run `rm x`"]
    assert state.turns["turn-a"].asked == ["approval-a-1", "approval-a-2"]
    for card in stored:
        _, effects = step(state, ev.CardStored(approval=card.approval, ok=True))
        assert [e.event.approval_id for e in only(effects, ev.Emit)] == [card.approval.approval_id]
    effects = read(state, note("serverRequest/resolved", requestId=1007))
    assert [(c.kind, c.text) for c in only(effects, ev.AddCard)] == [
        ("approval withdrawn", "approval-a-1: the runtime withdrew the request")
    ]
    assert [(e.sink, e.event.approval_id) for e in only(effects, ev.Emit)] == [("sink-turn-a", "approval-a-1")]
    assert list(state.turns["turn-a"].approvals) == ["approval-a-2"]
    effects = read(state, approval_request(1009, "pwd"))  # the numbering goes on, withdrawn ones included
    (third,) = only(effects, ev.StoreApprovalCard)
    assert third.approval.approval_id == "approval-a-3"
    step(state, ev.CardStored(approval=third.approval, ok=True))
    effects = read(state, note("serverRequest/resolved", requestId=1009))  # only the one it names
    assert [e.event.approval_id for e in only(effects, ev.Emit)] == ["approval-a-3"]
    effects = read(state, note("serverRequest/resolved", requestId="1008"))  # same digits, not the same id
    assert effects == [] and list(state.turns["turn-a"].approvals) == ["approval-a-2"]


def test_other_server_requests_and_those_of_threads_without_a_turn_are_refused_with_the_reason() -> None:
    state = machine()
    streaming(state)
    other = {"id": 5, "method": "item/tool/requestUserInput", "params": {"threadId": "rt-1", "turnId": "rturn-1"}}
    stray = {**approval_request(6, "ls"), "params": {**approval_request(6, "ls")["params"], "threadId": "rt-9"}}
    effects = read(state, other, stray)
    assert not only(effects, ev.StoreApprovalCard)
    assert [(a.worker_id, a.request_id, a.error.code, a.error.message) for a in only(effects, ev.AnswerRuntime)] == [
        (1, 5, HOST_UNSUPPORTED_REQUEST, "item/tool/requestUserInput: not supported by agenthost"),
        (1, 6, HOST_UNSUPPORTED_REQUEST, "item/commandExecution/requestApproval: no active turn for its thread"),
    ]


def test_a_runtime_error_explains_the_failed_turn_until_the_end_whatever_comes_between() -> None:
    state = machine()
    streaming(state)
    read(state, note("error", turnId="rturn-1", error={"message": "model overloaded"}))
    read(
        state,
        note("codex/event/token_count", turnId="rturn-1"),
        note("account/updated", turnId="rturn-1"),
        note("thread/tokenUsage/updated", turnId="rturn-1"),  # sorts after "error" and "serverRequest/resolved"
    )
    effects = read(state, note("turn/completed", turn={"id": "rturn-1", "status": "failed"}))
    (persist,) = only(effects, ev.Persist)
    assert (persist.record.status, persist.record.error) == ("failed", "model overloaded")


def test_the_last_stderr_line_of_the_current_worker_generation_explains_a_turn_deadline() -> None:
    state = machine(workers=(1, 2))
    streaming(state)
    step(state, ev.StderrLine(worker_id=1, generation=1, line="fatal: out of memory"))
    for worker, generation in ((1, 0), (1, 2), (3, 1)):  # an older or newer generation, a worker not up
        step(state, ev.StderrLine(worker_id=worker, generation=generation, line=f"stale {worker}/{generation}"))
    assert state.stderr == {1: "fatal: out of memory"}
    _, effects = step(state, ev.DeadlinePassed(turn_id="turn-a"))
    (persist,) = only(effects, ev.Persist)
    assert persist.record.error == "turn deadline of 5 s exceeded; its last error: fatal: out of memory"


def test_a_deadline_before_the_runtime_accepted_the_turn_fails_it_without_an_interrupt() -> None:
    state = machine()
    accepted(state)
    assert state.turns["turn-a"].phase == "turn_start"
    _, effects = step(state, ev.DeadlinePassed(turn_id="turn-a"))
    assert not only(effects, ev.CallRuntime)
    (persist,) = only(effects, ev.Persist)
    assert (persist.record.status, persist.record.error) == ("failed", "turn deadline of 5 s exceeded")


def test_an_interrupt_waits_for_the_runtimes_turn_id_even_if_an_anonymous_turn_started_came_first() -> None:
    anonymous = note("turn/started")  # names no turn, so it is taken as this thread's turn
    state = machine()
    accepted(state)  # turn/start not answered yet
    read(state, anonymous)
    _, effects = step(state, ev.Interrupt(turn_id="turn-a"))
    assert not only(effects, ev.CallRuntime)  # a turn/interrupt needs the runtime's turn id
    state = machine()
    effects = accepted(state)
    not_found = RpcError(code=-32600, message="thread not found: rt-1")
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, error=not_found))
    assert state.turns["turn-a"].phase == "resume"
    read(state, anonymous)
    _, effects = step(state, ev.Interrupt(turn_id="turn-a"))
    assert not only(effects, ev.CallRuntime)


def test_a_turn_that_ends_drops_its_own_open_calls_and_only_those() -> None:
    state = machine(max_active=3)
    calls = {name: call.call_id for name, call in dispatch_three(state).items()}
    step(state, ev.DeadlinePassed(turn_id="turn-b"))
    assert set(state.calls) == {calls["a"], calls["c"]}
    _, effects = step(state, ev.CallAnswered(call_id=calls["b"], result={"thread": {"id": "rt-b"}}))
    assert effects == []  # the late answer of an ended turn
    for name in ("a", "c"):
        _, effects = step(state, ev.CallAnswered(call_id=calls[name], result={"thread": {"id": f"rt-{name}"}}))
        assert (call_of(effects).method, call_of(effects).thread_id) == ("turn/start", f"t-{name}")


def test_a_turn_that_ends_leaves_no_route_and_no_open_approval_behind() -> None:
    state = machine()
    streaming(state)
    (card,) = only(read(state, approval_request(1, "ls")), ev.StoreApprovalCard)
    step(state, ev.CardStored(approval=card.approval, ok=True))
    assert state.routes == {(1, "rt-1"): "turn-a"} and list(state.approvals) == ["approval-a-1"]
    read(state, note("turn/completed", turn={"id": "rturn-1", "status": "completed"}))
    assert state.routes == {} and state.approvals == {} and state.calls == {}
    with pytest.raises(UnknownApprovalError):
        step(state, ev.Answered(approval_id="approval-a-1", decision="accept"))


def test_an_approval_whose_card_was_not_recorded_or_whose_turn_ended_is_refused_to_the_runtime() -> None:
    state = machine()
    streaming(state)
    (card,) = only(read(state, approval_request(1, "ls")), ev.StoreApprovalCard)
    _, effects = step(state, ev.CardStored(approval=card.approval, ok=False))
    refused = "item/commandExecution/requestApproval: refused, the approval could not be recorded (storage error)"
    assert [(a.worker_id, a.request_id, a.error.message) for a in only(effects, ev.AnswerRuntime)] == [(1, 1, refused)]
    assert not only(effects, ev.Emit) and state.approvals == {} and state.turns["turn-a"].approvals == {}
    (card,) = only(read(state, approval_request(2, "ls")), ev.StoreApprovalCard)
    step(state, ev.DeadlinePassed(turn_id="turn-a"))  # the turn ends while its card is being stored
    _, effects = step(state, ev.CardStored(approval=card.approval, ok=True))
    assert [(a.request_id, a.error.message) for a in only(effects, ev.AnswerRuntime)] == [(2, refused)]
    assert not only(effects, ev.Emit) and state.approvals == {}


def test_approvals_reset_at_the_deadline_say_what_was_not_run() -> None:
    state = machine()
    streaming(state)
    file_change = {
        "id": 2,
        "method": "item/fileChange/requestApproval",
        "params": {"threadId": "rt-1", "turnId": "rturn-1", "itemId": "f"},
    }
    for card in only(read(state, approval_request(1, "ls"), file_change), ev.StoreApprovalCard):
        step(state, ev.CardStored(approval=card.approval, ok=True))
    _, effects = step(state, ev.DeadlinePassed(turn_id="turn-a"))
    tail = "was reset: turn deadline of 5 s exceeded before it could run. Nothing was executed; send the message again"
    assert [(c.kind, c.text) for c in only(effects, ev.AddCard)] == [
        ("approval reset", f"approval-a-1: the request to run `ls` {tail} to retry."),
        ("approval reset", f"approval-a-2: the request to run `item/fileChange/requestApproval` {tail} to retry."),
    ]


def test_slots_reserved_for_follow_ups_being_started_count_against_max_active_turns() -> None:
    state = machine(max_active=3)
    for thread in ("t1", "t2"):
        _, effects = step(state, ev.QueueChanged(thread_id=thread))
        assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == [thread]
    assert state.reserved == 2
    _, effects = step(state, ev.Send(turn_id="turn-c", thread_id="t3", text="hi", sink="sink-c"))
    assert [b.turn_id for b in only(effects, ev.Begin)] == ["turn-c"]  # the one slot left
    _, effects = step(state, ev.Send(turn_id="turn-d", thread_id="t4", text="hi", sink="sink-d"))
    assert not only(effects, ev.Begin) and logged(effects, "turns.queued")[0]["reason"] == "max active turns"


def followup(state: State, followup_id: str, thread_id: str = "t1") -> None:
    """The thread's queue changed and its next follow-up is started: read, dispatched and begun (not resolved yet)."""
    _, effects = step(state, ev.QueueChanged(thread_id=thread_id))
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == [thread_id]
    started = ev.FollowUpStarted(
        thread_id=thread_id, followup_id=followup_id, turn_id=followup_id, text="later", sink=f"sink-{followup_id}"
    )
    _, effects = step(state, started)
    assert [(r.turn_id, r.sink) for r in only(effects, ev.RegisterSink)] == [(followup_id, f"sink-{followup_id}")]
    assert state.turns[followup_id].followup_id == followup_id and not only(effects, ev.Begin)


def test_a_follow_ups_end_settles_it_done_or_failed_once_the_end_is_durable() -> None:
    state = machine()
    followup(state, "f1")
    _, effects = step(state, ev.Resolved(turn_id="f1", worker_id=1, runtime_thread_id=None))
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-1"}}))
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-1"}}))
    effects = read(state, note("turn/completed", turn={"id": "rturn-1", "status": "completed"}))
    assert not only(effects, ev.SetFollowUp)  # not durable yet
    _, effects = step(state, ev.Completed(turn_id="f1"))
    assert [(f.followup_id, f.state, f.error) for f in only(effects, ev.SetFollowUp)] == [("f1", "done", None)]
    step(state, ev.FollowUpStarted(thread_id="t1"))  # no further follow-up
    followup(state, "f2")
    _, effects = step(state, ev.DeadlinePassed(turn_id="f2"))
    (persist,) = only(effects, ev.Persist)
    assert not only(effects, ev.SetFollowUp)
    _, effects = step(state, ev.FinishStored(record=persist.record))
    assert [(f.followup_id, f.state, f.error) for f in only(effects, ev.SetFollowUp)] == [
        ("f2", "failed", "turn deadline of 5 s exceeded")
    ]


def test_an_end_the_storage_refused_is_told_with_its_own_error_and_the_refusal() -> None:
    state = machine()
    streaming(state)
    _, effects = step(state, ev.DeadlinePassed(turn_id="turn-a"))
    (persist,) = only(effects, ev.Persist)
    _, effects = step(state, ev.FinishRefused(record=persist.record, reason="disk full"))
    (told,) = [e.event for e in only(effects, ev.Emit)]
    assert (told.turn_id, told.status, told.error) == (
        "turn-a",
        "failed",
        "turn deadline of 5 s exceeded; not persisted yet (retrying): disk full",
    )
    assert list(state.unpersisted) == ["turn-a"]
    state = machine()
    streaming(state)
    effects = read(state, note("turn/completed", turn={"id": "rturn-1", "status": "interrupted"}))
    (persist,) = only(effects, ev.Persist)
    assert (persist.record.status, persist.record.error) == ("interrupted", None)
    _, effects = step(state, ev.FinishRefused(record=persist.record, reason="disk full"))
    (told,) = [e.event for e in only(effects, ev.Emit)]
    assert (told.status, told.error) == ("interrupted", "interrupted; not persisted yet (retrying): disk full")


def ended(state: State, turn_id: str, thread_id: str) -> Any:
    """Begin a turn and let its deadline fail it: returns the record to persist."""
    begin(state, turn_id, thread_id)
    _, effects = step(state, ev.DeadlinePassed(turn_id=turn_id))
    (persist,) = only(effects, ev.Persist)
    return persist.record


def test_refused_turn_ends_share_one_armed_retry_whose_attempts_count_until_all_are_written() -> None:
    state = machine(max_active=3)
    a, b = ended(state, "turn-a", "t1"), ended(state, "turn-b", "t2")
    _, effects = step(state, ev.FinishRefused(record=a, reason="disk full"))
    assert [(d.child, d.decision, d.attempt) for d in only(effects, ev.Decide)] == [("persistence", "retry", 1)]
    assert len(only(effects, ev.ArmRetry)) == 1
    _, effects = step(state, ev.FinishRefused(record=b, reason="disk full"))  # joins the armed retry
    assert not only(effects, ev.Decide) and not only(effects, ev.ArmRetry)
    _, effects = step(state, ev.RetryDue())
    assert sorted((p.record.turn_id, p.retry) for p in only(effects, ev.Persist)) == [
        ("turn-a", True),
        ("turn-b", True),
    ]
    _, effects = step(state, ev.FinishStored(record=b, retry=True))
    _, effects = step(state, ev.FinishRefused(record=a, reason="disk full", retry=True))  # still failing
    assert [(d.decision, d.attempt) for d in only(effects, ev.Decide)] == [("retry", 2)]
    step(state, ev.RetryDue())
    step(state, ev.FinishStored(record=a, retry=True))
    assert state.unpersisted == {}
    c = ended(state, "turn-c", "t3")  # a later refusal starts a new count
    _, effects = step(state, ev.FinishRefused(record=c, reason="disk full"))
    assert [(d.decision, d.attempt) for d in only(effects, ev.Decide)] == [("retry", 1)]


def test_a_thread_waits_in_line_once_and_a_busy_one_not_at_all() -> None:
    state = machine(max_active=1)
    begin(state, "turn-a", "t0")
    for turn_id in ("turn-b", "turn-c"):  # no slot: t1 waits, once
        step(state, ev.Send(turn_id=turn_id, thread_id="t1", text="hi", sink=f"sink-{turn_id}"))
    step(state, ev.Send(turn_id="turn-d", thread_id="t0", text="hi", sink="sink-d"))  # busy: runs after turn-a
    assert state.waiting == collections.deque(["t1"])
    _, effects = step(state, ev.QueueChanged(thread_id="t1"))
    assert state.waiting == collections.deque(["t1"]) and not only(effects, ev.StartFollowUp)


def test_a_follow_up_started_after_the_last_worker_went_down_is_held_until_one_joins() -> None:
    state = machine()
    _, effects = step(state, ev.QueueChanged(thread_id="t1"))
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t1"]
    step(state, ev.WorkerGone(worker_id=1, generation=1, reason="killed"))
    started = ev.FollowUpStarted(thread_id="t1", followup_id="f1", turn_id="f1", text="later", sink="sink-f1")
    _, effects = step(state, started)  # the storage began it: it runs once a worker can take it
    assert [r.turn_id for r in only(effects, ev.Resolve)] == ["f1"] and state.busy == {"t1": "f1"}
    step(state, ev.Unresolved(turn_id="f1", reason="no runtime worker is up"))
    assert state.turns["f1"].phase == "held" and state.reserved == 0
    _, effects = step(state, ev.WorkerJoined(worker_id=1, generation=2))
    assert [r.turn_id for r in only(effects, ev.Resolve)] == ["f1"] and not only(effects, ev.StartFollowUp)


def test_a_worker_going_down_is_reconciled_in_order_and_only_for_its_current_generation() -> None:
    state = machine(workers=(1, 2))
    streaming(state)
    step(state, ev.QueueChanged(thread_id="t1", send_next=False))  # a follow-up waits for t1's turn to end
    (card,) = only(read(state, approval_request(1, "ls")), ev.StoreApprovalCard)
    step(state, ev.CardStored(approval=card.approval, ok=True))
    begin(state, "turn-b", "t2")  # a runtime thread loaded on worker 2 (generation 1)
    _, effects = step(state, ev.Resolved(turn_id="turn-b", worker_id=2, runtime_thread_id=None))
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-2"}}))
    assert state.loaded == {(1, 1, "rt-1"), (2, 1, "rt-2")}
    for worker, generation in ((1, 0), (1, 2), (3, 1)):  # an older or newer generation, a worker never up
        _, effects = step(state, ev.WorkerGone(worker_id=worker, generation=generation, reason="killed"))
        assert effects == [] and "turn-a" in state.turns
    _, effects = step(state, ev.WorkerGone(worker_id=1, generation=1, reason="killed"))
    kinds = [type(e).__name__ for e in effects if not isinstance(e, ev.Log | ev.Emit | ev.CancelDeadline)]
    assert kinds == ["AddCard", "Persist", "MappingEvent", "StartFollowUp"]  # reset, fail, pins moved, then queue
    assert only(effects, ev.Persist)[0].record.error == "runtime worker 1 exited (killed)"
    assert state.loaded == {(2, 1, "rt-2")} and state.workers == {2: 1} and "turn-b" in state.turns


def test_after_stop_intake_a_send_is_refused_and_nothing_is_queued() -> None:
    state = machine()
    step(state, ev.StopIntake())
    with pytest.raises(HostClosedError, match="shutting down"):
        step(state, ev.Send(turn_id="turn-a", thread_id="t1", text="hi", sink="sink-a"))
    assert state.turns == {} and state.beginning == {} and list(state.waiting) == []


def test_a_worker_going_down_fails_only_its_own_turns_and_forgets_only_its_own_loaded_threads() -> None:
    state = machine(workers=(1, 2))
    streaming(state)  # turn-a on worker 1 (rt-1 loaded there)
    begin(state, "turn-b", "t2")
    _, effects = step(state, ev.Resolved(turn_id="turn-b", worker_id=2, runtime_thread_id=None))
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-2"}}))
    _, effects = step(state, ev.WorkerGone(worker_id=2, generation=1, reason="killed"))
    assert [p.record.turn_id for p in only(effects, ev.Persist)] == ["turn-b"]
    assert state.turns["turn-a"].phase == "streaming" and state.loaded == {(1, 1, "rt-1")}


def test_a_worker_joining_resolves_only_the_held_turns() -> None:
    state = machine(max_active=3, workers=(1,))
    streaming(state)  # turn-a streams on worker 1
    begin(state, "turn-b", "t2")  # its Resolve is on its way: dispatching
    begin(state, "turn-c", "t3")
    step(state, ev.Unresolved(turn_id="turn-c", reason="no runtime worker is up"))  # held
    _, effects = step(state, ev.WorkerJoined(worker_id=2, generation=1))
    assert [r.turn_id for r in only(effects, ev.Resolve)] == ["turn-c"]
    assert [state.turns[t].phase for t in ("turn-a", "turn-b", "turn-c")] == ["streaming", "dispatching", "dispatching"]


def test_the_queue_moves_past_threads_that_are_busy_or_still_starting() -> None:
    state = machine(max_active=2)
    streaming(state, "turn-a", "t0")
    step(state, ev.QueueChanged(thread_id="t1", send_next=False))  # t1's start goes out: the second slot
    for turn_id, thread_id in (("turn-x", "t1"), ("turn-y", "t2")):  # both wait: t1 is starting, no slot for t2
        step(state, ev.Send(turn_id=turn_id, thread_id=thread_id, text="hi", sink=f"sink-{turn_id}"))
    assert list(state.waiting) == ["t1", "t2"]
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(turn_completed(),)))
    effects += step(state, ev.Completed(turn_id="turn-a"))[1]  # a slot frees while t1 is still starting
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t2"] and list(state.waiting) == ["t1"]
    step(state, ev.FollowUpStarted(thread_id="t1", followup_id="f1", turn_id="f1", text="x", more=True))
    assert state.busy["t1"] == "f1" and list(state.waiting) == ["t1"]  # busy now, still in line
    step(state, ev.Send(turn_id="turn-z", thread_id="t3", text="hi", sink="sink-z"))  # no slot: waits behind t1
    _, effects = step(state, ev.FollowUpStarted(thread_id="t2"))  # none after all: its slot is free
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t3"] and list(state.waiting) == []


def test_workers_and_generations_compare_by_value_whatever_objects_carry_them() -> None:
    worker, generation = int("1000"), int("1001")  # past the small-int cache: equal numbers, distinct objects
    state = State(max_active_turns=2, request_timeout_s=1.0, turn_timeout_s=5.0)
    step(state, ev.WorkerJoined(worker_id=worker, generation=generation))
    for turn_id, thread_id in (("turn-a", "t1"), ("turn-b", "t2")):
        begin(state, turn_id, thread_id)
        _, effects = step(state, ev.Resolved(turn_id=turn_id, worker_id=int("1000"), runtime_thread_id=None))
        assert call_of(effects).worker_id == 1000
    _, effects = step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"thread": {"id": "rt-b"}}))
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-b"}}))
    ended = note("turn/completed", turn={"id": "rturn-b", "status": "completed"})
    effects = read(
        state, {**ended, "params": {**ended["params"], "threadId": "rt-b"}}, worker=int("1000"), generation=int("1001")
    )
    assert [p.turn_id for p in only(effects, ev.PersistComplete)] == ["turn-b"]
    step(state, ev.StderrLine(worker_id=int("1000"), generation=int("1001"), line="fatal: out of memory"))
    assert state.stderr == {1000: "fatal: out of memory"}
    _, effects = step(state, ev.WorkerGone(worker_id=int("1000"), generation=int("1001"), reason="killed"))
    assert [p.record.turn_id for p in only(effects, ev.Persist)] == ["turn-a"] and state.workers == {}
    assert state.loaded == set()


def test_workers_reset_reconciles_every_worker() -> None:
    state = machine(max_active=3, workers=(1, 2))
    streaming(state)
    begin(state, "turn-b", "t2")
    step(state, ev.Resolved(turn_id="turn-b", worker_id=2, runtime_thread_id=None))
    _, effects = step(state, ev.WorkersReset(reason="agenthost is restarting its pool"))
    assert sorted((p.record.turn_id, p.record.error) for p in only(effects, ev.Persist)) == [
        ("turn-a", "runtime worker 1 stopped: agenthost is restarting its pool"),
        ("turn-b", "runtime worker 2 stopped: agenthost is restarting its pool"),
    ]
    assert [m.message.worker_id for m in only(effects, ev.MappingEvent)] == [1, 2]
    assert state.workers == {} and state.turns == {} and state.loaded == set()


def test_a_turn_end_starts_a_follow_up_only_for_a_thread_that_may_have_one_queued() -> None:
    """T19: a turn's end starts its thread's next follow-up only while the thread may have one (a message queued
    for it, an operator's change of its queue, follow-ups found at start); a start that finds none clears that, so
    the turn ends after it start nothing until the next change. A refused start keeps it."""
    state = machine(max_active=1)
    streaming(state)  # turn-a on t1 holds the only slot
    _, effects = step(state, ev.Send(turn_id="turn-b", thread_id="t1", text="later", sink="sink-b"))
    assert [e.turn_id for e in only(effects, ev.Enqueue)] == ["turn-b"] and "t1" in state.queued
    output = turn_completed()
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(output,)))
    effects += step(state, ev.Completed(turn_id="turn-a"))[1]
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t1"]
    step(state, ev.FollowUpStarted(thread_id="t1", refused=True))
    assert "t1" in state.queued and list(state.waiting) == ["t1"]  # stays queued: started again
    _, effects = step(state, ev.QueueChanged(thread_id="t1", send_next=False))
    assert [(f.thread_id, f.include_manual) for f in only(effects, ev.StartFollowUp)] == [("t1", False)]
    step(state, ev.FollowUpStarted(thread_id="t1"))  # none left (an operator cancelled it)
    assert "t1" not in state.queued
    _, effects = step(state, ev.QueueChanged(thread_id="t1", send_next=True))  # an operator: "send the next now"
    assert [(f.thread_id, f.include_manual) for f in only(effects, ev.StartFollowUp)] == [("t1", True)]
    assert "t1" in state.queued
    step(state, ev.FollowUpStarted(thread_id="t1"))  # none after all
    begin(state, "turn-c", "t1")
    _, effects = step(state, ev.Resolved(turn_id="turn-c", worker_id=1, runtime_thread_id="rt-1"))
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-2"}}))
    output = turn_completed("rturn-2")
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(output,)))
    effects += step(state, ev.Completed(turn_id="turn-c"))[1]
    assert "turn-c" not in state.turns
    assert not only(effects, ev.StartFollowUp)  # nothing may be queued: its end starts nothing


def test_a_started_follow_up_with_none_behind_it_ends_its_turn_without_a_start() -> None:
    """T19: a start that finds a follow-up with none queued behind it clears the thread, so its turn's end starts
    nothing; a message queued while that turn runs still brings the next start."""
    state = machine(max_active=1)
    streaming(state)  # turn-a on t1 holds the only slot
    step(state, ev.Send(turn_id="turn-b", thread_id="t1", text="later", sink="sink-b"))
    output = turn_completed()
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(output,)))
    effects += step(state, ev.Completed(turn_id="turn-a"))[1]
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t1"]
    started = ev.FollowUpStarted(thread_id="t1", followup_id="turn-b", turn_id="turn-b", text="later", more=False)
    _, effects = step(state, started)
    assert "t1" not in state.queued and [r.turn_id for r in only(effects, ev.Resolve)] == ["turn-b"]
    _, effects = step(state, ev.Resolved(turn_id="turn-b", worker_id=1, runtime_thread_id="rt-1"))
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-2"}}))
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(turn_completed("rturn-2"),)))
    effects += step(state, ev.Completed(turn_id="turn-b"))[1]
    assert "turn-b" not in state.turns and not only(effects, ev.StartFollowUp)  # none behind it: no start
    begin(state, "turn-c", "t1")
    step(state, ev.Send(turn_id="turn-d", thread_id="t1", text="while turn-c runs", sink="sink-d"))
    assert "t1" in state.queued
    _, effects = step(state, ev.Resolved(turn_id="turn-c", worker_id=1, runtime_thread_id="rt-1"))
    step(state, ev.CallAnswered(call_id=call_of(effects).call_id, result={"turn": {"id": "rturn-3"}}))
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(turn_completed("rturn-3"),)))
    effects += step(state, ev.Completed(turn_id="turn-c"))[1]
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t1"]  # queued while it ran: started


def _queued(state: State, thread_id: str = "t1") -> None:
    """An operator queued a follow-up for an idle thread: its head is fetched."""
    _, effects = step(state, ev.QueueChanged(thread_id=thread_id, send_next=False))
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == [thread_id]


def test_a_refused_follow_up_start_is_not_an_empty_queue_it_is_retried_under_the_policy() -> None:
    """T20: the storage refusing to start a thread's next follow-up keeps the thread queued and first in line and
    arms the persistence retry (one decision event); at `RetryDue` it is started again, and it runs."""
    state = machine()
    _queued(state)
    _, effects = step(state, ev.FollowUpStarted(thread_id="t1", refused=True))
    assert "t1" in state.queued and list(state.waiting) == ["t1"] and not state.starting and state.reserved == 0
    assert [d.decision for d in only(effects, ev.Decide)] == ["retry"] and len(only(effects, ev.ArmRetry)) == 1
    assert "the next follow-up of thread t1 could not be started" in only(effects, ev.Decide)[0].reason
    _, effects = step(state, ev.RetryDue())
    assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t1"]
    _, effects = step(state, ev.FollowUpStarted(thread_id="t1", followup_id="f-1", turn_id="f-1", text="queued"))
    assert [r.turn_id for r in only(effects, ev.Resolve)] == ["f-1"] and state.retry_attempt == 0


def test_a_storage_that_keeps_refusing_follow_up_starts_makes_the_coordinator_escalate() -> None:
    """T20: the attempts count until a start goes through, so a storage that keeps refusing reaches the policy's
    cap and the coordinator escalates."""
    state = machine()
    _queued(state)
    decisions: list[str] = []
    for _ in range(PERSIST_RETRY.max_attempts + 2):
        _, effects = step(state, ev.FollowUpStarted(thread_id="t1", refused=True))
        decisions += [d.decision for d in only(effects, ev.Decide)]
        if only(effects, ev.Escalate):
            break
        _, effects = step(state, ev.RetryDue())
        assert [f.thread_id for f in only(effects, ev.StartFollowUp)] == ["t1"]
    assert decisions == ["retry"] * PERSIST_RETRY.max_attempts + ["give_up"]


def test_after_abort_all_a_retry_starts_no_follow_up() -> None:
    """The runtimes are stopping (AbortAll): a retry still persists what waits, but no queued follow-up starts."""
    state = machine()
    _queued(state)
    step(state, ev.FollowUpStarted(thread_id="t1", refused=True))
    step(state, ev.AbortAll(reason="stopping"))
    _, effects = step(state, ev.RetryDue())
    assert not only(effects, ev.StartFollowUp) and list(state.waiting) == ["t1"]


def test_abort_all_tries_once_more_to_persist_the_ends_the_storage_refused() -> None:
    """T9: when the runtimes stop, a turn end waiting for its persistence retry is written once more, then and
    there (a clean stop does not leave it pending until the next start)."""
    state = machine()
    a = ended(state, "turn-a", "t1")
    step(state, ev.FinishRefused(record=a, reason="disk full"))
    assert state.retry_armed
    _, effects = step(state, ev.AbortAll(reason="stopping"))
    assert [(p.record.turn_id, p.retry) for p in only(effects, ev.Persist)] == [("turn-a", True)]
    _, effects = step(state, ev.FinishStored(record=a, retry=True))
    assert not state.unpersisted
