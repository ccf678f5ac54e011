"""Helpers for tests of agenthost and of applications that embed it.

- `capture_events(*names)`: a context manager that records the structured events named `names` (default: every
  supervisor decision) while it is open, whether or not logging is configured; nothing is printed by it.
  `CapturedEvents.of(name, **match)` returns the matching events, each as a dict `{"event": name, "level": ...,
  **fields}`, in emission order. Thread-safe: actors emit from their own threads.
- `FakeClock`: manual time for a host (`AgentHost(config, clock=FakeClock())`); see `agenthost.actors.FakeClock`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from agenthost.actors import FakeClock
from agenthost.actors._log import Event, subscribe

__all__ = ["CapturedEvents", "FakeClock", "capture_events"]


class CapturedEvents:
    """Events recorded by `capture_events`, in emission order."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append(event.as_dict())

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def of(self, name: str = "supervisor.decision", **match: Any) -> list[dict[str, Any]]:
        """Events named `name` whose fields equal every `match` item, in emission order."""
        with self._lock:
            return [e for e in self._events if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


@contextlib.contextmanager
def capture_events(*names: str) -> Iterator[CapturedEvents]:
    """Record events named `names` (default: "supervisor.decision") until the block ends."""
    recorder = CapturedEvents(frozenset(names or ("supervisor.decision",)))
    unsubscribe = subscribe(recorder, recorder.names)
    try:
        yield recorder
    finally:
        unsubscribe()
