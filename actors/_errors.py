"""The errors the actor layer raises to its callers. Each is a domain answer, not a crash: the actor that raises
one keeps running. Anything else raised in a handler is a crash (see actors._refs.SupervisedActor)."""

from __future__ import annotations

__all__ = [
    "HostClosedError",
    "HostUnavailableError",
    "InjectedFault",
    "InvalidDecisionError",
    "NoHealthyWorkerError",
    "TurnNotActiveError",
    "UnknownApprovalError",
    "UnknownMessageError",
    "UnknownWorkerError",
]


class HostUnavailableError(RuntimeError):
    """The part of the host that serves this request is down (crashed, restarting, or the host failed)."""


class HostClosedError(RuntimeError):
    """The host is shutting down and takes no new messages."""


class UnknownApprovalError(KeyError):
    """No pending approval has this id (it was answered, withdrawn or reset, or never existed)."""


class TurnNotActiveError(KeyError):
    """No running turn has this id (it finished, or never existed)."""


class InvalidDecisionError(ValueError):
    """An approval decision is not one the runtime understands."""


class NoHealthyWorkerError(RuntimeError):
    """No worker is up to take the thread."""


class UnknownWorkerError(KeyError):
    """No worker has this id."""


class UnknownMessageError(TypeError):
    """An actor got a message it has no handler for: a programming error, so the actor crashes (let it crash)."""


class InjectedFault(RuntimeError):
    """Raised by a test's or a chaos campaign's fault hook inside an actor's handler (a crash on purpose)."""
