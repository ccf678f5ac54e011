"""One measured run: how many things were done in how many seconds (the timed part only)."""

from __future__ import annotations

import msgspec

__all__ = ["Run"]


class Run(msgspec.Struct, frozen=True, kw_only=True):
    count: int  # deltas, completions or turns
    seconds: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds
