"""Runtime adapters: how a pool turns (worker id, generation) into the command line of one runtime process.

Contract:
- `builtin` runs the reference runtime with the current interpreter (`python -m protocol.reference_runtime`).
  All workers of a host share one state folder, `system/runtime-state/`, so a thread pinned to another worker
  after a crash can be resumed there with its history.
- Each worker's stderr is appended to `system/logs/worker-<id>.log`.
- Fault knobs (chaos.RuntimeFaults) are passed per worker id on the command line; a worker without an entry runs
  without faults. Knobs are read again at every restart, so a test can change them between generations.
"""

from __future__ import annotations

import sys
from typing import Callable, Mapping

from actors._worker import WorkerSpec
from chaos import RuntimeFaults, encode_faults
from storage import StorageRoot

__all__ = ["builtin_spec_factory"]


def builtin_spec_factory(
    root: StorageRoot,
    *,
    faults: Mapping[int, RuntimeFaults],
    deltas_per_reply: int,
    startup_timeout_s: float,
) -> Callable[[int, int], WorkerSpec]:
    logs = root.system_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def spec(worker_id: int, generation: int) -> WorkerSpec:
        argv = [
            sys.executable, "-m", "protocol.reference_runtime",
            "--state-dir", str(root.runtime_state_dir),
            "--deltas-per-reply", str(deltas_per_reply),
        ]
        worker_faults = faults.get(worker_id)
        if worker_faults is not None:
            argv += ["--faults", encode_faults(worker_faults)]
        return WorkerSpec(
            worker_id=worker_id,
            generation=generation,
            argv=tuple(argv),
            stderr_path=str(logs / f"worker-{worker_id}.log"),
            startup_timeout_s=startup_timeout_s,
        )

    return spec
