"""Structured events: one logger per actor kind, one event per supervisor decision.

Contract:
- Every restart/backoff/give-up decision is emitted by `decision()` as ONE event named "supervisor.decision" with
  the keys supervisor, child, decision, reason, attempt, delay_s (plus optional extras). Tests capture these with
  `structlog.testing.capture_logs()` instead of parsing text.
- Hot-path logs (per delta) are emitted at debug level only; `configure(level)` installs a filtering logger so a
  disabled level costs one method call.
- `capture_events()` tees chosen events into a list for tests and the demo, leaving the output as it was.
- The library never configures structlog on import; the CLI calls `configure()`. An embedding application keeps
  its own configuration.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any, Iterator, TextIO

import structlog

__all__ = ["DecisionLog", "capture_events", "configure", "decision", "get_logger"]


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def decision(
    log: Any,
    *,
    supervisor: str,
    child: str,
    decision: str,
    reason: str,
    attempt: int = 0,
    delay_s: float = 0.0,
    **extra: Any,
) -> None:
    """Emit one supervisor decision event (at warning level: a decision follows a failure)."""
    log.warning(
        "supervisor.decision",
        supervisor=supervisor,
        child=child,
        decision=decision,
        reason=reason,
        attempt=attempt,
        delay_s=delay_s,
        **extra,
    )


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Human-readable key=value lines on `stream` (default stderr), filtered at `level`."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


class DecisionLog:
    """Supervisor decisions (and any other named events) seen while a `capture_events()` block runs."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if event_dict.get("event") in self.names:
            with self._lock:
                self.events.append(dict(event_dict))
        return event_dict

    def of(self, name: str = "supervisor.decision", **match: Any) -> list[dict[str, Any]]:
        """Events named `name` whose keys equal every `match` item, in emission order."""
        with self._lock:
            return [e for e in self.events if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


@contextlib.contextmanager
def capture_events(*names: str) -> Iterator[DecisionLog]:
    """Tee events named `names` (default: supervisor decisions) into a `DecisionLog`; output is unchanged."""
    recorder = DecisionLog(frozenset(names or ("supervisor.decision",)))
    config = structlog.get_config()
    previous = list(config["processors"])
    structlog.configure(processors=[recorder, *previous])
    try:
        yield recorder
    finally:
        structlog.configure(processors=previous)
