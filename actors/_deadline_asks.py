"""Asks with a deadline that never ask a slow actor twice, and hear its late answer.

Contract: `ask(ref, message)` waits at most `timeout_s` (seconds) for the answer and raises `pykka.Timeout` past
it. Once an actor let an ask pass its deadline it is not asked again until it has answered that ask: each ask would
wait the full deadline on the same slow actor (a slow disk) while the asker's mailbox waits behind it, so every ask
meanwhile raises `pykka.Timeout` at once. The late answer (the value, or the exception the actor raised) goes to
`on_late(message, answer)` exactly once, in the asker's thread: at the next ask of that actor, before that ask is
sent, or at `poll()`, which the owner calls on a timer while `waiting` is true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pykka

__all__ = ["DeadlineAsks"]


class DeadlineAsks:
    def __init__(self, timeout_s: float, on_late: Callable[[Any, Any], None]) -> None:
        self._timeout_s = timeout_s
        self._on_late = on_late
        self._late: dict[str, tuple[Any, Any]] = {}  # actor urn -> (future, message) of its ask past the deadline

    @property
    def waiting(self) -> bool:
        """An ask past its deadline has not answered yet."""
        return bool(self._late)

    def ask(self, ref: pykka.ActorRef[Any], message: Any) -> Any:
        urn = ref.actor_urn
        if urn in self._late and not self._answered(urn):
            name = type(self._late[urn][1]).__name__
            raise pykka.Timeout(f"not asked: its {name} has not answered yet (past the ask deadline)")
        future = ref.ask(message, block=False)
        try:
            return future.get(timeout=self._timeout_s)
        except pykka.Timeout:
            self._late[urn] = (future, message)
            raise

    def poll(self) -> None:
        """Hand over every late answer that has come."""
        for urn in list(self._late):
            self._answered(urn)

    def _answered(self, urn: str) -> bool:
        future, message = self._late[urn]
        try:
            answer = future.get(timeout=0)
        except pykka.Timeout:
            return False
        except Exception as exc:  # noqa: BLE001 - it answered with its own error
            answer = exc
        del self._late[urn]
        self._on_late(message, answer)
        return True
