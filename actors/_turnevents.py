"""The events the turn state machine takes and the effects it asks its shell for (see actors._turnstate).

An effect whose docstring says "-> Outcome" is answered by the shell with that event, at once, before anything
else happens; the others have no answer.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from agenthost.actors._events import HostEvent
from agenthost.actors._turnstate import Approval, Unpersisted
from agenthost.protocol._jsonrpc import Incoming, RpcError


# --- events (what happened) -----------------------------------------------------------------------------------
class _Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    pass


class Send(_Event, frozen=True, kw_only=True):
    turn_id: str
    thread_id: str
    text: str
    sink: Any
    input: tuple[Any, ...] | None = None
    passthrough: bool = False
    reply_to: Any = None  # the caller waiting for TurnAccepted (or the error)


class Begun(_Event, frozen=True, kw_only=True):
    turn_id: str
    thread_id: str
    text: str
    sink: Any
    followup_id: str | None = None
    settings: Any = None  # the thread's storage.ThreadSettings when the turn began (None: none)
    reply_to: Any = None


class Steer(_Event, frozen=True, kw_only=True):
    turn_id: str
    text: str
    input: tuple[Any, ...] | None = None


class BeginRefused(_Event, frozen=True, kw_only=True):
    """A direct send's begin the storage refused (`exception`, for its caller)."""

    turn_id: str
    thread_id: str
    error: str
    exception: Any = None
    reply_to: Any = None


class FollowUpStarted(_Event, frozen=True, kw_only=True):
    """The head of a thread's queue, begun: its follow-up and the turn it runs as (`turn_id`, with the thread's
    `settings` when it began), none (`followup_id` None), or `refused`: the storage did not start it (that is not
    "none queued"; nothing of it stands). `more`: another follow-up may wait behind it (False only when the storage
    read that none did)."""

    thread_id: str
    refused: bool = False
    followup_id: str | None = None
    turn_id: str = ""
    text: str = ""
    sink: Any = None
    more: bool = True
    settings: Any = None  # the thread's storage.ThreadSettings when the turn began (None: none)


class Resolved(_Event, frozen=True, kw_only=True):
    turn_id: str
    worker_id: int
    runtime_thread_id: str | None


class Unresolved(_Event, frozen=True, kw_only=True):
    turn_id: str
    reason: str


class CallAnswered(_Event, frozen=True, kw_only=True):
    call_id: int
    result: Any = None
    error: RpcError | None = None


class Output(_Event, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    messages: tuple[Incoming, ...]


class CardStored(_Event, frozen=True, kw_only=True):
    approval: Approval
    ok: bool


class Answered(_Event, frozen=True, kw_only=True):
    approval_id: str
    decision: Any


class Interrupt(_Event, frozen=True, kw_only=True):
    turn_id: str


class DeadlinePassed(_Event, frozen=True, kw_only=True):
    turn_id: str


class WorkerJoined(_Event, frozen=True, kw_only=True):
    worker_id: int
    generation: int


class WorkerGone(_Event, frozen=True, kw_only=True):
    worker_id: int
    generation: int
    reason: str


class WorkersReset(_Event, frozen=True, kw_only=True):
    reason: str


class WorkerHealthChanged(_Event, frozen=True, kw_only=True):
    message: Any  # the pool's WorkerHealth, forwarded to the mapping


class FinishStored(_Event, frozen=True, kw_only=True):
    record: Unpersisted
    retry: bool = False


class FinishRefused(_Event, frozen=True, kw_only=True):
    record: Unpersisted
    reason: str
    retry: bool = False


class Completed(_Event, frozen=True, kw_only=True):
    """The group commit answered a completed turn: durable (error None) or refused."""

    turn_id: str
    error: str | None = None


class RetryDue(_Event, frozen=True, kw_only=True):
    pass


class StderrLine(_Event, frozen=True, kw_only=True):
    """An error line of a runtime's stderr: kept to explain the next turn that fails on that worker."""

    worker_id: int
    generation: int
    line: str


class QueueChanged(_Event, frozen=True, kw_only=True):
    """The thread's follow-up queue changed outside the machine (a follow-up was retried, moved...); `send_next`:
    run its next one even in manual dispatch mode."""

    thread_id: str
    send_next: bool = False


class StopIntake(_Event, frozen=True, kw_only=True):
    pass


class AbortAll(_Event, frozen=True, kw_only=True):
    reason: str


Event = (
    Send
    | Begun
    | BeginRefused
    | FollowUpStarted
    | Resolved
    | Unresolved
    | CallAnswered
    | Output
    | CardStored
    | Answered
    | Steer
    | Interrupt
    | DeadlinePassed
    | WorkerJoined
    | WorkerGone
    | WorkersReset
    | WorkerHealthChanged
    | FinishStored
    | FinishRefused
    | Completed
    | RetryDue
    | QueueChanged
    | StderrLine
    | StopIntake
    | AbortAll
)


# --- effects (what the shell must do) --------------------------------------------------------------------------
class _Effect(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    pass


class Accept(_Effect, frozen=True, kw_only=True):
    """The reply to `Send` (to its `reply_to`)."""

    turn_id: str
    queued: bool
    reply_to: Any = None


class Refuse(_Effect, frozen=True, kw_only=True):
    """A send that could not begin: its caller gets `exception`."""

    reply_to: Any
    exception: Any


class Enqueue(_Effect, frozen=True, kw_only=True):
    """Persist a message in the thread's follow-up queue (a failure goes back to the caller)."""

    turn_id: str
    thread_id: str
    text: str


class Begin(_Effect, frozen=True, kw_only=True):
    """Persist a direct send's user message and pending checkpoint -> Begun | BeginRefused, maybe later (the shell
    group-commits the begins of consecutive sends). Until then its thread counts as busy and its slot as taken."""

    turn_id: str
    thread_id: str
    text: str
    sink: Any
    reply_to: Any = None


class RegisterSink(_Effect, frozen=True, kw_only=True):
    turn_id: str
    sink: Any


class ForgetSink(_Effect, frozen=True, kw_only=True):
    turn_id: str


class ArmDeadline(_Effect, frozen=True, kw_only=True):
    turn_id: str
    delay_s: float


class CancelDeadline(_Effect, frozen=True, kw_only=True):
    turn_id: str


class Resolve(_Effect, frozen=True, kw_only=True):
    """Ask the mapping for the thread's worker and runtime thread -> Resolved | Unresolved."""

    turn_id: str
    thread_id: str


class PrepareResume(_Effect, frozen=True, kw_only=True):
    runtime_thread_id: str
    worker_id: int
    turn_id: str


class CallRuntime(_Effect, frozen=True, kw_only=True):
    """Send a request to a worker's runtime; its answer comes later as CallAnswered (-> CallAnswered at once when
    the worker is not running). thread/start params get the thread's cwd from the shell."""

    call_id: int
    worker_id: int
    method: str
    params: dict[str, Any]
    thread_id: str


class MappingUpdate(_Effect, frozen=True, kw_only=True):
    """Bind (runtime_thread_id set) or invalidate (None) the thread's runtime thread (waits for the storage round,
    actors._turnround)."""

    thread_id: str
    worker_id: int
    runtime_thread_id: str | None


class ForgetOptions(_Effect, frozen=True, kw_only=True):
    """Remove per-turn settings the runtime refused from the thread's stored settings (a failure is logged)."""

    thread_id: str
    keys: tuple[str, ...]


class MappingEvent(_Effect, frozen=True, kw_only=True):
    """Forward a worker up/down/health message to the mapping (asked: done before what follows)."""

    message: Any


class AddCard(_Effect, frozen=True, kw_only=True):
    thread_id: str
    turn_id: str
    kind: str
    text: str


class StoreApprovalCard(_Effect, frozen=True, kw_only=True):
    """Record that the runtime asks for an approval -> CardStored."""

    approval: Approval
    thread_id: str
    text: str


class AnswerRuntime(_Effect, frozen=True, kw_only=True):
    worker_id: int
    request_id: int | str
    result: Any = None
    error: RpcError | None = None


class Emit(_Effect, frozen=True, kw_only=True):
    sink: Any
    event: Any


class Persist(_Effect, frozen=True, kw_only=True):
    """Write a failed or interrupted turn end at once (or any end again: `retry`) -> FinishStored | FinishRefused."""

    record: Unpersisted
    retry: bool = False


class PersistComplete(_Effect, frozen=True, kw_only=True):
    """Group-commit a completed turn; the answer comes later as Completed."""

    turn_id: str
    text: str
    worker_id: int | None


class SetFollowUp(_Effect, frozen=True, kw_only=True):
    followup_id: str
    state: Literal["done", "failed"]
    error: str | None = None


class StartFollowUp(_Effect, frozen=True, kw_only=True):
    """Read the thread's next queued follow-up, dispatch it and begin its turn, in one transaction ->
    FollowUpStarted. Until then its slot is taken (reserved) and the thread as starting."""

    thread_id: str
    include_manual: bool = False


class ArmRetry(_Effect, frozen=True, kw_only=True):
    delay_s: float


class Decide(_Effect, frozen=True, kw_only=True):
    """One "supervisor.decision" event by the coordinator."""

    child: str
    decision: str
    reason: str
    attempt: int = 0
    delay_s: float = 0.0


class Escalate(_Effect, frozen=True, kw_only=True):
    """Crash the coordinator on purpose: its supervisor's policy decides."""

    reason: str


class Log(_Effect, frozen=True, kw_only=True):
    """One structured event: a typed one (`record`) or a name with fields."""

    level: Literal["debug", "info", "warning", "error"]
    event: str = ""
    fields: dict[str, Any] = {}
    record: HostEvent | None = None


Effect = (
    Accept
    | Refuse
    | Enqueue
    | Begin
    | RegisterSink
    | ForgetSink
    | ArmDeadline
    | CancelDeadline
    | Resolve
    | PrepareResume
    | CallRuntime
    | MappingUpdate
    | ForgetOptions
    | MappingEvent
    | AddCard
    | StoreApprovalCard
    | AnswerRuntime
    | Emit
    | Persist
    | PersistComplete
    | SetFollowUp
    | StartFollowUp
    | ArmRetry
    | Decide
    | Escalate
    | Log
)
