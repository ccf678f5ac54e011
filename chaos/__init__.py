"""Fault injection for agenthost: seeded campaigns, invariant checkers, storage fault seams and a pytest plugin.

The top layer: it drives `agenthost.AgentHost` and the runtime fault knobs of the reference runtime
(`agenthost.protocol.RuntimeFaults`, re-exported here); nothing in production imports it.
Campaigns: `chaos._schedule` (fault schedules as data, one seed), `chaos._campaign` (the runner: a host subprocess,
`chaos._host_process`, driven through a JSON-lines control protocol, with `chaos._campaign_settings`; the loop is
`chaos._campaign_run` over `chaos._campaign_loop`, the fault families `chaos._worker_faults`, `chaos._stall_faults`
and `chaos._host_faults`, and `chaos._liveness` as its last phase; `chaos._campaign_report` is what it reports),
`chaos._history` (what happened), `chaos._invariants` (every checker: `chaos._storage_checks`,
`chaos._supervision_checks`, `chaos._violations`) and `chaos._plugin` (`run_schedule`, `ArmableHook` and the
`chaos_host` fixture, registered as a pytest plugin by the `pytest11` entry point). See `chaos._vfs` (SQLite VFS that
fails the Nth read/write/sync, delays syncs, and a power-cut VFS) and `chaos._fsfaults` (an `AtomicFs` that fails a
step of the transcript's atomic replace) for each contract.
"""

from agenthost.chaos._campaign import run_campaign
from agenthost.chaos._campaign_report import CampaignResult
from agenthost.chaos._campaign_settings import CampaignSettings
from agenthost.chaos._fsfaults import FS_STEPS, FailingFs, FsStep
from agenthost.chaos._history import Entry, History
from agenthost.chaos._invariants import (
    INVARIANTS,
    Violation,
    check_all,
    check_approvals,
    check_deadlines,
    check_events_recorded,
    check_final_status,
    check_leaks,
    check_liveness,
    check_restarts,
    check_storage,
    liveness_bound_s,
    read_storage,
)
from agenthost.chaos._plugin import ArmableHook, run_schedule
from agenthost.chaos._schedule import (
    FAULT_KINDS,
    ActorCrash,
    ApprovalNeverAnswered,
    CrashOnStart,
    DiskFull,
    EofMidLine,
    FaultEvent,
    HostKill9,
    RuntimeStopsReading,
    Schedule,
    SlowDisk,
    SlowStream,
    StdoutGarbage,
    StorageCrash,
    StorageIOError,
    TranscriptStepFailure,
    WorkerHang,
    WorkerKill9,
    WorkOp,
    decode_schedule,
    encode_schedule,
    generate_schedule,
)
from agenthost.chaos._vfs import CrashVFS, FaultPlan, FaultyVFS, PowerCutError
from agenthost.protocol import FAULTS_ENV_VAR, RuntimeFaults, decode_faults, encode_faults, kill_process_group

__all__ = [
    "FAULTS_ENV_VAR",
    "FAULT_KINDS",
    "FS_STEPS",
    "INVARIANTS",
    "ActorCrash",
    "ApprovalNeverAnswered",
    "ArmableHook",
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
    "RuntimeStopsReading",
    "Schedule",
    "SlowDisk",
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
    "check_events_recorded",
    "check_final_status",
    "check_leaks",
    "check_liveness",
    "check_restarts",
    "check_storage",
    "decode_faults",
    "decode_schedule",
    "encode_faults",
    "encode_schedule",
    "generate_schedule",
    "kill_process_group",
    "liveness_bound_s",
    "read_storage",
    "run_campaign",
    "run_schedule",
]
