"""Actor messages of the worker pool: a worker's lifecycle, health and probes, operator restarts, the pool's end.

Contract: a worker tells the pool `WorkerSpawned`, `WorkerReady`, `WorkerExited`, `WorkerHealth` and `ProbeReply`;
the pool tells its listeners which workers serve (`WorkerUp`, `WorkerDown`) and the host that it
failed (`PoolFailed`). The pool is asked for its `WorkerStatus`es (`GetPoolStatus`), to stop (`StopPool`) and to
replace a worker's runtime (`RestartWorker`, answered with `WorkerRestarted`). `RestartDue` and `ProbeTick` are the
pool's timer messages to itself.
"""

from __future__ import annotations

from typing import Any, Literal

from agenthost.protocol._msg_base import Msg

__all__ = [
    "GetPoolStatus",
    "PoolFailed",
    "Probe",
    "ProbeReply",
    "ProbeTick",
    "RestartDue",
    "RestartWorker",
    "StopPool",
    "WorkerDown",
    "WorkerExited",
    "WorkerHealth",
    "WorkerReady",
    "WorkerRestarted",
    "WorkerSpawned",
    "WorkerState",
    "WorkerStatus",
    "WorkerUp",
]


class WorkerReady(Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    pid: int


class WorkerExited(Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    reason: str
    returncode: int | None = None


class RestartDue(Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int


class WorkerUp(Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    ref: Any


class WorkerDown(Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    reason: str


class GetPoolStatus(Msg, frozen=True, kw_only=True):
    pass


WorkerState = Literal["starting", "ready", "degraded", "restarting", "given_up", "stopped"]


class WorkerStatus(Msg, frozen=True, kw_only=True):
    worker_id: int
    state: WorkerState
    generation: int
    pid: int | None = None
    attempt: int = 0
    restarts: int = 0
    next_restart_at: float | None = None
    last_exit: str | None = None
    last_repair: str | None = None  # what the last operator repair of its runtime state did


class WorkerHealth(Msg, frozen=True, kw_only=True):
    """Worker -> pool: calls are timing out (degraded) or answered again (not degraded); `stalled`: the runtime
    stopped reading its stdin (the pool kills it)."""

    worker_id: int
    generation: int
    degraded: bool
    consecutive_timeouts: int = 0
    reason: str = ""
    stalled: bool = False


class WorkerSpawned(Msg, frozen=True, kw_only=True):
    """Worker -> pool: the runtime process exists (not yet initialized)."""

    worker_id: int
    generation: int
    pid: int


class Probe(Msg, frozen=True, kw_only=True):
    """Pool -> worker: answer `ProbeReply` at once (a worker actor that cannot is wedged)."""

    seq: int


class ProbeReply(Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    seq: int


class ProbeTick(Msg, frozen=True, kw_only=True):
    """Timer message to the pool: probe every live worker."""


class PoolFailed(Msg, frozen=True, kw_only=True):
    reason: str
    workers_gave_up: bool = False  # True: every worker exhausted its restarts (not an intensity escalation)


class StopPool(Msg, frozen=True, kw_only=True):
    timeout_s: float


class RestartWorker(Msg, frozen=True, kw_only=True):
    """To the pool: an operator asks for a worker's runtime to be replaced now. With `repair`, the worker's own
    runtime state is moved aside (quarantined, never deleted) before the new runtime starts; the pool answers with
    what it did."""

    worker_id: int
    reason: str
    repair: Any = None  # a callable (worker_id) -> report, run while the worker is down


class WorkerRestarted(Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    repair_report: Any = None
