"""Start-up reconciliation of a new turn coordinator (after a host or coordinator restart).

Contract (`reconcile(persistence, registry)`, run in the coordinator's own start-up, before it serves):
- every turn still "pending" in the database is ended as failed with RESTARTED_NOTE; approvals it left open (an
  "approval requested" card with no later answered / withdrawn / reset card) first get an "approval reset" card;
  its caller, if the host's `TurnRegistry` still has it, hears `TurnFinished(failed)`;
- follow-ups left "dispatched" are settled from their turn's status ("done" if it completed, else "failed" with
  its error);
- a caller the registry still has whose turn already ended in the database (a completion the group commit wrote
  after the previous coordinator crashed, so nobody told it) hears that end now;
- the threads with queued follow-ups are returned, in thread order, for the coordinator to dispatch once workers
  are up.
Each reconciled turn is one "turns.reconciled_pending" event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agenthost.actors._events import ApprovalsReset, PendingReconciled
from agenthost.actors._log import get_logger
from agenthost.actors._refs import ask
from agenthost.actors._turns import TurnRegistry, emit
from agenthost.protocol._messages import (
    AddActionCard,
    FinishTurn,
    GetTurn,
    ListActionCards,
    ListFollowUps,
    ListPendingTurns,
    ListThreads,
    ListTurns,
    SetFollowUpState,
    TurnFinished,
)
from agenthost.storage import RESTARTED_NOTE, TERMINAL_TURN_STATUSES, FollowUpState, UnknownTurnError

__all__ = ["reconcile"]

_log = get_logger("agenthost.turns")


def reconcile(persistence: Any, registry: TurnRegistry, timeout_s: float) -> list[str]:
    """Settle what a previous coordinator (or host process) left unfinished; return the threads with queued
    follow-ups. Each ask waits at most `timeout_s`."""

    def db(message: Any) -> Any:
        return ask(persistence, message, timeout_s)

    for row in db(ListPendingTurns()):
        _reset_orphaned_approvals(db, row.thread_id, row.turn_id)
        finish = FinishTurn(
            turn_id=row.turn_id, status="failed", assistant_text=row.assistant_text, error=RESTARTED_NOTE
        )
        db(finish)
        ended = TurnFinished(turn_id=row.turn_id, status="failed", text=row.assistant_text, error=RESTARTED_NOTE)
        emit(registry.pop(row.turn_id), ended)
        _log.record(PendingReconciled(turn=row.turn_id, thread=row.thread_id), "warning")
    _tell_ended_turns(db, registry)
    threads = db(ListThreads(open_followups_only=True))  # not every thread: start-up stays flat in their number
    return [thread.thread_id for thread in threads if _settle_followups(db, thread)]


def _tell_ended_turns(db: Callable[[Any], Any], registry: TurnRegistry) -> None:
    """Callers still registered whose turn is already over in the database hear how it ended."""
    for turn_id in registry.turn_ids():
        try:
            row = db(GetTurn(turn_id=turn_id))
        except UnknownTurnError:
            continue  # a queued follow-up: it has no turn yet
        if row.status in TERMINAL_TURN_STATUSES:
            emit(
                registry.pop(turn_id),
                TurnFinished(turn_id=turn_id, status=row.status, text=row.assistant_text, error=row.error),
            )


def _reset_orphaned_approvals(db: Callable[[Any], Any], thread_id: str, turn_id: str) -> None:
    """Approvals a dead host left open (requested, never answered/withdrawn/reset) get their reset card."""
    opened: dict[str, str] = {}
    for card in db(ListActionCards(thread_id=thread_id)):
        if card.turn_id != turn_id or not card.kind.startswith("approval "):
            continue
        approval_id = card.text.split(":", 1)[0]
        if card.kind == "approval requested":
            opened[approval_id] = card.text
        else:
            opened.pop(approval_id, None)
    for approval_id in opened:
        text = (
            f"{approval_id}: reset: agenthost restarted while this approval waited for an answer. "
            "Nothing was executed; send the message again to retry."
        )
        db(AddActionCard(thread_id=thread_id, turn_id=turn_id, kind="approval reset", text=text))
        _log.record(ApprovalsReset(turn=turn_id, approvals=[approval_id], reason="agenthost restarted"), "warning")


def _settle_followups(db: Callable[[Any], Any], thread: Any) -> bool:
    """Settle the thread's dispatched follow-ups; True if it has queued ones."""
    turns = {t.turn_id: t for t in db(ListTurns(thread_id=thread.thread_id))}
    queued = False
    for followup in db(ListFollowUps(thread_id=thread.thread_id)):
        if followup.state == "dispatched":
            turn = turns.get(followup.turn_id or followup.followup_id)
            done = turn is not None and turn.status == "completed"
            error = None if done else (turn.error if turn is not None else "its turn was never begun")
            state: FollowUpState = "done" if done else "failed"
            db(SetFollowUpState(followup_id=followup.followup_id, state=state, error=error))
        elif followup.state == "queued":
            queued = True
    return queued
