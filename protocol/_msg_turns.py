"""Actor messages of the turn coordinator, and the events a turn's subscriber is given.

Contract: the coordinator is asked to send a message (`SendMessage` -> `TurnAccepted`), steer a running turn with
more input, answer an approval, interrupt a turn, list the active turns (`ActiveTurn`) and the pending approvals
(`PendingApproval`), and abort the active turns; `CloseIntake` is asked or told; `TurnDeadline` is its timer
message to itself. A `SendMessage.sink` is given the `TurnEvent`s of its turn. A `passthrough` send also gets every
runtime notification of its turn as `RuntimeNotice`, with the runtime's thread and turn ids replaced by agenthost's
(its `Delta`s are then left out: the notices carry the deltas), and its `ApprovalRequested` carries the runtime's
request params (ids replaced the same way).
"""

from __future__ import annotations

from typing import Any, Literal

from agenthost.protocol._msg_base import Msg

__all__ = [
    "AbortActiveTurns",
    "ActiveTurn",
    "AnswerApproval",
    "ApprovalRequested",
    "ApprovalReset",
    "ApprovalResolved",
    "CloseIntake",
    "Delta",
    "InterruptTurn",
    "ListActiveTurns",
    "ListApprovals",
    "OptionsDropped",
    "PendingApproval",
    "RuntimeNotice",
    "RuntimeRequest",
    "SendMessage",
    "SteerTurn",
    "TurnAccepted",
    "TurnDeadline",
    "TurnEvent",
    "TurnFinished",
    "TurnStarted",
]


class SendMessage(Msg, frozen=True, kw_only=True):
    thread_id: str
    text: str  # what the transcript records as the user's message
    sink: Any = None  # an object with put(TurnEvent); None drops events
    turn_id: str | None = None  # the caller's id for the turn (a valid id, unused so far); None: agenthost makes one
    input: tuple[Any, ...] | None = None  # the runtime's own `turn/start` input items; None: one text item of `text`
    passthrough: bool = False  # also deliver the runtime's notifications of this turn (`RuntimeNotice`)
    reply_to: Any = None  # told: an object with set(TurnAccepted) / fail(exception); None: asked (answered at once)


class RuntimeRequest(Msg, frozen=True, kw_only=True):
    """Pass one request that belongs to no turn (`model/list`, `account/read` ...) to a runtime that is up (the
    lowest worker id); its `CallResult` (call id 0) goes to `reply_to`. Asked: the worker id, or
    NoHealthyWorkerError when no worker is up."""

    method: str
    params: Any = None
    reply_to: Any


class SteerTurn(Msg, frozen=True, kw_only=True):
    """Add input to a running turn (the runtime's `turn/steer`); held until the runtime has announced the turn.
    Asked: None, or TurnNotActiveError for a turn that is not running."""

    turn_id: str
    text: str
    input: tuple[Any, ...] | None = None


class TurnAccepted(Msg, frozen=True, kw_only=True):
    turn_id: str
    queued: bool


class AnswerApproval(Msg, frozen=True, kw_only=True):
    approval_id: str
    decision: Any  # "accept" | "acceptForSession" | "decline" | "cancel" | an object decision


class InterruptTurn(Msg, frozen=True, kw_only=True):
    turn_id: str


class TurnDeadline(Msg, frozen=True, kw_only=True):
    turn_id: str


class ListActiveTurns(Msg, frozen=True, kw_only=True):
    pass


class ActiveTurn(Msg, frozen=True, kw_only=True):
    turn_id: str
    thread_id: str
    worker_id: int | None
    phase: str
    pending_approvals: tuple[str, ...] = ()


class ListApprovals(Msg, frozen=True, kw_only=True):
    """To the coordinator: every approval waiting for an answer."""


class PendingApproval(Msg, frozen=True, kw_only=True):
    approval_id: str
    turn_id: str
    thread_id: str
    method: str
    command: str | None = None
    reason: str | None = None


class CloseIntake(Msg, frozen=True, kw_only=True):
    """Refuse new messages from now on (shutdown is draining)."""


class AbortActiveTurns(Msg, frozen=True, kw_only=True):
    """End every active turn as failed with `reason` (persisted), resetting its approvals first."""

    reason: str


class TurnStarted(Msg, frozen=True, kw_only=True):
    turn_id: str
    worker_id: int


class Delta(Msg, frozen=True, kw_only=True):
    """Streamed reply text. Consecutive runtime deltas of one turn that arrive in one stdout read are coalesced
    into one event: `text` is their concatenation, `count` how many runtime deltas it holds."""

    turn_id: str
    text: str
    count: int = 1


class ApprovalRequested(Msg, frozen=True, kw_only=True):
    turn_id: str
    approval_id: str
    method: str
    command: str | None = None
    reason: str | None = None
    params: Any = None  # passthrough turns: the runtime's request params, its ids replaced by agenthost's


class RuntimeNotice(Msg, frozen=True, kw_only=True):
    """A runtime notification of a passthrough turn, its thread and turn ids replaced by agenthost's."""

    turn_id: str
    method: str
    params: Any = None


class OptionsDropped(Msg, frozen=True, kw_only=True):
    """The runtime refused the turn's options (e.g. a model or effort it does not know): the turn was started
    again without them, and they are no longer kept with the thread."""

    turn_id: str
    options: tuple[str, ...]
    reason: str


class ApprovalResolved(Msg, frozen=True, kw_only=True):
    turn_id: str
    approval_id: str


class ApprovalReset(Msg, frozen=True, kw_only=True):
    turn_id: str
    approval_id: str
    message: str


class TurnFinished(Msg, frozen=True, kw_only=True):
    turn_id: str
    status: Literal["completed", "failed", "interrupted"]
    text: str
    error: str | None = None


TurnEvent = (
    TurnStarted
    | Delta
    | ApprovalRequested
    | ApprovalResolved
    | ApprovalReset
    | RuntimeNotice
    | OptionsDropped
    | TurnFinished
)
