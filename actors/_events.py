"""The host's typed events: what invariant checkers, the service's live views and metrics consume.

Contract: each is a frozen msgspec Struct whose tag is its event name ("supervisor.decision", ...); it is emitted
with `EventLogger.record(event, level)` and reaches listeners as `Event.payload` (and structlog as the name plus
its fields). A consumer names the class, never the string, so renaming an event or a field breaks loudly (an
import or a decode error), never silently. `decode_event(name, fields)` turns a recorded (e.g. JSON) event back
into its class; `EVENT_TYPES` lists them all.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "EVENT_TYPES",
    "ApprovalsReset",
    "ChildrenRestarting",
    "HostEvent",
    "PendingReconciled",
    "PinsMoved",
    "PoolFailedEvent",
    "SupervisorDecision",
    "TakenBack",
    "TranscriptFailed",
    "TurnDispatched",
    "TurnEnded",
    "TurnPersistFailed",
    "WorkerEofMidLine",
    "WorkerExitedEvent",
    "WorkerProtocolError",
    "WorkerRestarting",
    "WorkerSpawnedEvent",
    "WorkerUpEvent",
    "decode_event",
    "event_name",
]


class HostEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="event"):
    """Base of the typed events; the tag is the event name."""


class SupervisorDecision(HostEvent, frozen=True, kw_only=True, tag="supervisor.decision"):
    """One decision of a supervisor: restart, give_up, escalate, degrade, kill, no_restart, retry,
    quarantine_runtime_state."""

    supervisor: str
    child: str
    decision: str
    reason: str
    attempt: int = 0
    delay_s: float = 0.0
    generation: int | None = None
    restarts: list[str] | None = None  # the host's: the children a restart takes down and up again
    decided_at: float | None = None  # the pool's: its clock (monotonic s) when it decided, the delay's start


class WorkerSpawnedEvent(HostEvent, frozen=True, kw_only=True, tag="worker.spawned"):
    worker: int
    generation: int
    pid: int


class WorkerExitedEvent(HostEvent, frozen=True, kw_only=True, tag="worker.exited"):
    worker: int
    generation: int
    reason: str


class WorkerEofMidLine(HostEvent, frozen=True, kw_only=True, tag="worker.eof_mid_line"):
    worker: int
    line: str


class WorkerProtocolError(HostEvent, frozen=True, kw_only=True, tag="worker.protocol_error"):
    worker: int
    reason: str
    line: str


class WorkerUpEvent(HostEvent, frozen=True, kw_only=True, tag="pool.worker_up"):
    worker: int
    generation: int
    pid: int


class WorkerRestarting(HostEvent, frozen=True, kw_only=True, tag="pool.worker_restarting"):
    worker: int
    attempt: int


class PoolFailedEvent(HostEvent, frozen=True, kw_only=True, tag="pool.failed"):
    reason: str


class ChildrenRestarting(HostEvent, frozen=True, kw_only=True, tag="host.restarting_children"):
    children: list[str]
    attempt: int


class PinsMoved(HostEvent, frozen=True, kw_only=True, tag="mapping.pins_moved"):
    from_worker: int
    reason: str
    moves: dict[str, int]
    left_unpinned: int


class TurnDispatched(HostEvent, frozen=True, kw_only=True, tag="turns.dispatched"):
    turn: str
    thread: str
    worker: int


class TurnEnded(HostEvent, frozen=True, kw_only=True, tag="turns.finished"):
    turn: str
    thread: str
    status: str
    error: str | None = None


class ApprovalsReset(HostEvent, frozen=True, kw_only=True, tag="turns.approvals_reset"):
    turn: str
    approvals: list[str]
    reason: str


class PendingReconciled(HostEvent, frozen=True, kw_only=True, tag="turns.reconciled_pending"):
    turn: str
    thread: str


class TakenBack(HostEvent, frozen=True, kw_only=True, tag="turns.taken_back"):
    """A begin or enqueue answered past the ask deadline, after its callers heard "refused": what the storage took
    of it is taken back (`turns` end failed, a follow-up they ran is queued again; `followups` enqueued are
    cancelled)."""

    ask: str
    turns: list[str]
    followups: list[str]


class TurnPersistFailed(HostEvent, frozen=True, kw_only=True, tag="turns.persist_failed"):
    turn: str
    error: str


class TranscriptFailed(HostEvent, frozen=True, kw_only=True, tag="persistence.transcript_failed"):
    thread: str
    error: str


class StorageTimed(HostEvent, frozen=True, kw_only=True, tag="persistence.timed"):
    """How long one storage write took: "commit" (a transaction, a group commit included) or "transcript"."""

    op: str
    seconds: float


EVENT_TYPES: tuple[type[HostEvent], ...] = (
    SupervisorDecision,
    WorkerSpawnedEvent,
    WorkerExitedEvent,
    WorkerEofMidLine,
    WorkerProtocolError,
    WorkerUpEvent,
    WorkerRestarting,
    PoolFailedEvent,
    ChildrenRestarting,
    PinsMoved,
    TurnDispatched,
    TurnEnded,
    ApprovalsReset,
    PendingReconciled,
    TakenBack,
    TurnPersistFailed,
    TranscriptFailed,
    StorageTimed,
)


def event_name(cls: type[HostEvent]) -> str:
    """The name (the msgspec tag) of a typed event class."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


_BY_NAME: dict[str, type[HostEvent]] = {event_name(cls): cls for cls in EVENT_TYPES}


def decode_event(name: str, fields: dict[str, Any]) -> HostEvent:
    """The typed event `name` from its recorded fields (extra fields, e.g. a timestamp, are ignored); a missing or
    ill-typed field raises msgspec.ValidationError naming it."""
    cls = _BY_NAME.get(name)
    if cls is None:
        raise KeyError(f"no typed event is named {name!r}")
    return msgspec.convert({**fields, "event": name}, cls)
