"""The chaos campaign: drive a workload plus a fault schedule against a host subprocess, record, then check.

Contract:
- `run_campaign(schedule, root, settings=None, *, shrink=True, progress=None, history_path=None)` runs the host in
  a SUBPROCESS (chaos._host_process: `python -m agenthost.chaos._serve CONFIG_JSON`, its stderr appended to
  `root/campaign-host.log`) so HostKill9 and StorageCrash are real SIGKILLs of the whole host process; a new host
  process is then started on the same storage root (its start settles what the dead one left: orphaned turns fail
  with a note, queued follow-ups run). `root` is created (it must be new or empty); settings default to
  `CampaignSettings()` (chaos._campaign_settings: the host's small, fast policies and timeouts). Every random
  choice is in the schedule (one seed); wall-clock timing is not replayed.
- The loop (chaos._campaign_run, over chaos._campaign_loop and the fault families of chaos._worker_faults,
  chaos._stall_faults and chaos._host_faults) runs every op, drains, checks liveness and shuts the host down
  cleanly; then the runner waits (bounded: 15 s) for the root's runtime processes to go and runs every invariant
  checker on history + storage. `history_path`: the history is written there (JSON lines).
- The result (chaos._campaign_report.CampaignResult) reports at most 20 violations, each with a reproducer: the
  schedule prefix up to its fault; with `shrink`, one of at most 8 faults and 60 ops is shrunk by replaying it (at
  most 7 replays, on roots next to `root` named `<root>-shrink-<n>`) and dropping one fault at a time while the
  violation still reproduces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from agenthost.chaos._campaign_loop import CampaignLoop
from agenthost.chaos._campaign_report import (
    CampaignResult,
    git_commit,
    reported_violations,
    reproducer,
    turns_by_status,
)
from agenthost.chaos._campaign_run import run_loop
from agenthost.chaos._campaign_settings import CampaignSettings, campaign_host_config
from agenthost.chaos._history import History
from agenthost.chaos._host_process import EventSink, SubprocessHost
from agenthost.chaos._schedule import Schedule, encode_schedule
from agenthost.chaos._violations import Violation

__all__ = ["run_campaign"]


def run_campaign(
    schedule: Schedule,
    root: str | Path,
    settings: CampaignSettings | None = None,
    *,
    shrink: bool = True,
    progress: Callable[[str], None] | None = None,
    history_path: str | Path | None = None,
) -> CampaignResult:
    """Run `schedule` against a host subprocess on `root` (created; must be new or empty) and check it."""
    from agenthost.chaos._invariants import INVARIANTS, check_all, liveness_bound_s

    settings = settings or CampaignSettings()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    history = History()
    config = msgspec.to_builtins(settings) | {
        "root": str(root),
        "workers": schedule.workers,
        "storage_faults": settings.storage_faults,
    }

    def start_host(sink: EventSink) -> SubprocessHost:
        return SubprocessHost(config, sink, root / "campaign-host.log")

    host_config = campaign_host_config(str(root), schedule.workers, settings)
    bound_s = liveness_bound_s(host_config.worker_policy, host_config.host_policy, host_config.turn_timeout_s)
    loop = CampaignLoop(schedule, settings, history, start_host, root, can_kill_host=True, liveness_bound_s=bound_s)
    loop.start_host()
    run_loop(loop, progress=progress)
    _wait_no_processes(root, 15.0)
    violations = check_all(
        history,
        root,
        worker_policy=host_config.worker_policy,
        host_policy=host_config.host_policy,
        turn_timeout_s=settings.turn_timeout_s,
    )
    if history_path is not None:
        history.write(history_path)
    reports = [_violation_report(schedule, v, root, settings, shrink) for v in reported_violations(violations)]
    return CampaignResult(
        seed=schedule.seed,
        commit=git_commit(),
        runtime=settings.runtime,
        faults_scheduled=len(schedule.events),
        faults_injected=dict(sorted(loop.injected.items())),
        faults_skipped=dict(sorted(loop.skipped.items())),
        ops=len(schedule.ops),
        turns_acknowledged=len(history.entries("send")),
        turns_by_status=turns_by_status(root),
        host_processes=loop.host_processes,
        repairs=loop.repairs,
        invariants_checked=INVARIANTS,
        violations=reports,
        violations_total=len(violations),
        duration_s=round(time.monotonic() - began, 3),
    )


def _wait_no_processes(root: Path, timeout_s: float) -> None:
    from agenthost.chaos._invariants import processes_under

    deadline = time.monotonic() + timeout_s
    while processes_under(root) and time.monotonic() < deadline:
        time.sleep(0.05)


def _violation_report(
    schedule: Schedule, violation: Violation, root: Path, settings: CampaignSettings, shrink: bool
) -> dict[str, Any]:
    small = reproducer(schedule, violation.at_fault)
    shrunk = False
    if shrink and len(small.events) <= 8 and len(small.ops) <= 60:
        small, shrunk = _shrink(small, violation.invariant, root, settings)
    return {
        "invariant": violation.invariant,
        "message": violation.message,
        "at_fault": violation.at_fault,
        "reproducer": {"seed": schedule.seed, "shrunk": shrunk, "schedule": json.loads(encode_schedule(small))},
    }


def _reproduces(schedule: Schedule, invariant: str, root: Path, settings: CampaignSettings, attempt: int) -> bool:
    replay_root = root.parent / f"{root.name}-shrink-{attempt}"
    result = run_campaign(schedule, replay_root, settings, shrink=False)
    return any(v["invariant"] == invariant for v in result.violations)


def _shrink(
    schedule: Schedule, invariant: str, root: Path, settings: CampaignSettings, budget: int = 6
) -> tuple[Schedule, bool]:
    """Greedy: drop fault events one at a time while the violation still reproduces (at most `budget` runs)."""
    runs = 0
    if not _reproduces(schedule, invariant, root, settings, runs):
        return schedule, False
    index = len(schedule.events) - 1
    while index >= 0 and runs < budget:
        runs += 1
        candidate = schedule.without(index)
        if _reproduces(candidate, invariant, root, settings, runs):
            schedule = candidate
        index -= 1
    return schedule, True
