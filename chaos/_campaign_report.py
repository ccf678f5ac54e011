"""What a campaign reports: `CampaignResult`, the violations it lists and the reproducer of each.

Contract:
- `CampaignResult` (msgspec Struct, JSON-able with `msgspec.to_builtins`): the seed and commit, the runtime, faults
  scheduled / injected / skipped (by kind name, sorted), ops, acknowledged turns, turns by their stored status
  (sorted), host processes started, repairs (new host processes started on a root left by a killed host), the
  invariants checked, the reported violations (at most 20), how many there were in all, and the duration (s, 3
  decimals).
- `reported_violations(violations, limit=20)`: the first violation of each invariant, then the others in order;
  at most `limit`.
- `reproducer(schedule, at_fault, extra_ops=20)`: the schedule prefix up to and including fault `at_fault` (no
  fault when None) with the ops it needs (through the last kept fault's op) plus `extra_ops`, never more ops than
  the schedule has.
- `turns_by_status(root)`: how many stored turns have each status, read from the storage at `root`.
- `git_commit()`: the commit checked out where this package's source lives; None when git fails, takes over 5 s,
  or it is not a checkout.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import msgspec

from agenthost.chaos._schedule import Schedule
from agenthost.chaos._violations import Violation

__all__ = ["CampaignResult", "git_commit", "reported_violations", "reproducer", "turns_by_status"]


class CampaignResult(msgspec.Struct, kw_only=True):
    seed: int
    commit: str | None
    runtime: str
    faults_scheduled: int
    faults_injected: dict[str, int]
    faults_skipped: dict[str, int]
    ops: int
    turns_acknowledged: int
    turns_by_status: dict[str, int]
    host_processes: int
    repairs: int  # new host processes started on a root left by a killed host (they settle its orphans)
    invariants_checked: tuple[str, ...]
    violations: list[dict[str, Any]]  # at most 20: the first of each invariant, then in order
    violations_total: int
    duration_s: float


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def reported_violations(violations: list[Violation], limit: int = 20) -> list[Violation]:
    """The first violation of each invariant, then the others in order; at most `limit`."""
    first_of_each = {v.invariant: v for v in reversed(violations)}
    chosen = list(first_of_each.values()) + [v for v in violations if v not in first_of_each.values()]
    return chosen[:limit]


def reproducer(schedule: Schedule, at_fault: int | None, extra_ops: int = 20) -> Schedule:
    """The schedule prefix up to (and including) fault `at_fault`, with the ops it needs plus `extra_ops`."""
    events = schedule.events[: (at_fault + 1) if at_fault is not None else 0]
    last_op = max((e.at for e in events), default=0)
    ops = schedule.ops[: min(len(schedule.ops), last_op + 1 + extra_ops)]
    return msgspec.structs.replace(schedule, events=events, ops=ops)


def turns_by_status(root: Path) -> dict[str, int]:
    from agenthost.chaos._invariants import read_storage

    counts: dict[str, int] = {}
    for row in read_storage(root).turns.values():
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return dict(sorted(counts.items()))
