"""Actor messages of the thread mapping and of persistence: threads, turns, action cards, follow-ups, health.

Contract: the mapping actor is asked which workers serve threads (`ResolveThreads` -> per thread its `ThreadRoute`
or the `NoHealthyWorkerError` refusing it), in the same ask after binding or forgetting threads' runtime thread ids
(its `updates`: `BindRuntimeThread`, `InvalidateRuntimeThread`, applied first, in order), and for its pins (`GetPins`);
it asks persistence to load and keep them (`LoadMappings`, `SaveMapping`). Persistence is asked the other requests
here and answers with what storage returns (rows, findings, counts) or raises; `CompleteTurn` is told instead, and
`reply_to` hears `TurnPersisted`; `TakeBack` is told too. `RetryPersistence` (a timer message) and
`FollowUpsChanged` go to the coordinator.
"""

from __future__ import annotations

from typing import Any, Literal

from agenthost.protocol._msg_base import Msg

__all__ = [
    "AddActionCard",
    "BeginTurn",
    "BeginTurns",
    "BindRuntimeThread",
    "CancelFollowUp",
    "Checkpoint",
    "CompleteTurn",
    "CreateThread",
    "EditFollowUp",
    "EnqueueFollowUp",
    "EnqueueFollowUps",
    "FinishTurn",
    "FollowUpsChanged",
    "GetPins",
    "GetThread",
    "GetTurn",
    "HealthCheck",
    "InvalidateRuntimeThread",
    "ListActionCards",
    "ListFollowUps",
    "ListPendingTurns",
    "ListThreads",
    "ListTurns",
    "LoadMappings",
    "MoveFollowUp",
    "NextFollowUpStarted",
    "QueueDepths",
    "ReadTranscript",
    "ResolveThreads",
    "RetryFollowUp",
    "RetryPersistence",
    "SaveMapping",
    "SetDispatchMode",
    "SetFollowUpState",
    "SettleFollowUp",
    "StartNextFollowUp",
    "StartNextFollowUps",
    "TakeBack",
    "TakenBegin",
    "ThreadRoute",
    "TurnBegun",
    "TurnPersisted",
    "UpdateThread",
]


class ResolveThreads(Msg, frozen=True, kw_only=True):
    """Resolve `thread_ids` (each its ThreadRoute, or NoHealthyWorkerError), after applying `updates` in order."""

    thread_ids: tuple[str, ...]
    updates: tuple[BindRuntimeThread | InvalidateRuntimeThread, ...] = ()


class ThreadRoute(Msg, frozen=True, kw_only=True):
    thread_id: str
    worker_id: int
    runtime_thread_id: str | None = None


class BindRuntimeThread(Msg, frozen=True, kw_only=True):
    thread_id: str
    worker_id: int
    runtime_thread_id: str


class InvalidateRuntimeThread(Msg, frozen=True, kw_only=True):
    thread_id: str


class GetPins(Msg, frozen=True, kw_only=True):
    pass


class CreateThread(Msg, frozen=True, kw_only=True):
    thread_id: str
    project_id: str
    title: str


class GetThread(Msg, frozen=True, kw_only=True):
    thread_id: str


class BeginTurn(Msg, frozen=True, kw_only=True):
    """Asked: `TurnBegun`."""

    turn_id: str
    thread_id: str
    user_text: str


class BeginTurns(Msg, frozen=True, kw_only=True):
    """Begin several turns in one transaction (the group commit of direct sends). Asked: one outcome per begin, in
    order: its `TurnBegun`, or the `StorageError` that refused it (a failed batch is retried one by one)."""

    begins: tuple[BeginTurn, ...]


class TurnBegun(Msg, frozen=True, kw_only=True):
    """The pending turn's row, its thread's runtime settings at the time it began (storage.ThreadSettings) and its
    thread's project ("": not said)."""

    turn: Any
    settings: Any
    project_id: str = ""


class UpdateThread(Msg, frozen=True, kw_only=True):
    """Rename a thread and/or merge its runtime settings (see storage.Database.update_thread). Asked: the row."""

    thread_id: str
    title: str | None = None
    thread_settings: dict[str, Any] | None = None
    turn_settings: dict[str, Any] | None = None


class FinishTurn(Msg, frozen=True, kw_only=True):
    turn_id: str
    status: Literal["completed", "failed", "interrupted"]
    assistant_text: str = ""
    error: str | None = None
    worker_id: int | None = None


class CompleteTurn(Msg, frozen=True, kw_only=True):
    """A completed turn, group-committed; `reply_to` hears `TurnPersisted` once it is durable (DB + transcript)."""

    turn_id: str
    assistant_text: str = ""
    worker_id: int | None = None
    reply_to: Any


class TurnPersisted(Msg, frozen=True, kw_only=True):
    """Reply to `CompleteTurn`: `row` when durable, else `error` (nothing committed for this turn)."""

    turn_id: str
    row: Any = None
    error: str | None = None


class AddActionCard(Msg, frozen=True, kw_only=True):
    thread_id: str
    turn_id: str | None = None
    kind: str
    text: str


class SaveMapping(Msg, frozen=True, kw_only=True):
    """Told (never asked): a thread's pin. Group-committed with the completions, so it is durable before any later
    write (the end of the turn that needed it included); a refusal is logged."""

    thread_id: str
    worker_id: int
    runtime_thread_id: str | None = None


class LoadMappings(Msg, frozen=True, kw_only=True):
    """Asked: every thread's pin (`agenthost.storage.MappingPin`), by thread id."""


class ListPendingTurns(Msg, frozen=True, kw_only=True):
    pass


class ListActionCards(Msg, frozen=True, kw_only=True):
    thread_id: str


class RetryPersistence(Msg, frozen=True, kw_only=True):
    """Timer message to the coordinator: try again to persist turn ends the storage refused."""


class ListFollowUps(Msg, frozen=True, kw_only=True):
    thread_id: str


class ListThreads(Msg, frozen=True, kw_only=True):
    """Asked: every thread row. `open_followups_only`: only the threads with queued or dispatched follow-ups (one
    query; what start-up reconciliation needs, whatever the number of threads)."""

    open_followups_only: bool = False


class ListTurns(Msg, frozen=True, kw_only=True):
    thread_id: str


class ReadTranscript(Msg, frozen=True, kw_only=True):
    thread_id: str


class Checkpoint(Msg, frozen=True, kw_only=True):
    mode: Literal["PASSIVE", "FULL", "RESTART", "TRUNCATE"] = "PASSIVE"  # storage.CheckpointMode


class EnqueueFollowUp(Msg, frozen=True, kw_only=True):
    followup_id: str
    thread_id: str
    text: str


class EnqueueFollowUps(Msg, frozen=True, kw_only=True):
    """Queue several follow-ups in one transaction. Asked: per item its `FollowUpRow` or the `StorageError`."""

    enqueues: tuple[EnqueueFollowUp, ...]


class StartNextFollowUp(Msg, frozen=True, kw_only=True):
    """Start the head of the thread's queue (storage.Database.start_followup): read it, dispatch it and begin its
    turn in one transaction. Its turn's id is the follow-up's own, or `retry_turn_id` when it ran before."""

    thread_id: str
    retry_turn_id: str
    include_manual: bool = False  # an explicit "send next" on a thread in manual dispatch mode


class StartNextFollowUps(Msg, frozen=True, kw_only=True):
    """Start the heads of several threads' queues in one transaction. Asked: per item its `NextFollowUpStarted` or
    the `StorageError` that refused it (nothing of it stands; a failed batch is retried one by one)."""

    starts: tuple[StartNextFollowUp, ...]


class NextFollowUpStarted(Msg, frozen=True, kw_only=True):
    """The head a `StartNextFollowUp` found (`followup`, a storage.FollowUpRow; None: nothing to start), whether
    another queued follow-up waits behind it (`more`), and its begun turn (`begun`, None only with no head)."""

    followup: Any = None
    more: bool = False
    begun: TurnBegun | None = None


class MoveFollowUp(Msg, frozen=True, kw_only=True):
    followup_id: str
    position: int


class EditFollowUp(Msg, frozen=True, kw_only=True):
    followup_id: str
    text: str


class CancelFollowUp(Msg, frozen=True, kw_only=True):
    followup_id: str


class SetDispatchMode(Msg, frozen=True, kw_only=True):
    thread_id: str
    mode: Literal["auto", "manual"]


class RetryFollowUp(Msg, frozen=True, kw_only=True):
    """Queue a failed follow-up again (persistence); it keeps its place in its thread's queue."""

    followup_id: str


class FollowUpsChanged(Msg, frozen=True, kw_only=True):
    """To the coordinator: the thread's follow-up queue changed outside it (retried, moved...): dispatch if free.
    `send_next`: run the next one even in manual mode; `cancelled`: their callers hear they will not run."""

    thread_id: str
    send_next: bool = False
    cancelled: tuple[str, ...] = ()


class SetFollowUpState(Msg, frozen=True, kw_only=True):
    followup_id: str
    state: Literal["queued", "dispatched", "done", "failed", "cancelled"]
    error: str | None = None  # why its turn failed (state "failed")


class SettleFollowUp(Msg, frozen=True, kw_only=True):
    """Told (never asked): a dispatched follow-up's final state once its turn ended. Group-committed with the
    completions; a refusal is logged and start-up reconciliation settles it from its turn's status."""

    followup_id: str
    state: Literal["done", "failed"]
    error: str | None = None


class GetTurn(Msg, frozen=True, kw_only=True):
    turn_id: str


class HealthCheck(Msg, frozen=True, kw_only=True):
    """To persistence: the storage health checks, read-only, as the running host sees them (turns in flight are
    the coordinator's, not problems)."""


class QueueDepths(Msg, frozen=True, kw_only=True):
    """To persistence: the number of queued follow-ups per thread (threads with none are left out)."""


class TakenBegin(Msg, frozen=True, kw_only=True):
    turn_id: str
    followup_id: str | None = None  # the follow-up the turn ran, queued again when the turn is taken back


class TakeBack(Msg, frozen=True, kw_only=True):
    """Told (never asked): begins and enqueues the coordinator refused to their callers (its ask passed the ask
    deadline) that the storage committed after all. In one transaction each turn still pending ends "failed" with
    `error`, its follow-up is queued again, each follow-up of `enqueued` still queued is cancelled. A refusal is
    logged; start-up reconciliation ends what is still pending."""

    begun: tuple[TakenBegin, ...] = ()
    enqueued: tuple[str, ...] = ()
    error: str
