"""The turn state machine's rules one example at a time (actors._turnmachine, actors._turnends): each test steps the
pure machine through a short, explicit history and checks the effects and the state it leaves. The properties over
random histories are in tests/test_turn_machine.py."""

from __future__ import annotations

import collections
from typing import Any

from agenthost.actors import _turnevents as ev
from agenthost.actors._turnmachine import step
from agenthost.actors._turnstate import State
from agenthost.protocol._jsonrpc import Notification, RpcError

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


def test_a_refused_followup_dispatch_waits_in_line_once() -> None:
    state = machine()
    fields = ev.BeginRefused.__struct_fields__
    queued = {"followup_id": "f1"} if "followup_id" in fields else {}  # (a follow-up, where the event says so)
    for _ in range(2):
        _, effects = step(state, ev.BeginRefused(turn_id="f1", thread_id="t1", error="disk full", **queued))
        assert logged(effects, "turns.followup_dispatch_failed") == [
            {"followup": "f1", "thread": "t1", "error": "disk full"}
        ]
    assert state.waiting == collections.deque(["t1"])


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
    output = Notification(
        method="turn/completed", params={"threadId": "rt-1", "turn": {"id": "rturn-1", "status": "completed"}}
    )
    step(state, ev.Output(worker_id=1, generation=1, messages=(output,)))
    step(state, ev.Completed(turn_id="turn-a"))  # the turn ended: the thread's next follow-up is fetched
    assert "t1" in state.fetching
    step(state, ev.FollowUpFetched(thread_id="t1"))  # none queued
    begin(state, "turn-b", "t1")
    _, effects = step(state, ev.Resolved(turn_id="turn-b", worker_id=1, runtime_thread_id="rt-1"))
    assert call_of(effects).method == "turn/start"


def test_a_send_to_a_thread_whose_next_follow_up_is_being_fetched_queues_behind_it() -> None:
    state = machine()
    streaming(state)
    output = Notification(
        method="turn/completed", params={"threadId": "rt-1", "turn": {"id": "rturn-1", "status": "completed"}}
    )
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(output,)))
    effects += step(state, ev.Completed(turn_id="turn-a"))[1]
    assert [f.thread_id for f in only(effects, ev.FetchFollowUp)] == ["t1"]
    _, effects = step(state, ev.Send(turn_id="turn-b", thread_id="t1", text="hi", sink="sink-b"))
    assert only(effects, ev.Begin) == [] and [e.turn_id for e in only(effects, ev.Enqueue)] == ["turn-b"]
    _, effects = step(state, ev.FollowUpFetched(thread_id="t1", followup_id="f-1", turn_id="f-1", text="first"))
    assert [b.turn_id for b in only(effects, ev.Begin)] == ["f-1"]  # the follow-up queued first runs first
    assert "t1" not in state.fetching


def test_call_ids_stay_unique_while_calls_are_open() -> None:
    state = machine(max_active=3)
    calls = {}
    for name in ("a", "b", "c"):
        begin(state, f"turn-{name}", f"t-{name}")
        _, effects = step(state, ev.Resolved(turn_id=f"turn-{name}", worker_id=1, runtime_thread_id=None))
        calls[name] = call_of(effects)
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
    ended = Notification(
        method="turn/completed", params={"threadId": "rt-1", "turn": {"id": "rturn-1", "status": "completed"}}
    )
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
    failed = Notification(
        method="turn/completed", params={"threadId": "rt-1", "turn": {"id": "rturn-1", "status": "failed"}}
    )
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(error,)))
    assert not only(effects, ev.Emit)
    _, effects = step(state, ev.Output(worker_id=1, generation=1, messages=(failed,)))
    (persist,) = only(effects, ev.Persist)
    assert (persist.record.status, persist.record.error) == ("failed", "boom")
