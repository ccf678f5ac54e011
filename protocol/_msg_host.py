"""Actor messages of supervision and the host: children's reports, the host's status, restarts and shutdown.

Contract: a supervised child tells its supervisor `ChildStarted` / `ChildFailed` (`urn` names the incarnation, so a
stale report is ignored), and a stop running in the background tells it `ChildStopped`. The host answers
`GetHostStatus` with `HostStatus` and `GetChildren` with its children's refs by name; `ShutdownHost` stops every
child in reverse order. `RestartChildren` is the host's timer message to itself; `ResetWorkers` is asked of the
coordinator when the pool stopped.
"""

from __future__ import annotations

from typing import Any, Literal

from agenthost.protocol._msg_base import Msg
from agenthost.protocol._msg_pool import WorkerStatus
from agenthost.protocol._msg_turns import ActiveTurn

__all__ = [
    "ChildFailed",
    "ChildStarted",
    "ChildStopped",
    "GetChildren",
    "GetHostStatus",
    "HostState",
    "HostStatus",
    "ResetWorkers",
    "RestartChildren",
    "ShutdownHost",
]


class ChildFailed(Msg, frozen=True, kw_only=True):
    """A supervised child crashed; `urn` names the incarnation (its actor's urn) so a stale report is ignored."""

    child: str
    error: str
    urn: str = ""


class ChildStarted(Msg, frozen=True, kw_only=True):
    """A supervised child finished its start-up work and serves now."""

    child: str
    urn: str = ""


class ChildStopped(Msg, frozen=True, kw_only=True):
    """A child the host asked to stop has stopped (or its stop deadline passed: `timed_out`)."""

    child: str
    incarnation: int
    timed_out: bool = False


class GetHostStatus(Msg, frozen=True, kw_only=True):
    pass


HostState = Literal["starting", "running", "recovering", "failed", "stopping", "stopped"]


class HostStatus(Msg, frozen=True, kw_only=True):
    state: HostState
    cause: str | None = None
    workers: tuple[WorkerStatus, ...] = ()
    active_turns: tuple[ActiveTurn, ...] = ()
    pins: dict[str, int] = {}  # noqa: RUF012 - a msgspec Struct copies an empty default for each instance
    restarting: tuple[str, ...] = ()  # children stopped and waiting for their restart delay


class RestartChildren(Msg, frozen=True, kw_only=True):
    """Timer message to the host: the restart delay of these children has passed."""

    names: tuple[str, ...]


class ResetWorkers(Msg, frozen=True, kw_only=True):
    """To the coordinator: every worker it knows is gone (the pool stopped); reconcile them all as down."""

    reason: str


class GetChildren(Msg, frozen=True, kw_only=True):
    """Ask the host for its children's refs by name (used by the embedding facade)."""


class ShutdownHost(Msg, frozen=True, kw_only=True):
    """Stop every child in reverse order; `done` (a threading.Event) is set once they all stopped."""

    timeout_s: float
    done: Any
