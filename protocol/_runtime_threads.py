"""Threads for the reference runtime's turns, reused: starting a thread cost ~100 us of CPU per turn on a 2-vCPU VM.

Contract:
- `ReusedThreads.run(name, task)` runs `task()` on a daemon thread that runs nothing else meanwhile, named `name`
  while it runs, so a task may wait as long as it likes (an approval, a delay) without holding up any other: it
  takes a thread whose last task has ended, if one waits, else starts one. It never queues a task behind another.
- A thread whose task has ended waits up to `idle_s` (IDLE_S, 10 s) for the next one, then exits: a burst of turns
  reuses as many threads as ran at once, and an idle runtime keeps none for long.
- A task that raises ends its thread (the runtime's tasks catch their own errors); the other threads go on.
- `wait_idle(count, timeout_s)` waits until `count` threads wait for a task (what a test needs to know before it
  hands one over); False if that did not happen within `timeout_s`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

__all__ = ["IDLE_S", "ReusedThreads"]

IDLE_S = 10.0  # how long a thread whose task ended waits for the next one (seconds)

_Task = tuple[str, Callable[[], object]]


class ReusedThreads:
    def __init__(self, idle_s: float = IDLE_S) -> None:
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._given = threading.Condition(self._lock)  # a task was handed over
        self._parked = threading.Condition(self._lock)  # a thread began to wait for a task
        self._tasks: collections.deque[_Task] = collections.deque()  # handed over, not yet taken
        self._idle = 0  # threads waiting for a task

    def run(self, name: str, task: Callable[[], object]) -> None:
        with self._lock:
            if self._idle > len(self._tasks):  # a waiting thread is free to take it
                self._tasks.append((name, task))
                self._given.notify()
                return
        threading.Thread(target=self._serve, args=((name, task),), name=name, daemon=True).start()

    def wait_idle(self, count: int, timeout_s: float) -> bool:
        with self._lock:
            return self._parked.wait_for(lambda: self._idle >= count, timeout=timeout_s)

    def _serve(self, first: _Task) -> None:
        current: _Task | None = first
        while current is not None:
            name, task = current
            threading.current_thread().name = name
            task()
            current = self._next()

    def _next(self) -> _Task | None:
        with self._lock:
            self._idle += 1
            self._parked.notify_all()
            try:
                if not self._given.wait_for(lambda: self._tasks, timeout=self._idle_s):
                    return None
                return self._tasks.popleft()
            finally:
                self._idle -= 1
