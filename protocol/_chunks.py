"""Splitting a reply into streamed pieces, shared by the reference runtime and the mock model server.

Contract: `split_text(text, count)` returns min(count, len(text)) non-empty pieces of near-equal size whose
concatenation is `text` (one piece, possibly empty, for ""); count < 1 counts as 1.
"""

from __future__ import annotations

__all__ = ["split_text"]


def split_text(text: str, count: int) -> list[str]:
    pieces = max(1, min(count, len(text)))
    size, extra = divmod(len(text), pieces)
    out, start = [], 0
    for index in range(pieces):
        end = start + size + (1 if index < extra else 0)
        out.append(text[start:end])
        start = end
    return out
