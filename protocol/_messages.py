"""Every message the agenthost actors exchange, as frozen msgspec Structs in tagged unions.

Contract:
- Commands are asked (`ActorRef.ask`) and answered with a reply Struct or an exception; events are told (`tell`)
  and never answered. The direction of asks is fixed to keep the actor graph deadlock-free:
  host -> turns -> mapping -> persistence and host -> pool -> workers; an actor never asks one to its left.
  Everything else is a tell.
- Fields that hold live objects (actor refs, sinks) are typed `Any` and are never serialised; every other field is
  plain data and round-trips through `msgspec.json`.
- Host-side failures of a runtime call are reported as an `RpcError` with a code in the HOST_* range below, so one
  reply type covers the runtime's own errors and the host's.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from agenthost.protocol._jsonrpc import Incoming, RpcError

__all__ = [
    "HOST_CALL_TIMEOUT",
    "HOST_UNSUPPORTED_REQUEST",
    "HOST_WORKER_EXITED",
    "AbortActiveTurns",
    "ActiveTurn",
    "AddActionCard",
    "AnswerApproval",
    "AnswerServerRequest",
    "ApprovalRequested",
    "ApprovalReset",
    "ApprovalResolved",
    "BeginFollowUpTurn",
    "BeginTurn",
    "BindRuntimeThread",
    "CallDeadline",
    "CallResult",
    "CancelFollowUp",
    "Checkpoint",
    "ChildFailed",
    "ChildStarted",
    "ChildStopped",
    "CloseIntake",
    "CompleteTurn",
    "CreateThread",
    "Delta",
    "EditFollowUp",
    "EnqueueFollowUp",
    "FinishTurn",
    "FollowUpsChanged",
    "GetChildren",
    "GetHostStatus",
    "GetPins",
    "GetPoolStatus",
    "GetThread",
    "GetTurn",
    "HealthCheck",
    "HostStatus",
    "InterruptTurn",
    "InvalidateRuntimeThread",
    "KillRuntime",
    "ListActionCards",
    "ListActiveTurns",
    "ListApprovals",
    "ListFollowUps",
    "ListPendingTurns",
    "ListThreads",
    "ListTurns",
    "LoadMappings",
    "MoveFollowUp",
    "NextFollowUp",
    "PendingApproval",
    "PoolFailed",
    "Probe",
    "ProbeReply",
    "ProbeTick",
    "QueueDepths",
    "ReadTranscript",
    "ResetWorkers",
    "ResolveThread",
    "RestartChildren",
    "RestartDue",
    "RestartWorker",
    "RetryFollowUp",
    "RetryPersistence",
    "RuntimeCall",
    "RuntimeOutput",
    "RuntimeStderr",
    "SaveMapping",
    "SendMessage",
    "SetDispatchMode",
    "SetFollowUpState",
    "ShutdownHost",
    "StdoutClosed",
    "StdoutReady",
    "StopPool",
    "StopRuntime",
    "ThreadRoute",
    "TurnAccepted",
    "TurnDeadline",
    "TurnEvent",
    "TurnFinished",
    "TurnPersisted",
    "TurnStarted",
    "WorkerDown",
    "WorkerExited",
    "WorkerHealth",
    "WorkerReady",
    "WorkerRestarted",
    "WorkerSpawned",
    "WorkerStatus",
    "WorkerUp",
]

HOST_CALL_TIMEOUT = -32010  # the runtime did not answer before the call's deadline
HOST_WORKER_EXITED = -32011  # the runtime process exited (or its pipe broke) before answering
HOST_UNSUPPORTED_REQUEST = -32012  # our answer to a server request the host does not handle


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base: frozen, keyword-only, tagged with the class name."""


# --- coordinator <-> worker ------------------------------------------------------------------------------------
class RuntimeCall(_Msg, frozen=True, kw_only=True):
    """Send one JSON-RPC request to the runtime; the worker answers `reply_to` with a `CallResult`."""

    call_id: int
    method: str
    params: Any = None
    timeout_s: float
    reply_to: Any


class CallResult(_Msg, frozen=True, kw_only=True):
    call_id: int
    worker_id: int
    result: Any = None
    error: RpcError | None = None


class AnswerServerRequest(_Msg, frozen=True, kw_only=True):
    """Reply to a server->client request; `request_id` keeps the JSON type the runtime used."""

    request_id: int | str
    result: Any = None
    error: RpcError | None = None


class RuntimeOutput(_Msg, frozen=True, kw_only=True):
    """Notifications and server requests from one runtime, in stdout order."""

    worker_id: int
    generation: int
    messages: tuple[Incoming, ...]


class RuntimeStderr(_Msg, frozen=True, kw_only=True):
    """Worker -> coordinator: an error line the runtime wrote to its stderr (ANSI codes stripped; at most one a
    second per worker), kept to explain a turn that fails."""

    worker_id: int
    generation: int
    line: str


class StopRuntime(_Msg, frozen=True, kw_only=True):
    """Close stdin, wait `timeout_s`, then SIGKILL the process group."""

    timeout_s: float


class KillRuntime(_Msg, frozen=True, kw_only=True):
    """Pool -> worker: SIGKILL the runtime's group; the exit is reported with `reason`."""

    reason: str


class CallDeadline(_Msg, frozen=True, kw_only=True):
    wire_id: int


class StdoutReady(_Msg, frozen=True, kw_only=True):
    """The reader thread has decoded lines waiting; at most one of these is in a worker's mailbox at a time."""


class StdoutClosed(_Msg, frozen=True, kw_only=True):
    remainder: bytes = b""


# --- worker / pool lifecycle -----------------------------------------------------------------------------------
class WorkerReady(_Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    pid: int


class WorkerExited(_Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    reason: str
    returncode: int | None = None


class RestartDue(_Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int


class WorkerUp(_Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    ref: Any


class WorkerDown(_Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    reason: str


class GetPoolStatus(_Msg, frozen=True, kw_only=True):
    pass


WorkerState = Literal["starting", "ready", "degraded", "restarting", "given_up", "stopped"]


class WorkerStatus(_Msg, frozen=True, kw_only=True):
    worker_id: int
    state: WorkerState
    generation: int
    pid: int | None = None
    attempt: int = 0
    restarts: int = 0
    next_restart_at: float | None = None
    last_exit: str | None = None
    last_repair: str | None = None  # what the last operator repair of its runtime state did


class WorkerHealth(_Msg, frozen=True, kw_only=True):
    """Worker -> pool: calls are timing out (degraded) or answered again (not degraded); `stalled`: the runtime
    stopped reading its stdin (the pool kills it)."""

    worker_id: int
    generation: int
    degraded: bool
    consecutive_timeouts: int = 0
    reason: str = ""
    stalled: bool = False


class WorkerSpawned(_Msg, frozen=True, kw_only=True):
    """Worker -> pool: the runtime process exists (not yet initialized)."""

    worker_id: int
    generation: int
    pid: int


class Probe(_Msg, frozen=True, kw_only=True):
    """Pool -> worker: answer `ProbeReply` at once (a worker actor that cannot is wedged)."""

    seq: int


class ProbeReply(_Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    seq: int
    outbox_bytes: int = 0  # bytes waiting for the runtime's stdin


class ProbeTick(_Msg, frozen=True, kw_only=True):
    """Timer message to the pool: probe every live worker."""


class PoolFailed(_Msg, frozen=True, kw_only=True):
    reason: str
    workers_gave_up: bool = False  # True: every worker exhausted its restarts (not an intensity escalation)


class StopPool(_Msg, frozen=True, kw_only=True):
    timeout_s: float


class ChildFailed(_Msg, frozen=True, kw_only=True):
    """A supervised child crashed; `urn` names the incarnation (its actor's urn) so a stale report is ignored."""

    child: str
    error: str
    urn: str = ""


class ChildStarted(_Msg, frozen=True, kw_only=True):
    """A supervised child finished its start-up work and serves now."""

    child: str
    urn: str = ""


class ChildStopped(_Msg, frozen=True, kw_only=True):
    """A child the host asked to stop has stopped (or its stop deadline passed: `timed_out`)."""

    child: str
    incarnation: int
    timed_out: bool = False


# --- thread mapping --------------------------------------------------------------------------------------------
class ResolveThread(_Msg, frozen=True, kw_only=True):
    thread_id: str


class ThreadRoute(_Msg, frozen=True, kw_only=True):
    thread_id: str
    worker_id: int
    runtime_thread_id: str | None = None


class BindRuntimeThread(_Msg, frozen=True, kw_only=True):
    thread_id: str
    worker_id: int
    runtime_thread_id: str


class InvalidateRuntimeThread(_Msg, frozen=True, kw_only=True):
    thread_id: str


class GetPins(_Msg, frozen=True, kw_only=True):
    pass


# --- persistence -----------------------------------------------------------------------------------------------
class CreateThread(_Msg, frozen=True, kw_only=True):
    thread_id: str
    project_id: str
    title: str


class GetThread(_Msg, frozen=True, kw_only=True):
    thread_id: str


class BeginTurn(_Msg, frozen=True, kw_only=True):
    turn_id: str
    thread_id: str
    user_text: str


class FinishTurn(_Msg, frozen=True, kw_only=True):
    turn_id: str
    status: Literal["completed", "failed", "interrupted"]
    assistant_text: str = ""
    error: str | None = None
    worker_id: int | None = None


class CompleteTurn(_Msg, frozen=True, kw_only=True):
    """A completed turn, group-committed; `reply_to` hears `TurnPersisted` once it is durable (DB + transcript)."""

    turn_id: str
    assistant_text: str = ""
    worker_id: int | None = None
    reply_to: Any


class TurnPersisted(_Msg, frozen=True, kw_only=True):
    """Reply to `CompleteTurn`: `row` when durable, else `error` (nothing committed for this turn)."""

    turn_id: str
    row: Any = None
    error: str | None = None


class BeginFollowUpTurn(_Msg, frozen=True, kw_only=True):
    """Mark a queued follow-up dispatched and begin its turn (`turn_id`, by default the follow-up's id) in one
    transaction."""

    followup_id: str
    turn_id: str | None = None


class AddActionCard(_Msg, frozen=True, kw_only=True):
    thread_id: str
    turn_id: str | None = None
    kind: str
    text: str


class SaveMapping(_Msg, frozen=True, kw_only=True):
    thread_id: str
    worker_id: int
    runtime_thread_id: str | None = None


class LoadMappings(_Msg, frozen=True, kw_only=True):
    pass


class ListPendingTurns(_Msg, frozen=True, kw_only=True):
    pass


class ListActionCards(_Msg, frozen=True, kw_only=True):
    thread_id: str


class RetryPersistence(_Msg, frozen=True, kw_only=True):
    """Timer message to the coordinator: try again to persist turn ends the storage refused."""


class ListFollowUps(_Msg, frozen=True, kw_only=True):
    thread_id: str


class ListThreads(_Msg, frozen=True, kw_only=True):
    pass


class ListTurns(_Msg, frozen=True, kw_only=True):
    thread_id: str


class ReadTranscript(_Msg, frozen=True, kw_only=True):
    thread_id: str


class Checkpoint(_Msg, frozen=True, kw_only=True):
    mode: Literal["PASSIVE", "FULL", "RESTART", "TRUNCATE"] = "PASSIVE"  # storage.CheckpointMode


class EnqueueFollowUp(_Msg, frozen=True, kw_only=True):
    followup_id: str
    thread_id: str
    text: str


class NextFollowUp(_Msg, frozen=True, kw_only=True):
    thread_id: str
    include_manual: bool = False  # an explicit "send next" on a thread in manual dispatch mode


class MoveFollowUp(_Msg, frozen=True, kw_only=True):
    followup_id: str
    position: int


class EditFollowUp(_Msg, frozen=True, kw_only=True):
    followup_id: str
    text: str


class CancelFollowUp(_Msg, frozen=True, kw_only=True):
    followup_id: str


class SetDispatchMode(_Msg, frozen=True, kw_only=True):
    thread_id: str
    mode: Literal["auto", "manual"]


class RetryFollowUp(_Msg, frozen=True, kw_only=True):
    """Queue a failed follow-up again (persistence); it keeps its place in its thread's queue."""

    followup_id: str


class FollowUpsChanged(_Msg, frozen=True, kw_only=True):
    """To the coordinator: the thread's follow-up queue changed outside it (retried, moved...): dispatch if free.
    `send_next`: run the next one even in manual mode; `cancelled`: their callers hear they will not run."""

    thread_id: str
    send_next: bool = False
    cancelled: tuple[str, ...] = ()


class SetFollowUpState(_Msg, frozen=True, kw_only=True):
    followup_id: str
    state: Literal["queued", "dispatched", "done", "failed", "cancelled"]
    error: str | None = None  # why its turn failed (state "failed")


# --- turn coordinator ------------------------------------------------------------------------------------------
class SendMessage(_Msg, frozen=True, kw_only=True):
    thread_id: str
    text: str
    sink: Any = None  # an object with put(TurnEvent); None drops events


class TurnAccepted(_Msg, frozen=True, kw_only=True):
    turn_id: str
    queued: bool


class AnswerApproval(_Msg, frozen=True, kw_only=True):
    approval_id: str
    decision: Any  # "accept" | "acceptForSession" | "decline" | "cancel" | an object decision


class InterruptTurn(_Msg, frozen=True, kw_only=True):
    turn_id: str


class TurnDeadline(_Msg, frozen=True, kw_only=True):
    turn_id: str


class ListActiveTurns(_Msg, frozen=True, kw_only=True):
    pass


class ActiveTurn(_Msg, frozen=True, kw_only=True):
    turn_id: str
    thread_id: str
    worker_id: int | None
    phase: str
    pending_approvals: tuple[str, ...] = ()


class ListApprovals(_Msg, frozen=True, kw_only=True):
    """To the coordinator: every approval waiting for an answer."""


class PendingApproval(_Msg, frozen=True, kw_only=True):
    approval_id: str
    turn_id: str
    thread_id: str
    method: str
    command: str | None = None
    reason: str | None = None


class GetTurn(_Msg, frozen=True, kw_only=True):
    turn_id: str


class HealthCheck(_Msg, frozen=True, kw_only=True):
    """To persistence: the storage health checks, read-only, as the running host sees them (turns in flight are
    the coordinator's, not problems)."""


class QueueDepths(_Msg, frozen=True, kw_only=True):
    """To persistence: the number of queued follow-ups per thread (threads with none are left out)."""


class RestartWorker(_Msg, frozen=True, kw_only=True):
    """To the pool: an operator asks for a worker's runtime to be replaced now. With `repair`, the worker's own
    runtime state is moved aside (quarantined, never deleted) before the new runtime starts; the pool answers with
    what it did."""

    worker_id: int
    reason: str
    repair: Any = None  # a callable (worker_id) -> report, run while the worker is down


class WorkerRestarted(_Msg, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    repair_report: Any = None


class CloseIntake(_Msg, frozen=True, kw_only=True):
    """Refuse new messages from now on (shutdown is draining)."""


class AbortActiveTurns(_Msg, frozen=True, kw_only=True):
    """End every active turn as failed with `reason` (persisted), resetting its approvals first."""

    reason: str


# --- host ------------------------------------------------------------------------------------------------------
class GetHostStatus(_Msg, frozen=True, kw_only=True):
    pass


HostState = Literal["starting", "running", "recovering", "failed", "stopping", "stopped"]


class HostStatus(_Msg, frozen=True, kw_only=True):
    state: HostState
    cause: str | None = None
    workers: tuple[WorkerStatus, ...] = ()
    active_turns: tuple[ActiveTurn, ...] = ()
    pins: dict[str, int] = {}
    restarting: tuple[str, ...] = ()  # children stopped and waiting for their restart delay


class RestartChildren(_Msg, frozen=True, kw_only=True):
    """Timer message to the host: the restart delay of these children has passed."""

    names: tuple[str, ...]


class ResetWorkers(_Msg, frozen=True, kw_only=True):
    """To the coordinator: every worker it knows is gone (the pool stopped); reconcile them all as down."""

    reason: str


class GetChildren(_Msg, frozen=True, kw_only=True):
    """Ask the host for its children's refs by name (used by the embedding facade)."""


class ShutdownHost(_Msg, frozen=True, kw_only=True):
    """Stop every child in reverse order; `done` (a threading.Event) is set once they all stopped."""

    timeout_s: float
    done: Any


# --- events to a turn's subscriber -----------------------------------------------------------------------------
class TurnStarted(_Msg, frozen=True, kw_only=True):
    turn_id: str
    worker_id: int


class Delta(_Msg, frozen=True, kw_only=True):
    """Streamed reply text. Consecutive runtime deltas of one turn that arrive in one stdout read are coalesced
    into one event: `text` is their concatenation, `count` how many runtime deltas it holds."""

    turn_id: str
    text: str
    count: int = 1


class ApprovalRequested(_Msg, frozen=True, kw_only=True):
    turn_id: str
    approval_id: str
    method: str
    command: str | None = None
    reason: str | None = None


class ApprovalResolved(_Msg, frozen=True, kw_only=True):
    turn_id: str
    approval_id: str


class ApprovalReset(_Msg, frozen=True, kw_only=True):
    turn_id: str
    approval_id: str
    message: str


class TurnFinished(_Msg, frozen=True, kw_only=True):
    turn_id: str
    status: Literal["completed", "failed", "interrupted"]
    text: str
    error: str | None = None


TurnEvent = TurnStarted | Delta | ApprovalRequested | ApprovalResolved | ApprovalReset | TurnFinished
