"""One measured run: how many things were done in how many seconds (the timed part only)."""

from __future__ import annotations

import msgspec

__all__ = ["Run", "split_evenly"]


def split_evenly(count: int, parts: int) -> list[int]:
    """`count` things over `parts`, as evenly as they go (the first ones get the remainder)."""
    return [count // parts + (1 if index < count % parts else 0) for index in range(parts)]


class Run(msgspec.Struct, frozen=True, kw_only=True):
    count: int  # deltas, completions or turns
    seconds: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds
