"""The invariant checkers run after a chaos campaign, over the recorded `History` and the storage root (read-only).

Contract:
- The checkers live in two modules, each with its own contract: chaos._storage_checks (durable acknowledged turns,
  terminal turns, torn transcripts, integrity_check, approvals reset, no leaks; `read_storage`, `processes_under`)
  and chaos._supervision_checks (restart caps and delays, turn deadlines, healthy pins, events recorded, liveness;
  `liveness_bound_s`). chaos._violations has `Violation`. This module re-exports them all.
- `INVARIANTS` names every invariant a campaign checks (the names `Violation.invariant` takes).
- `check_all(history, root, *, worker_policy, host_policy, turn_timeout_s, leaks=True)` runs every checker (the leak
  check only with `leaks`) and returns every violation: storage first, then supervision, in a fixed order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agenthost.chaos._history import History
from agenthost.chaos._storage_checks import (
    StorageView,
    check_approvals,
    check_leaks,
    check_storage,
    processes_under,
    read_storage,
)
from agenthost.chaos._supervision_checks import (
    DECISION_FAULTS,
    LIVENESS_SLACK_S,
    check_deadlines,
    check_events_recorded,
    check_final_status,
    check_liveness,
    check_restarts,
    liveness_bound_s,
)
from agenthost.chaos._violations import Violation

__all__ = [
    "DECISION_FAULTS",
    "INVARIANTS",
    "LIVENESS_SLACK_S",
    "StorageView",
    "Violation",
    "check_all",
    "check_approvals",
    "check_deadlines",
    "check_events_recorded",
    "check_final_status",
    "check_leaks",
    "check_liveness",
    "check_restarts",
    "check_storage",
    "liveness_bound_s",
    "processes_under",
    "read_storage",
]

INVARIANTS: tuple[str, ...] = (
    "acknowledged_turns_durable",
    "transcripts_not_torn",
    "integrity_check",
    "restart_caps_and_delays",
    "turn_deadlines",
    "approvals_reset",
    "pins_healthy",
    "no_leaks",
    "turns_terminal",
    "events_recorded",
    "liveness",
)


def check_all(
    history: History,
    root: str | Path,
    *,
    worker_policy: Any,
    host_policy: Any,
    turn_timeout_s: float,
    leaks: bool = True,
) -> list[Violation]:
    storage = read_storage(root)
    violations = [
        *check_storage(history, storage),
        *check_restarts(history, worker_policy, host_policy),
        *check_deadlines(history, turn_timeout_s),
        *check_approvals(history, storage),
        *check_final_status(history),
        *check_events_recorded(history),
        *check_liveness(history),
    ]
    if leaks:
        violations.extend(check_leaks(history, root))
    return violations
