"""The recorded history of a chaos campaign: one JSON line per thing that happened, with its monotonic time.

Contract:
- An `Entry` is `t` (time.monotonic() seconds; CLOCK_MONOTONIC is system-wide on Linux, so entries written by the
  runner and by the host process it controls share one time line), `host` (the host incarnation, 1-based: a new
  host process after a kill is the next one), `kind` and `data` (JSON-able dict).
- Kinds: "send" (turn_id, thread_id, queued, op: the op index, or "liveness"; `fault` for the sends a fault made),
  "send_failed" (op, error), "turn" (turn_id, event: the turn event type name, status, error, approval_id), "log"
  (event: a typed event's name, plus its fields; `record()` adds one, `typed(SupervisorDecision)` etc. read them
  back typed), "fault" (index, fault: kind name, target, injected, detail), "host_start" (pid), "host_kill" (pid,
  why), "host_stop" (clean), "liveness_begin" (bound_s, threads), "liveness" (thread_id, turn_id, status, took_s,
  bound_s, error), "note" (what, plus its fields).
- `History` is thread-safe (one lock); `entries()` returns a snapshot in append order; `write(path)` writes JSON
  lines; `load(path)` reads them back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from agenthost.actors._events import HostEvent, decode_event, event_name

__all__ = ["Entry", "History"]

EventT = TypeVar("EventT", bound=HostEvent)


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    t: float
    host: int
    kind: str
    data: dict[str, Any] = {}


class History:
    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: list[Entry] = list(entries)
        self._lock = threading.Lock()
        self.host = 1  # incarnation of the host process entries are recorded against

    def add(self, kind: str, t: float | None = None, host: int | None = None, **data: Any) -> Entry:
        entry = Entry(
            t=time.monotonic() if t is None else t, host=self.host if host is None else host, kind=kind, data=data
        )
        with self._lock:
            self._entries.append(entry)
        return entry

    def entries(self, kind: str | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self._entries if kind is None or e.kind == kind]

    def record(self, event: HostEvent, t: float | None = None, host: int | None = None) -> Entry:
        """Add a typed event as a "log" entry, as the host process records it."""
        return self.add("log", t=t, host=host, event=event_name(type(event)), **msgspec.structs.asdict(event))

    def typed(self, kind: type[EventT]) -> list[tuple[Entry, EventT]]:
        """The recorded events of class `kind` (actors._events), decoded, with their entries, in order. A recorded
        event that no longer fits its class raises msgspec.ValidationError: a renamed field never goes unnoticed."""
        found = []
        for entry, event in self.typed_many(kind):
            assert isinstance(event, kind)
            found.append((entry, event))
        return found

    def typed_many(self, *kinds: type[HostEvent]) -> list[tuple[Entry, HostEvent]]:
        """The recorded events of any of `kinds`, decoded, in the order they were recorded."""
        names = {event_name(kind) for kind in kinds}
        return [
            (entry, decode_event(entry.data["event"], entry.data))
            for entry in self.entries("log")
            if entry.data.get("event") in names
        ]

    def write(self, path: str | Path) -> None:
        encoder = msgspec.json.Encoder()
        with open(path, "wb") as handle:
            for entry in self.entries():
                handle.write(encoder.encode(entry) + b"\n")

    @classmethod
    def load(cls, path: str | Path) -> History:
        decoder = msgspec.json.Decoder(Entry)
        with open(path, "rb") as handle:
            return cls(decoder.decode(line) for line in handle if line.strip())
