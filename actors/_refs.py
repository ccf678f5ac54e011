"""Helpers for talking to actors that may already be dead.

Contract: `tell_quietly` delivers a message or, when the receiver has stopped, drops it and returns False. It is used
for events whose receiver may legitimately be gone (a stopped worker, a finished shutdown); it never hides a
failure of a live receiver, because `tell` itself cannot fail for a live one.
"""

from __future__ import annotations

from typing import Any

import pykka

__all__ = ["SupervisedActor", "tell_quietly"]


def tell_quietly(ref: Any, message: Any) -> bool:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


class SupervisedActor(pykka.ThreadingActor):
    """An actor that tells its supervisor `ChildFailed` when it crashes (pykka then stops it).

    Contract: `child_name` names the actor in the supervisor's decision events; `supervisor_ref` may be None for
    an actor started on its own (tests), in which case the crash is only logged by pykka.
    """

    child_name = "child"

    def __init__(self, *, supervisor_ref: Any = None) -> None:
        super().__init__()
        self.supervisor_ref = supervisor_ref

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        from protocol._messages import ChildFailed

        if self.supervisor_ref is not None:
            tell_quietly(self.supervisor_ref, ChildFailed(child=self.child_name, error=repr(exception_value)))
