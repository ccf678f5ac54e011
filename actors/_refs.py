"""Helpers for talking to actors that may already be dead.

Contract: `unknown_message` raises `UnknownMessageError`: an actor that gets a message it has no handler for
crashes and its supervisor decides (let it crash), instead of dropping the message silently.
`ask(ref, message, timeout_s)` is the one way actors ask each other: every ask has a deadline (default
ASK_TIMEOUT_S, 30 s) and raises `pykka.Timeout` when it passes, the receiver's own exception when it raised, or
`pykka.ActorDeadError` when the receiver is gone.
`tell_quietly` delivers a message or, when the receiver has stopped, drops it and returns False. It is used
for events whose receiver may legitimately be gone (a stopped worker, a finished shutdown); it never hides a
failure of a live receiver, because `tell` itself cannot fail for a live one.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pykka

__all__ = ["ASK_TIMEOUT_S", "SupervisedActor", "UnknownMessageError", "ask", "tell_quietly", "unknown_message"]

ASK_TIMEOUT_S = 30.0  # seconds an actor waits for another actor's reply


def ask(ref: pykka.ActorRef[Any], message: Any, timeout_s: float = ASK_TIMEOUT_S) -> Any:
    """Ask `ref` and wait at most `timeout_s` seconds for the reply (see the module contract)."""
    return ref.ask(message, block=True, timeout=timeout_s)


def tell_quietly(ref: Any, message: Any) -> bool:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


class SupervisedActor(pykka.ThreadingActor):
    """An actor that tells its supervisor `ChildFailed` when it crashes (pykka then stops it).

    Contract: `child_name` names the actor in the supervisor's decision events; `supervisor_ref` may be None for
    an actor started on its own (tests), in which case the crash is only logged by pykka. Start-up work goes in
    `on_child_start()`, not `on_start()`: pykka stops an actor whose `on_start` raises without calling
    `on_failure`, so this class routes such an error to `on_failure` itself before stopping.
    """

    child_name = "child"
    use_daemon_thread = True  # an embedding process that exits without shutdown() must not hang on our threads

    def __init__(self, *, supervisor_ref: Any = None) -> None:
        super().__init__()
        self.supervisor_ref = supervisor_ref

    def on_start(self) -> None:
        try:
            self.on_child_start()
        except Exception as exc:  # noqa: BLE001 - reported to the supervisor, which decides
            self.on_failure(type(exc), exc, exc.__traceback__)
            self.stop()

    def on_child_start(self) -> None:
        """Start-up work of the child (runs in the actor's thread)."""

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        from agenthost.protocol._messages import ChildFailed

        if self.supervisor_ref is not None:
            tell_quietly(self.supervisor_ref, ChildFailed(child=self.child_name, error=repr(exception_value)))


class UnknownMessageError(TypeError):
    """An actor got a message it has no handler for: a programming error, so the actor crashes (let it crash)."""


def unknown_message(receiver: str, message: object) -> NoReturn:
    raise UnknownMessageError(f"{receiver} got an unknown message {type(message).__name__}")
