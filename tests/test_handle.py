"""A turn as its caller sees it (agenthost._handle): events in order, `wait()` sleeping until the end was delivered,
timeouts that consume nothing."""

from __future__ import annotations

from typing import Any

import pytest

from agenthost._handle import TurnEvents, TurnHandle
from agenthost.protocol import Delta, TurnFinished

pytestmark = pytest.mark.timeout(30)


class _CountedEvents(TurnEvents):
    """Counts the gets made before the end was delivered: each would wake the waiting caller."""

    def __init__(self) -> None:
        super().__init__()
        self.gets_before_end = 0

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not self.ended.is_set():
            self.gets_before_end += 1
        return super().get(block, timeout)


def _delta(text: str) -> Delta:
    return Delta(turn_id="turn-1", text=text, count=1)


def test_wait_times_out_consuming_nothing_then_returns_the_end_with_every_event_in_order() -> None:
    events = TurnEvents()
    handle = TurnHandle("turn-1", queued=False, events=events)
    events.put(_delta("a"))
    with pytest.raises(TimeoutError, match="turn-1"):
        handle.wait(0.01)
    assert handle.history == [] and handle.finished is None
    finished = TurnFinished(turn_id="turn-1", status="completed", text="ab", error=None)
    events.put(_delta("b"))
    events.put(finished)
    assert handle.wait(1.0) == finished
    assert handle.history == [_delta("a"), _delta("b"), finished]
    assert handle.wait(1.0) == finished  # asked again: the same end, nothing more to consume


def test_the_events_before_the_end_do_not_wake_a_caller_in_wait() -> None:
    events = _CountedEvents()
    handle = TurnHandle("turn-1", queued=False, events=events)
    for text in ("a", "b", "c"):
        events.put(_delta(text))
    with pytest.raises(TimeoutError):
        handle.wait(0.01)
    assert events.gets_before_end == 0
    events.put(TurnFinished(turn_id="turn-1", status="completed", text="abc", error=None))
    assert handle.wait(1.0).text == "abc" and events.gets_before_end == 0
    assert [getattr(event, "text", None) for event in handle.history] == ["a", "b", "c", "abc"]
