"""Injected time for every actor: monotonic `now()` plus `call_later()` timers.

Contract:
- `now()` returns monotonic seconds (float). Restart accounting, deadlines and backoff use only this value, never
  the wall clock, so a test can drive them with `FakeClock`.
- `call_later(delay_s, callback, name="")` runs `callback()` once, no earlier than `delay_s` seconds after the call
  (a negative delay counts as 0). It returns a `Timer` whose `cancel()` is idempotent and safe from any thread.
  Callbacks must be short and must not block: the actors only use them to `tell()` a message. `name` says what the
  timer is for ("call-deadline", "restart", ...): `FakeClock.pending_due_times(name)` lets a test wait for it.
- `SystemClock` runs every callback on one daemon scheduler thread, in due-time order (ties in scheduling order).
  Its thread sleeps until the earliest timer is due and is woken only by a new timer due before every other one
  (a wake is a thread switch on the caller's path, and each turn sets timers).
  A callback that raises is logged and does not stop the scheduler.
- `FakeClock` never moves by itself: `advance(dt)` moves time forward and runs, in the calling thread, each callback
  that falls due, in due-time order, with `now()` equal to that callback's due time while it runs.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol

from agenthost.actors._log import get_logger

__all__ = ["Clock", "FakeClock", "SystemClock", "Timer"]

_log = get_logger("agenthost.clock")


class Timer:
    """A scheduled callback; `cancel()` stops it if it has not run yet."""

    __slots__ = ("callback", "cancelled", "due_at", "name")

    def __init__(self, due_at: float, callback: Callable[[], object], name: str = "") -> None:
        self.due_at = due_at
        self.callback = callback
        self.name = name
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _nothing  # what the callback holds (actor refs, messages) is freed now, not when due


def _nothing() -> None:
    return None


class Clock(Protocol):
    def now(self) -> float: ...

    def call_later(self, delay_s: float, callback: Callable[[], object], name: str = "") -> Timer: ...


_COMPACT_AT_LEAST = 1024  # timers in the heap before cancelled ones are swept out


class _TimerHeap:
    """Due-time ordered timers; ties keep scheduling order. A cancelled timer stays until it reaches the top or
    the heap doubles since its last sweep (then every cancelled one goes): memory stays within twice the live
    timers (at least `_COMPACT_AT_LEAST`) though most timers (turn deadlines) are cancelled long before due,
    at O(1) amortised cost per push."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._compact_at = _COMPACT_AT_LEAST

    def push(self, timer: Timer) -> None:
        heapq.heappush(self._heap, (timer.due_at, next(self._order), timer))
        if len(self._heap) >= self._compact_at:
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._compact_at = max(_COMPACT_AT_LEAST, 2 * len(self._heap))

    def __len__(self) -> int:
        return len(self._heap)

    def pop_due(self, now: float) -> Timer | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if self._heap and self._heap[0][0] <= now:
            return heapq.heappop(self._heap)[2]
        return None

    def due_times(self, name: str | None = None) -> list[float]:
        return sorted(
            due for due, _, timer in self._heap if not timer.cancelled and (name is None or timer.name == name)
        )

    def next_due(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None


def _run(timer: Timer) -> None:
    try:
        timer.callback()
    except Exception:  # noqa: BLE001 - a bad callback must not kill the scheduler
        _log.exception("clock.callback_failed")


class SystemClock:
    """Real monotonic time; one daemon thread fires the timers."""

    def __init__(self) -> None:
        self._timers = _TimerHeap()
        self._wakeup = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="agenthost-clock", daemon=True)
        self._thread.start()

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay_s: float, callback: Callable[[], object], name: str = "") -> Timer:
        timer = Timer(self.now() + max(0.0, delay_s), callback, name)
        with self._wakeup:
            earliest = self._timers.next_due()
            self._timers.push(timer)
            if earliest is None or timer.due_at < earliest:  # else the thread wakes in time for it anyway
                self._wakeup.notify()
        return timer

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                timer = self._timers.pop_due(self.now())
                if timer is None:
                    due = self._timers.next_due()
                    self._wakeup.wait(None if due is None else max(0.0, due - self.now()))
                    continue
            _run(timer)


class FakeClock:
    """Manual time for tests: nothing happens until `advance()`."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._timers = _TimerHeap()
        self._lock = threading.RLock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def call_later(self, delay_s: float, callback: Callable[[], object], name: str = "") -> Timer:
        with self._lock:
            timer = Timer(self._now + max(0.0, delay_s), callback, name)
            self._timers.push(timer)
            return timer

    def next_due(self) -> float | None:
        """Due time of the earliest pending timer, or None."""
        with self._lock:
            return self._timers.next_due()

    def pending_due_times(self, name: str | None = None) -> list[float]:
        """Due times of the timers not yet fired or cancelled (only those called `name`, if given), ascending: lets
        a test wait for a particular timer to exist."""
        with self._lock:
            return self._timers.due_times(name)

    def advance(self, delta_s: float) -> None:
        if delta_s < 0:
            raise ValueError(f"FakeClock.advance needs delta_s >= 0, got {delta_s!r}")
        with self._lock:
            target = self._now + delta_s
        while True:
            with self._lock:
                timer = self._timers.pop_due(target)
                if timer is None:
                    self._now = target
                    return
                self._now = max(self._now, timer.due_at)
            _run(timer)
