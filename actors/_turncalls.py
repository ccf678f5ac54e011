"""What the turn state machine says to a runtime: its calls with the thread's settings, steering, the passthrough of
runtime notifications, and the one retry without refused options (part of actors._turnmachine; pure functions).

Contract:
- `thread/start` gets `approvalPolicy` and `sandbox` (the host's defaults) overridden by the thread's stored
  thread-level settings; `thread/resume` gets the same settings; `turn/start` gets the turn's input (the caller's
  own input items, else one text item) and the thread's stored per-turn settings, unless the runtime refused them.
- Options refused: a `turn/start` that fails (other than "thread not found") while it carried per-turn settings is
  started again once without them (`OPTIONS_RETRY`, one decision event): a card in the transcript, an
  `OptionsDropped` event to the caller, and the settings are removed from the thread (`ForgetOptions`).
- Steering: input for a turn the runtime has announced goes out at once as `turn/steer` (expected turn: the
  runtime's); earlier input waits on the turn and goes out right after the `turn/start` answer. Each steer is a
  card ("steered"). A refused steer is logged.
- Passthrough: `notice(turn, method, params)` is the runtime notification with the runtime's thread and turn ids
  replaced by agenthost's wherever they occur as whole strings (`remap`).
"""

from __future__ import annotations

from typing import Any

from agenthost.actors import _turnends as ends
from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import TurnNotActiveError
from agenthost.actors._recovery import OPTIONS_RETRY, decide_retry
from agenthost.actors._turnstate import State, Step, Turn
from agenthost.protocol._jsonrpc import RpcError
from agenthost.protocol._messages import OptionsDropped, RuntimeNotice

__all__ = [
    "call",
    "flush_steers",
    "is_loaded",
    "notice",
    "passthrough_params",
    "remap",
    "resume",
    "retry_without_options",
    "start_thread",
    "start_turn",
    "steer",
]

Out = list[ev.Effect]


def call(s: State, turn: Turn, step_name: Step, method: str, params: dict[str, Any], out: Out) -> None:
    if step_name == "thread_start" or step_name == "resume" or step_name == "turn_start":  # noqa: PLR1714 - narrows
        turn.phase = step_name
    call_id, s.next_call = s.next_call, s.next_call + 1
    s.calls[call_id] = (turn.turn_id, step_name)
    assert turn.worker_id is not None
    out.append(
        ev.CallRuntime(
            call_id=call_id, worker_id=turn.worker_id, method=method, params=params, thread_id=turn.thread_id
        )
    )


def is_loaded(s: State, worker_id: int, runtime_thread_id: str) -> bool:
    generation = s.workers.get(worker_id)
    return generation is not None and (worker_id, generation, runtime_thread_id) in s.loaded


def start_thread(s: State, turn: Turn, out: Out) -> None:
    params = {"approvalPolicy": s.approval_policy, "sandbox": s.sandbox, **turn.thread_params}
    call(s, turn, "thread_start", "thread/start", params, out)


def start_turn(s: State, turn: Turn, out: Out) -> None:
    assert turn.worker_id is not None and turn.runtime_thread_id is not None
    s.routes[(turn.worker_id, turn.runtime_thread_id)] = turn.turn_id
    items = list(turn.input) if turn.input is not None else [{"type": "text", "text": turn.text}]
    options = {} if turn.options_dropped else turn.turn_params
    call(s, turn, "turn_start", "turn/start", {**options, "threadId": turn.runtime_thread_id, "input": items}, out)


def resume(s: State, turn: Turn, reason: str, out: Out) -> None:
    ends.log(out, "turns.resuming", turn=turn.turn_id, runtime_thread=turn.runtime_thread_id, reason=reason)
    if turn.runtime_thread_id is not None and turn.worker_id is not None:
        out.append(
            ev.PrepareResume(runtime_thread_id=turn.runtime_thread_id, worker_id=turn.worker_id, turn_id=turn.turn_id)
        )
    call(s, turn, "resume", "thread/resume", {**turn.thread_params, "threadId": turn.runtime_thread_id}, out)


def retry_without_options(s: State, turn: Turn, error: RpcError, out: Out) -> bool:
    """The runtime refused a turn/start that carried per-turn settings: start it once more without them."""
    if not turn.turn_params or turn.options_dropped:
        return False
    verdict = decide_retry(OPTIONS_RETRY, 1)
    keys = tuple(sorted(turn.turn_params))
    reason = f"runtime refused turn/start with options {list(keys)}: {error.message}"
    out.append(ev.Decide(child=f"turn {turn.turn_id}", decision=verdict.action, reason=f"{reason}; {verdict.reason}"))
    if verdict.action != "retry":
        return False
    turn.options_dropped = True
    text = f"The runtime refused this turn's options {', '.join(keys)} ({error.message}); it ran without them."
    out += [
        ev.AddCard(thread_id=turn.thread_id, turn_id=turn.turn_id, kind="runtime options refused", text=text),
        ev.Emit(sink=turn.sink, event=OptionsDropped(turn_id=turn.turn_id, options=keys, reason=error.message)),
        ev.ForgetOptions(thread_id=turn.thread_id, keys=keys),
    ]
    start_turn(s, turn, out)
    return True


# --- steering --------------------------------------------------------------------------------------------------
def steer(s: State, e: ev.Steer, out: Out) -> None:
    turn = s.turns.get(e.turn_id)
    if turn is None:
        raise TurnNotActiveError(f"no active turn with id {e.turn_id!r}")
    turn.steers.append((e.text, e.input))
    if turn.phase == "streaming":
        flush_steers(s, turn, out)


def flush_steers(s: State, turn: Turn, out: Out) -> None:
    steers, turn.steers = turn.steers, []
    for text, items in steers:
        out.append(ev.AddCard(thread_id=turn.thread_id, turn_id=turn.turn_id, kind="steered", text=text))
        params = {
            "threadId": turn.runtime_thread_id,
            "expectedTurnId": turn.runtime_turn_id,
            "input": list(items) if items is not None else [{"type": "text", "text": text}],
        }
        call(s, turn, "steer", "turn/steer", params, out)


# --- passthrough -----------------------------------------------------------------------------------------------
def remap(value: Any, ids: dict[str, str]) -> Any:
    """`value` with every string equal to a key of `ids` replaced by its value (dicts and lists walked)."""
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, dict):
        return {key: remap(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [remap(item, ids) for item in value]
    return value


def _ids(turn: Turn) -> dict[str, str]:
    ids = {}
    if turn.runtime_thread_id is not None:
        ids[turn.runtime_thread_id] = turn.thread_id
    if turn.runtime_turn_id is not None:
        ids[turn.runtime_turn_id] = turn.turn_id
    return ids


def notice(turn: Turn, method: str, params: Any) -> ev.Emit:
    return ev.Emit(
        sink=turn.sink, event=RuntimeNotice(turn_id=turn.turn_id, method=method, params=remap(params, _ids(turn)))
    )


def passthrough_params(turn: Turn, params: Any) -> Any:
    return remap(params, _ids(turn)) if turn.passthrough else None
