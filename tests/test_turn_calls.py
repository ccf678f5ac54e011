"""What the pure turn machine says to a runtime (actors._turncalls): the thread's settings on every call, the one
retry without refused options, steering, and the passthrough of runtime notifications with agenthost's ids."""

from __future__ import annotations

from typing import Any

import pytest

from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import TurnNotActiveError
from agenthost.actors._turncalls import remap
from agenthost.actors._turnmachine import step
from agenthost.actors._turnstate import State
from agenthost.protocol._jsonrpc import Notification, Request, RpcError
from agenthost.protocol._messages import ApprovalRequested, Delta, OptionsDropped, RuntimeNotice, TurnFinished
from agenthost.storage import ThreadSettings

SETTINGS = ThreadSettings(thread={"cwd": "/w", "approvalPolicy": "never"}, turn={"model": "m9", "effort": "high"})


class Shell:
    """Runs the machine and keeps every effect; answers only what must be answered at once."""

    def __init__(self) -> None:
        self.state = State(max_active_turns=4, request_timeout_s=1.0, turn_timeout_s=60.0)
        self.effects: list[Any] = []
        self.state.workers[1] = 1

    def run(self, event: Any) -> list[Any]:
        start = len(self.effects)
        pending = [event]
        while pending:
            _, effects = step(self.state, pending.pop(0))
            for effect in effects:
                self.effects.append(effect)
                if isinstance(effect, ev.StoreApprovalCard):
                    pending.append(ev.CardStored(approval=effect.approval, ok=True))
                elif isinstance(effect, ev.Persist):
                    pending.append(ev.FinishStored(record=effect.record))
        return self.effects[start:]

    def calls(self, since: list[Any]) -> list[ev.CallRuntime]:
        return [e for e in since if isinstance(e, ev.CallRuntime)]

    def emitted(self, since: list[Any]) -> list[Any]:
        return [e.event for e in since if isinstance(e, ev.Emit)]

    def begin(
        self,
        *,
        settings: ThreadSettings | None = SETTINGS,
        runtime_thread: str | None = None,
        passthrough: bool = False,
        input: tuple[Any, ...] | None = None,
    ) -> list[Any]:
        self.run(ev.Send(turn_id="T", thread_id="t", text="hi", sink="sink", input=input, passthrough=passthrough))
        self.run(ev.Begun(turn_id="T", thread_id="t", text="hi", sink="sink", settings=settings))
        return self.run(ev.Resolved(turn_id="T", worker_id=1, runtime_thread_id=runtime_thread))

    def answer(self, call: ev.CallRuntime, result: Any = None, error: RpcError | None = None) -> list[Any]:
        return self.run(ev.CallAnswered(call_id=call.call_id, result=result, error=error))

    def streaming(self, **begin: Any) -> None:
        """Begin T on a new runtime thread "rt", start it as runtime turn "rturn"."""
        start = self.calls(self.begin(**begin))[0]
        turn_start = self.calls(self.answer(start, {"thread": {"id": "rt"}}))[0]
        self.answer(turn_start, {"turn": {"id": "rturn"}})

    def output(self, *messages: Any) -> list[Any]:
        return self.run(ev.Output(worker_id=1, generation=1, messages=messages))


def test_the_threads_settings_go_with_thread_start_and_turn_start() -> None:
    shell = Shell()
    start = shell.calls(shell.begin(input=({"type": "text", "text": "hi"}, {"type": "localImage", "path": "/i"})))
    assert [(c.method, c.params) for c in start] == [
        ("thread/start", {"approvalPolicy": "never", "sandbox": "workspace-write", "cwd": "/w"}),
    ]
    turn_start = shell.calls(shell.answer(start[0], {"thread": {"id": "rt"}}))
    assert [(c.method, c.params) for c in turn_start] == [
        (
            "turn/start",
            {
                "model": "m9",
                "effort": "high",
                "threadId": "rt",
                "input": [{"type": "text", "text": "hi"}, {"type": "localImage", "path": "/i"}],
            },
        )
    ]


def test_a_resume_carries_the_thread_settings_and_no_settings_means_the_defaults() -> None:
    shell = Shell()
    resume = shell.calls(shell.begin(runtime_thread="rt"))[0]
    assert (resume.method, resume.params) == (
        "thread/resume",
        {"cwd": "/w", "approvalPolicy": "never", "threadId": "rt"},
    )
    plain = Shell()
    start = plain.calls(plain.begin(settings=None))[0]
    assert start.params == {"approvalPolicy": "on-request", "sandbox": "workspace-write"}
    turn_start = plain.calls(plain.answer(start, {"thread": {"id": "rt"}}))[0]
    assert turn_start.params == {"threadId": "rt", "input": [{"type": "text", "text": "hi"}]}


def test_refused_options_are_dropped_once_said_and_forgotten_then_a_second_refusal_fails_the_turn() -> None:
    shell = Shell()
    start = shell.calls(shell.begin())[0]
    first = shell.calls(shell.answer(start, {"thread": {"id": "rt"}}))[0]
    refused = shell.answer(first, error=RpcError(code=-32600, message="model not found: m9"))
    decision = next(e for e in refused if isinstance(e, ev.Decide))
    assert decision.decision == "retry" and "options ['effort', 'model']" in decision.reason
    card = next(e for e in refused if isinstance(e, ev.AddCard))
    assert card.kind == "runtime options refused" and "model not found: m9" in card.text
    assert shell.emitted(refused) == [
        OptionsDropped(turn_id="T", options=("effort", "model"), reason="model not found: m9")
    ]
    assert [e for e in refused if isinstance(e, ev.ForgetOptions)] == [
        ev.ForgetOptions(thread_id="t", keys=("effort", "model"))
    ]
    again = shell.calls(refused)
    assert [(c.method, c.params) for c in again] == [
        ("turn/start", {"threadId": "rt", "input": [{"type": "text", "text": "hi"}]})
    ]
    ended = shell.answer(again[0], error=RpcError(code=-32600, message="still no"))
    finished = [e for e in shell.emitted(ended) if isinstance(e, TurnFinished)]
    assert [(f.status, f.error) for f in finished] == [("failed", "turn/start failed: still no")]


def test_a_turn_without_options_is_not_retried() -> None:
    shell = Shell()
    start = shell.calls(shell.begin(settings=None))[0]
    first = shell.calls(shell.answer(start, {"thread": {"id": "rt"}}))[0]
    ended = shell.answer(first, error=RpcError(code=-32600, message="bad input"))
    assert not [e for e in ended if isinstance(e, (ev.Decide, ev.ForgetOptions))]
    assert [f.status for f in shell.emitted(ended) if isinstance(f, TurnFinished)] == ["failed"]


def test_steering_waits_for_the_runtime_turn_then_goes_out_in_order() -> None:
    shell = Shell()
    start = shell.calls(shell.begin(settings=None))[0]
    assert shell.calls(shell.run(ev.Steer(turn_id="T", text="early"))) == []  # no runtime turn yet: held
    turn_start = shell.calls(shell.answer(start, {"thread": {"id": "rt"}}))[0]
    flushed = shell.answer(turn_start, {"turn": {"id": "rturn"}})
    assert [(c.method, c.params) for c in shell.calls(flushed)] == [
        ("turn/steer", {"threadId": "rt", "expectedTurnId": "rturn", "input": [{"type": "text", "text": "early"}]})
    ]
    assert [(e.kind, e.text) for e in flushed if isinstance(e, ev.AddCard)] == [("steered", "early")]
    later = shell.run(ev.Steer(turn_id="T", text="later", input=({"type": "text", "text": "later!"},)))
    assert [c.params["input"] for c in shell.calls(later)] == [[{"type": "text", "text": "later!"}]]
    with pytest.raises(TurnNotActiveError):
        shell.run(ev.Steer(turn_id="nope", text="x"))


def test_passthrough_delivers_the_runtimes_notifications_with_agenthosts_ids() -> None:
    shell = Shell()
    shell.streaming(settings=None, passthrough=True)
    out = shell.output(
        Notification("turn/started", {"threadId": "rt", "turn": {"id": "rturn", "rootTurnId": "rturn"}}),
        Notification("item/agentMessage/delta", {"threadId": "rt", "turnId": "rturn", "itemId": "m", "delta": "a"}),
        Notification("item/agentMessage/delta", {"threadId": "rt", "turnId": "rturn", "itemId": "m", "delta": "b"}),
        Request(7, "item/commandExecution/requestApproval", {"threadId": "rt", "turnId": "rturn", "command": "ls"}),
    )
    emitted = shell.emitted(out)
    assert not [e for e in emitted if isinstance(e, Delta)]  # the notices carry the deltas
    notices = [(e.method, e.params) for e in emitted if isinstance(e, RuntimeNotice)]
    assert notices == [
        ("turn/started", {"threadId": "t", "turn": {"id": "T", "rootTurnId": "T"}}),
        ("item/agentMessage/delta", {"threadId": "t", "turnId": "T", "itemId": "m", "delta": "a"}),
        ("item/agentMessage/delta", {"threadId": "t", "turnId": "T", "itemId": "m", "delta": "b"}),
    ]
    asked = next(e for e in emitted if isinstance(e, ApprovalRequested))
    assert asked.params == {"threadId": "t", "turnId": "T", "command": "ls"}
    ended = shell.output(
        Notification("turn/completed", {"threadId": "rt", "turn": {"id": "rturn", "status": "interrupted"}})
    )
    kinds = [type(e).__name__ for e in shell.emitted(ended)]
    assert kinds.index("RuntimeNotice") < kinds.index("TurnFinished")  # the runtime's word first, then the host's


def test_without_passthrough_deltas_are_coalesced_and_no_notice_is_sent() -> None:
    shell = Shell()
    shell.streaming(settings=None)
    out = shell.output(
        Notification("item/agentMessage/delta", {"threadId": "rt", "turnId": "rturn", "itemId": "m", "delta": "a"}),
        Notification("item/agentMessage/delta", {"threadId": "rt", "turnId": "rturn", "itemId": "m", "delta": "b"}),
    )
    assert shell.emitted(out) == [Delta(turn_id="T", text="ab", count=2)]


def test_remap_replaces_whole_ids_only() -> None:
    ids = {"rt": "t", "rturn": "T"}
    value = {"threadId": "rt", "text": "rt and rturn", "items": [{"id": "rturn"}, 3, None], "rt": "x"}
    assert remap(value, ids) == {"threadId": "t", "text": "rt and rturn", "items": [{"id": "T"}, 3, None], "rt": "x"}
