"""Turn journals: every event of a turn, numbered, kept so a client that lost its connection misses nothing.

Contract:
- A `TurnJournal` is the event sink of one turn (`AgentHost.submit(..., sink=journal)`): `put(event)` (called from
  the host's threads) numbers the event (seq 1, 2, ...), keeps it, and hands `(seq, event)` to every subscriber.
  Subscribers are callables that must not block (the control socket schedules the write on its event loop).
- `attach(subscriber, after_seq)` replays the kept events with a seq above `after_seq` and subscribes for the rest,
  atomically: an event is never lost nor delivered twice across the replay. It returns the replayed count.
- `Journals` keeps the journals of a service run by turn id: every unfinished one, and the `keep_finished` most
  recently finished ones (default 10,000); older finished ones are dropped (their end stays in the database).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from agenthost.protocol import TurnEvent, TurnFinished

__all__ = ["Journals", "Subscriber", "TurnJournal", "event_payload"]

Subscriber = Callable[[int, TurnEvent], None]


class TurnJournal:
    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.turn_id: str | None = None
        self._lock = threading.Lock()
        self._events: list[TurnEvent] = []
        self._subscribers: list[Subscriber] = []
        self.finished: TurnFinished | None = None
        self.on_finish: Callable[[TurnJournal], None] | None = None

    def put(self, event: TurnEvent) -> None:
        with self._lock:
            self._events.append(event)
            seq = len(self._events)
            subscribers = list(self._subscribers)
            if isinstance(event, TurnFinished):
                self.finished = event
        for subscriber in subscribers:
            subscriber(seq, event)
        if isinstance(event, TurnFinished) and self.on_finish is not None:
            self.on_finish(self)

    def attach(self, subscriber: Subscriber, after_seq: int = 0) -> int:
        with self._lock:
            replay = list(enumerate(self._events, start=1))[max(0, after_seq) :]
            for seq, event in replay:
                subscriber(seq, event)
            if self.finished is None:
                self._subscribers.append(subscriber)
            return len(replay)

    def detach(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    @property
    def last_seq(self) -> int:
        with self._lock:
            return len(self._events)


class Journals:
    def __init__(self, keep_finished: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, TurnJournal] = {}
        self._finished: collections.OrderedDict[str, TurnJournal] = collections.OrderedDict()
        self._keep = keep_finished

    def add(self, turn_id: str, journal: TurnJournal) -> None:
        journal.turn_id = turn_id
        journal.on_finish = self._finished_one  # before the check below: a turn ending meanwhile is not missed
        with self._lock:
            if journal.finished is None:
                self._open[turn_id] = journal
            else:
                self._remember(turn_id, journal)

    def get(self, turn_id: str) -> TurnJournal | None:
        with self._lock:
            return self._open.get(turn_id) or self._finished.get(turn_id)

    def open_turns(self) -> list[TurnJournal]:
        with self._lock:
            return list(self._open.values())

    def _finished_one(self, journal: TurnJournal) -> None:
        with self._lock:
            if journal.turn_id is not None and self._open.pop(journal.turn_id, None) is not None:
                self._remember(journal.turn_id, journal)

    def _remember(self, turn_id: str, journal: TurnJournal) -> None:
        self._finished[turn_id] = journal
        while len(self._finished) > self._keep:
            self._finished.popitem(last=False)


def event_payload(event: Any) -> dict[str, Any]:
    """A turn event as plain JSON data: its fields plus "type" (TurnStarted, Delta, ...; msgspec's tag)."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data
