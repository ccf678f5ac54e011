"""Structured events: one logger per component, one event per supervisor decision, silent unless configured.

Contract:
- `get_logger(name)` returns an `EventLogger`; `log.info("pool.worker_up", worker=1, ...)` is one event: a name, a
  level (debug, info, warning, error) and keyword fields.
- Every event first goes to the listeners subscribed to its name (`subscribe(callback, names)`; `names=None` means
  every event), in the emitting thread, as one `Event`. Listeners must be quick; one that raises is unsubscribed
  (and the error is emitted once as "log.listener_failed" to the others), so a bad listener can never break a
  supervisor.
- Then, and only when the application configured structlog (`structlog.is_configured()`), the event is handed to
  structlog under the logger `name`, where the application's processors decide what is printed. agenthost never
  configures structlog itself: embedded, it writes nothing to stdout or stderr unless the application (or the
  `agenthost` command line, see `agenthost._logging`) configured logging, as pykka does with a NullHandler.
- Every restart/backoff/give-up decision is emitted by `decision()` as ONE "supervisor.decision" event with the keys
  supervisor, child, decision, reason, attempt, delay_s (plus optional extras), at warning level.
- Cost: with no listener and structlog unconfigured an event is two attribute reads and a function call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import structlog

from agenthost.actors._events import HostEvent, SupervisorDecision, event_name

__all__ = ["Event", "EventLogger", "Listener", "decision", "get_logger", "subscribe"]

LEVELS = ("debug", "info", "warning", "error")


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One structured event as listeners see it; `t` is `time.monotonic()` when it was emitted."""

    name: str
    level: str
    logger: str
    t: float
    fields: dict[str, Any]
    payload: Any = None  # the typed event (actors._events) when the emitter recorded one

    def as_dict(self) -> dict[str, Any]:
        """The event as structlog would render it: `{"event": name, "level": level, **fields}`."""
        return {"event": self.name, "level": self.level, **self.fields}


Listener = Callable[[Event], None]


class _Listeners:
    """The subscribed listeners: an immutable tuple replaced under a lock, read without one on every event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: tuple[tuple[frozenset[str] | None, Listener], ...] = ()

    def add(self, entry: tuple[frozenset[str] | None, Listener]) -> None:
        with self._lock:
            self.entries = (*self.entries, entry)

    def remove(self, entry: tuple[frozenset[str] | None, Listener]) -> None:
        with self._lock:
            self.entries = tuple(item for item in self.entries if item is not entry)


_listeners = _Listeners()


def subscribe(callback: Listener, names: Iterable[str | type[HostEvent]] | None = None) -> Callable[[], None]:
    """Deliver the events named `names` (names or typed event classes; None: all) to `callback`; returns the
    function that unsubscribes it."""
    wanted = None if names is None else frozenset(n if isinstance(n, str) else event_name(n) for n in names)
    entry = (wanted, callback)
    _listeners.add(entry)
    return lambda: _listeners.remove(entry)


class EventLogger:
    """A named emitter of structured events (see the module contract)."""

    __slots__ = ("_structlog", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._structlog: Any = structlog.get_logger(name)

    def _emit(self, level: str, event: str, fields: dict[str, Any], payload: Any = None) -> None:
        listeners = _listeners.entries
        if listeners:
            record: Event | None = None
            for entry in listeners:
                names, callback = entry
                if names is None or event in names:
                    if record is None:
                        record = Event(
                            name=event,
                            level=level,
                            logger=self.name,
                            t=time.monotonic(),
                            fields=fields,
                            payload=payload,
                        )
                    try:
                        callback(record)
                    except Exception as exc:  # noqa: BLE001 - a broken listener must never break the emitter
                        _listeners.remove(entry)
                        self._emit("error", "log.listener_failed", {"listener": repr(callback), "error": repr(exc)})
        if structlog.is_configured():
            getattr(self._structlog, level)(event, logger=self.name, **fields)

    def record(self, event: HostEvent, level: str = "info") -> None:
        """Emit a typed event (actors._events): listeners get it as `Event.payload`."""
        self._emit(level, event_name(type(event)), msgspec.structs.asdict(event), event)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error event with the exception being handled (rendered as a traceback by structlog, if configured)."""
        self._emit("error", event, {**fields, "exc_info": True})


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


def decision(
    log: EventLogger,
    *,
    supervisor: str,
    child: str,
    decision: str,
    reason: str,
    attempt: int = 0,
    delay_s: float = 0.0,
    generation: int | None = None,
    restarts: list[str] | None = None,
    decided_at: float | None = None,
) -> None:
    """Emit one supervisor decision event (at warning level: a decision follows a failure). `decided_at`: the
    supervisor's clock when it decided, which its delay counts from (the event is stamped later, when emitted)."""
    event = SupervisorDecision(
        supervisor=supervisor,
        child=child,
        decision=decision,
        reason=reason,
        attempt=attempt,
        delay_s=delay_s,
        generation=generation,
        restarts=restarts,
        decided_at=decided_at,
    )
    log.record(event, "warning")
