"""What an invariant checker reports: a `Violation`, and where in the schedule its evidence lies.

Contract: a `Violation` names the invariant, says what broke (ids, times) and carries `at_fault`: the index of the
last fault injected at or before the evidence (`violation(history, invariant, message, t)`), or, without a time,
the last fault injected at all; None when no fault had been injected. That index is the schedule prefix a
reproducer needs (chaos._campaign_report.reproducer).
"""

from __future__ import annotations

import msgspec

from agenthost.chaos._history import History

__all__ = ["Violation", "fault_index_at", "last_fault", "violation"]


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    invariant: str
    message: str
    at_fault: int | None = None  # index of the last fault injected before the evidence (None: before any)


def fault_index_at(history: History, t: float) -> int | None:
    """Index of the last injected fault at or before time `t`."""
    last = None
    for entry in history.entries("fault"):
        if entry.t <= t and entry.data.get("injected"):
            last = entry.data["index"]
    return last


def last_fault(history: History) -> int | None:
    faults = [e.data["index"] for e in history.entries("fault") if e.data.get("injected")]
    return faults[-1] if faults else None


def violation(history: History, invariant: str, message: str, t: float | None = None) -> Violation:
    at = fault_index_at(history, t) if t is not None else last_fault(history)
    return Violation(invariant=invariant, message=message, at_fault=at)
