"""What a caller waits on: a turn (`TurnHandle`, and the queue its events arrive in), and the answer of a runtime
request passed on outside any turn (`CallAnswer`).

Contract: events arrive in order and end with exactly one `TurnFinished`. Every wait takes a timeout; a timeout
raises `TimeoutError` naming the turn and consumes nothing. `wait()` sleeps until the end was delivered, then
consumes every event up to it (the events before it never wake the caller). `ended()` waits for the end without
consuming events (shutdown's drain uses it, so a caller never misses its own `TurnFinished`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

from agenthost.actors._errors import HostUnavailableError
from agenthost.protocol import TurnEvent, TurnFinished
from agenthost.protocol._jsonrpc import RpcError
from agenthost.protocol._messages import CallResult

__all__ = ["CallAnswer", "RuntimeCallError", "TurnEvents", "TurnHandle"]

EventT = TypeVar("EventT")


class TurnEvents(queue.SimpleQueue[TurnEvent]):
    """A turn's event queue that also records, without consuming anything, that `TurnFinished` was delivered
    (`SimpleQueue`: put and get are C code, with no Python-level condition variable between a host thread's put
    and the waiting caller)."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = threading.Event()

    def put(self, item: TurnEvent, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if isinstance(item, TurnFinished):
            self.ended.set()


class TurnHandle:
    """The caller's view of one turn: its events, in order, ending with `TurnFinished`."""

    def __init__(self, turn_id: str, queued: bool, events: TurnEvents) -> None:
        self.turn_id = turn_id
        self.queued = queued
        self._events = events
        self.history: list[TurnEvent] = []
        self.finished: TurnFinished | None = None

    def next_event(self, timeout_s: float) -> TurnEvent:
        if self.finished is not None:
            raise RuntimeError(f"turn {self.turn_id} already finished ({self.finished.status})")
        try:
            event = self._events.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"turn {self.turn_id}: no event within {timeout_s:g} s") from None
        self.history.append(event)
        if isinstance(event, TurnFinished):
            self.finished = event
        return event

    def ended(self, timeout_s: float) -> bool:
        """Wait until the turn's `TurnFinished` was delivered, WITHOUT consuming any event; False on timeout."""
        return self._events.ended.wait(timeout_s)

    def events(self, timeout_s: float = 60.0) -> Iterator[TurnEvent]:
        """Yield events until (and including) `TurnFinished`; each must come within `timeout_s`."""
        while self.finished is None:
            yield self.next_event(timeout_s)

    def wait_for(self, kind: type[EventT], timeout_s: float = 60.0) -> EventT:
        """Consume events until one of type `kind` arrives; TimeoutError if the turn ends or time runs out first."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.finished is not None:
                if isinstance(self.finished, kind):
                    return self.finished
                raise TimeoutError(f"turn {self.turn_id} finished ({self.finished.status}) before a {kind.__name__}")
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, kind):
                return event

    def wait(self, timeout_s: float = 60.0) -> TurnFinished:
        """The turn's `TurnFinished`, every event before it consumed. The caller sleeps until the end was delivered
        (the events before it do not wake it: each wake-up would take the GIL from the host's threads)."""
        if self.finished is None and not self._events.ended.wait(timeout_s):
            raise TimeoutError(f"turn {self.turn_id}: no TurnFinished within {timeout_s:g} s")
        return self.wait_for(TurnFinished, timeout_s)


class RuntimeCallError(RuntimeError):
    """A runtime answered a passed-on request with an error (`error` is its RpcError)."""

    def __init__(self, error: RpcError) -> None:
        super().__init__(error.message)
        self.error = error


class CallAnswer:
    """The `reply_to` of one passed-on runtime request (`AgentHost.runtime_call`): the worker tells it the
    CallResult; `wait` returns its result, raises RuntimeCallError for its error, HostUnavailableError past the
    timeout."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: CallResult | None = None

    def tell(self, message: CallResult) -> None:
        self._result = message
        self._done.set()

    def wait(self, worker_id: int, method: str, timeout_s: float) -> Any:
        if not self._done.wait(timeout_s):
            raise HostUnavailableError(f"runtime worker {worker_id} did not answer {method} within {timeout_s:g} s")
        assert self._result is not None
        if self._result.error is not None:
            raise RuntimeCallError(self._result.error)
        return self._result.result
