"""Actor messages of the turn coordinator, and the events a turn's subscriber is given.

Contract: the coordinator is asked to send a message (`SendMessage` -> `TurnAccepted`), answer an approval,
interrupt a turn, list the active turns (`ActiveTurn`) and the pending approvals (`PendingApproval`), and abort the
active turns; `CloseIntake` is asked or told; `TurnDeadline` is its timer message to itself. A `SendMessage.sink`
is given the `TurnEvent`s of its turn.
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
    "PendingApproval",
    "SendMessage",
    "TurnAccepted",
    "TurnDeadline",
    "TurnEvent",
    "TurnFinished",
    "TurnStarted",
]


class SendMessage(Msg, frozen=True, kw_only=True):
    thread_id: str
    text: str
    sink: Any = None  # an object with put(TurnEvent); None drops events


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


TurnEvent = TurnStarted | Delta | ApprovalRequested | ApprovalResolved | ApprovalReset | TurnFinished
