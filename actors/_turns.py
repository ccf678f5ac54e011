"""Pure helpers of the turn coordinator: its settings, the host-owned subscriber registry, and the small functions
that read runtime messages.

Contract: no actor logic here. `TurnRegistry` is thread-safe; everything else is plain data or pure functions.
Runtime ids are read defensively: a malformed message yields None, never an exception.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import msgspec

from agenthost.actors._errors import InvalidDecisionError
from agenthost.protocol._messages import TurnFinished

__all__ = [
    "APPROVAL_METHODS",
    "STEP_METHODS",
    "CoordinatorSettings",
    "TurnRegistry",
    "emit",
    "nested_id",
    "new_turn_id",
    "runtime_turn_of",
    "validate_decision",
]

APPROVAL_METHODS = frozenset({"item/commandExecution/requestApproval", "item/fileChange/requestApproval"})
_DECISIONS = frozenset({"accept", "acceptForSession", "decline", "cancel"})


class CoordinatorSettings(msgspec.Struct, frozen=True, kw_only=True):
    request_timeout_s: float = 30.0
    turn_timeout_s: float = 600.0
    max_active_turns: int = 8
    approval_policy: str = "on-request"
    sandbox: str = "workspace-write"
    ask_timeout_s: float = 30.0  # how long the coordinator waits for the persistence or mapping actor


class TurnRegistry:
    """Subscribers of open turns and queued follow-ups, by turn id. Owned by the host supervisor and handed to
    every coordinator it starts, so a coordinator that crashed can still be followed by one that tells callers
    how their turns ended. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: dict[str, Any] = {}

    def put(self, turn_id: str, sink: Any) -> None:
        if sink is not None:
            with self._lock:
                self._sinks[turn_id] = sink

    def get(self, turn_id: str) -> Any:
        with self._lock:
            return self._sinks.get(turn_id)

    def pop(self, turn_id: str) -> Any:
        with self._lock:
            return self._sinks.pop(turn_id, None)

    def turn_ids(self) -> list[str]:
        with self._lock:
            return list(self._sinks)

    def fail_all(self, reason: str) -> int:
        """Tell every caller still waiting that its turn ended as failed (the host itself failed)."""
        with self._lock:
            sinks, self._sinks = self._sinks, {}
        for turn_id, sink in sinks.items():
            emit(sink, TurnFinished(turn_id=turn_id, status="failed", text="", error=reason))
        return len(sinks)


def new_turn_id() -> str:
    """`turn-` and 16 random hex digits (64 bits from os.urandom)."""
    return f"turn-{os.urandom(8).hex()}"


def emit(sink: Any, event: Any) -> None:
    if sink is not None:
        sink.put(event)


def validate_decision(decision: Any) -> Any:
    if isinstance(decision, str) and decision in _DECISIONS:
        return decision
    if isinstance(decision, dict) and len(decision) == 1:
        return decision
    raise InvalidDecisionError(
        f"approval decision must be one of {sorted(_DECISIONS)} or a one-key object, got {decision!r}"
    )


STEP_METHODS = {"thread_start": "thread/start", "resume": "thread/resume", "turn_start": "turn/start"}


def runtime_turn_of(method: str, params: dict[str, Any]) -> str | None:
    """The runtime turn id a message names: `turn.id` on turn/started|completed, else `turnId`; None if none."""
    if method in ("turn/started", "turn/completed"):
        turn = params.get("turn")
        return turn.get("id") if isinstance(turn, dict) else None
    value = params.get("turnId")
    return value if isinstance(value, str) else None


def nested_id(result: dict[str, Any], key: str) -> str | None:
    inner = result.get(key)
    value = inner.get("id") if isinstance(inner, dict) else None
    return value if isinstance(value, str) else None
