"""Fault injection for agenthost: knobs for the reference runtime, a hard process-group kill, and storage faults.

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

__all__ = [
    "FAULTS_ENV_VAR",
    "FS_STEPS",
    "CrashVFS",
    "FailingFs",
    "FaultPlan",
    "FaultyVFS",
    "FsStep",
    "PowerCutError",
    "RuntimeFaults",
    "decode_faults",
    "encode_faults",
    "kill_process_group",
]

_LAZY_MODULES: dict[str, str] = {
    "FS_STEPS": "chaos._fsfaults",
    "FailingFs": "chaos._fsfaults",
    "FsStep": "chaos._fsfaults",
    "CrashVFS": "chaos._vfs",
    "FaultPlan": "chaos._vfs",
    "FaultyVFS": "chaos._vfs",
    "PowerCutError": "chaos._vfs",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY_MODULES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'chaos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
