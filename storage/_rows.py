"""Row types returned by ``Database``: msgspec frozen, keyword-only Structs.

Contract: field names equal the SQL column names of their table (the database selects columns in field order).
Times are wall-clock float seconds (``time.time()``) supplied by the caller as ``now``; ``finished_at`` is None while
a turn is pending. ``TurnFinish`` is the input of ``Database.finish_turns`` (positional or keyword).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "DISPATCH_MODES",
    "FOLLOWUP_STATES",
    "TERMINAL_TURN_STATUSES",
    "TURN_STATUSES",
    "ActionCardRow",
    "DispatchMode",
    "FollowUpRow",
    "FollowUpState",
    "MappingPin",
    "MappingRow",
    "ProjectRow",
    "ThreadRow",
    "ThreadSettings",
    "TurnFinish",
    "TurnRow",
    "TurnStatus",
]

TurnStatus = Literal["pending", "completed", "failed", "interrupted"]
TerminalTurnStatus = Literal["completed", "failed", "interrupted"]
FollowUpState = Literal["queued", "dispatched", "done", "failed", "cancelled"]
DispatchMode = Literal["auto", "manual"]

TURN_STATUSES: tuple[str, ...] = ("pending", "completed", "failed", "interrupted")
TERMINAL_TURN_STATUSES: tuple[str, ...] = ("completed", "failed", "interrupted")
FOLLOWUP_STATES: tuple[str, ...] = ("queued", "dispatched", "done", "failed", "cancelled")
DISPATCH_MODES: tuple[str, ...] = ("auto", "manual")


class ProjectRow(msgspec.Struct, frozen=True, kw_only=True):
    project_id: str
    name: str
    created_at: float


class ThreadSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A thread's runtime settings, kept with it so failover and resume keep them: `thread` holds the
    thread-level parameters a runtime gets at `thread/start` and `thread/resume` (cwd, approvalPolicy, sandbox,
    model, ...), `turn` the per-turn overrides it gets at every `turn/start` (model, effort, sandboxPolicy, ...).
    Keys and values are the runtime protocol's own (JSON)."""

    thread: dict[str, Any] = {}
    turn: dict[str, Any] = {}


_settings_decoder = msgspec.json.Decoder(ThreadSettings)


class ThreadRow(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    project_id: str
    title: str
    created_at: float
    dispatch_mode: DispatchMode = "auto"
    settings: str = "{}"  # ThreadSettings as JSON (see `thread_settings`)

    def thread_settings(self) -> ThreadSettings:
        return _settings_decoder.decode(self.settings)


class MappingRow(msgspec.Struct, frozen=True, kw_only=True):
    thread_id: str
    worker_id: int
    runtime_thread_id: str | None
    updated_at: float


class MappingPin(msgspec.Struct, frozen=True, array_like=True):
    """A mapping without its time, as the mapping actor hydrates from it (`Database.load_pins`): array-like, so a
    whole table of them converts from the rows' values in C (a keyword Struct per row cost 6 x as much at start)."""

    thread_id: str
    worker_id: int
    runtime_thread_id: str | None


class TurnRow(msgspec.Struct, frozen=True, kw_only=True):
    turn_id: str
    thread_id: str
    seq: int
    user_text: str
    assistant_text: str
    status: TurnStatus
    error: str | None
    worker_id: int | None
    created_at: float
    finished_at: float | None


class ActionCardRow(msgspec.Struct, frozen=True, kw_only=True):
    card_id: int
    thread_id: str
    turn_id: str | None
    kind: str
    text: str
    created_at: float


class FollowUpRow(msgspec.Struct, frozen=True, kw_only=True):
    followup_id: str
    thread_id: str
    seq: int
    text: str
    state: FollowUpState
    created_at: float
    turn_id: str | None = None  # the turn of its last dispatch
    last_error: str | None = None  # why that turn failed (state "failed": it can be retried)


class QueueHead(msgspec.Struct, frozen=True, kw_only=True):
    """The head of a thread's queue (`followup`, None when none is queued or the thread waits in manual mode) and
    whether another queued follow-up waits behind it (`more`)."""

    followup: FollowUpRow | None = None
    more: bool = False


class FollowUpStart(msgspec.Struct, frozen=True, kw_only=True):
    """What `start_followup` did: the head of the thread's queue it found (`followup`, None: nothing to start),
    whether another queued follow-up waits behind it (`more`), and the turn it began for the head (`turn`, None only
    when `followup` is None)."""

    followup: FollowUpRow | None = None
    more: bool = False
    turn: TurnRow | None = None


class TurnFinish(msgspec.Struct, frozen=True):
    """One turn to finish in ``Database.finish_turns``."""

    turn_id: str
    status: TerminalTurnStatus
    assistant_text: str
    error: str | None
    now: float
    worker_id: int | None = None  # recorded with the finish, in the same transaction
