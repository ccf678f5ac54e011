"""Fault injection for agenthost: knobs for the reference runtime, a hard process-group kill, and storage faults.

Campaigns: `chaos._schedule` (fault schedules as data, one seed), `chaos._campaign` (the runner: a host subprocess
driven through a JSON-lines control protocol), `chaos._history` (what happened), `chaos._invariants` (the checkers)
and `chaos._plugin` (`run_schedule` and the `chaos_host` fixture for a user's own suite).
See `chaos._faults` (runtime faults), `chaos._vfs` (SQLite VFS that fails the Nth read/write/sync, and a power-cut
VFS) and `chaos._fsfaults` (an `AtomicFs` that fails a step of the transcript's atomic replace) for each contract.
The storage-fault names are imported on first use, so the reference runtime (which imports `chaos._faults`) does
not pull in apsw and `storage`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chaos._faults import FAULTS_ENV_VAR, RuntimeFaults, decode_faults, encode_faults, kill_process_group

if TYPE_CHECKING:
    from chaos._fsfaults import FS_STEPS, FailingFs, FsStep
    from chaos._vfs import CrashVFS, FaultPlan, FaultyVFS, PowerCutError
    from chaos._schedule import FAULT_KINDS, ApprovalNeverAnswered, CrashOnStart, DiskFull, EofMidLine, FaultEvent, HostKill9, Schedule, SlowStream, StdoutGarbage, StorageCrash, StorageIOError, TranscriptStepFailure, WorkOp, WorkerHang, WorkerKill9, decode_schedule, encode_schedule, generate_schedule
    from chaos._history import Entry, History
    from chaos._invariants import INVARIANTS, Violation, check_all, check_approvals, check_deadlines, check_final_status, check_leaks, check_restarts, check_storage, read_storage
    from chaos._campaign import CampaignResult, CampaignSettings, run_campaign
    from chaos._plugin import run_schedule

__all__ = [
    "FAULTS_ENV_VAR",
    "FAULT_KINDS",
    "FS_STEPS",
    "INVARIANTS",
    "ApprovalNeverAnswered",
    "CampaignResult",
    "CampaignSettings",
    "CrashOnStart",
    "CrashVFS",
    "DiskFull",
    "Entry",
    "EofMidLine",
    "FailingFs",
    "FaultEvent",
    "FaultPlan",
    "FaultyVFS",
    "FsStep",
    "History",
    "HostKill9",
    "PowerCutError",
    "RuntimeFaults",
    "Schedule",
    "SlowStream",
    "StdoutGarbage",
    "StorageCrash",
    "StorageIOError",
    "TranscriptStepFailure",
    "Violation",
    "WorkOp",
    "WorkerHang",
    "WorkerKill9",
    "check_all",
    "check_approvals",
    "check_deadlines",
    "check_final_status",
    "check_leaks",
    "check_restarts",
    "check_storage",
    "decode_faults",
    "decode_schedule",
    "encode_faults",
    "encode_schedule",
    "generate_schedule",
    "kill_process_group",
    "read_storage",
    "run_campaign",
    "run_schedule",
]

_LAZY_MODULES: dict[str, str] = {
    "FS_STEPS": "chaos._fsfaults",
    "FailingFs": "chaos._fsfaults",
    "FsStep": "chaos._fsfaults",
    "CrashVFS": "chaos._vfs",
    "FaultPlan": "chaos._vfs",
    "FaultyVFS": "chaos._vfs",
    "PowerCutError": "chaos._vfs",
    "FAULT_KINDS": "chaos._schedule",
    "ApprovalNeverAnswered": "chaos._schedule",
    "CrashOnStart": "chaos._schedule",
    "DiskFull": "chaos._schedule",
    "EofMidLine": "chaos._schedule",
    "FaultEvent": "chaos._schedule",
    "HostKill9": "chaos._schedule",
    "Schedule": "chaos._schedule",
    "SlowStream": "chaos._schedule",
    "StdoutGarbage": "chaos._schedule",
    "StorageCrash": "chaos._schedule",
    "StorageIOError": "chaos._schedule",
    "TranscriptStepFailure": "chaos._schedule",
    "WorkOp": "chaos._schedule",
    "WorkerHang": "chaos._schedule",
    "WorkerKill9": "chaos._schedule",
    "decode_schedule": "chaos._schedule",
    "encode_schedule": "chaos._schedule",
    "generate_schedule": "chaos._schedule",
    "Entry": "chaos._history",
    "History": "chaos._history",
    "INVARIANTS": "chaos._invariants",
    "Violation": "chaos._invariants",
    "check_all": "chaos._invariants",
    "check_approvals": "chaos._invariants",
    "check_deadlines": "chaos._invariants",
    "check_final_status": "chaos._invariants",
    "check_leaks": "chaos._invariants",
    "check_restarts": "chaos._invariants",
    "check_storage": "chaos._invariants",
    "read_storage": "chaos._invariants",
    "CampaignResult": "chaos._campaign",
    "CampaignSettings": "chaos._campaign",
    "run_campaign": "chaos._campaign",
    "run_schedule": "chaos._plugin",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY_MODULES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'chaos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
