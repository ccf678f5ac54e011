"""Helpers for the actors' tests: a `reply_to` that records what it is told (the persistence actor's callers, and
the worker's stand-in pool and coordinator), and a fault hook that holds the persistence actor on a Checkpoint
message until released, so what is told or asked meanwhile waits in its mailbox together (and is group-committed
together)."""

from __future__ import annotations

import queue
import threading
from typing import Any

from agenthost.protocol._messages import Checkpoint

__all__ = ["CheckpointGate", "Collector"]


class Collector:
    """A reply_to that records what it is told (TurnPersisted replies, self-messages): tell() is all an actor needs."""

    def __init__(self) -> None:
        self.replies: queue.Queue[Any] = queue.Queue()

    def tell(self, message: Any) -> None:
        self.replies.put(message)

    def told(self) -> list[Any]:
        """Everything told so far, in order (nothing is taken)."""
        with self.replies.mutex:
            return list(self.replies.queue)


class CheckpointGate:
    """A fault hook: holds the actor on each Checkpoint message until `release` is set (at most 20 s) and records
    the type name of every message the actor gets, in order, in `seen`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[str] = []

    def __call__(self, child: str, message: Any) -> None:
        self.seen.append(type(message).__name__)
        if isinstance(message, Checkpoint):
            self.release.wait(20.0)
