"""One measured run: how many things were done in how many seconds (the timed part only)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import msgspec

__all__ = ["Run", "run_together", "split_evenly"]


def run_together(threads: Sequence[threading.Thread]) -> float:
    """Start every thread, wait for all of them, and return the seconds that took (perf_counter)."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def split_evenly(count: int, parts: int) -> list[int]:
    """`count` things over `parts`, as evenly as they go (the first ones get the remainder)."""
    return [count // parts + (1 if index < count % parts else 0) for index in range(parts)]


class Run(msgspec.Struct, frozen=True, kw_only=True):
    count: int  # deltas, completions or turns
    seconds: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds
