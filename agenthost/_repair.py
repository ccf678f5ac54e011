"""Repair one worker's runtime state, as the operator asks (`AgentHost.repair_worker`, `workers.repair`).

Contract: `repairer(root, runtime, wall)` returns the function the pool runs while the worker is down: it moves
the worker's own runtime state aside (storage.quarantine: never deleted) and writes a JSON report to
`system/reports/<stamp>-repair-worker-<id>.json` (mode 0600); it returns one line saying what it did and where the
report is. For codex that state is the worker's CODEX_HOME (`system/codex-home/worker-<id>/`; the threads it ran
are resumed or recreated on their next turn, the transcripts keep their history). The built-in runtime keeps one
state folder for every worker (`system/runtime-state/`), so nothing of one worker's own can be moved: the report
says so and the worker is simply restarted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from agenthost.storage import StorageRoot, atomic_write, private_mkdir, quarantine

__all__ = ["repairer"]


class RepairReport(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: int
    runtime: str
    at: float
    moved: tuple[str, ...]
    into: str
    note: str


def repairer(root: StorageRoot, runtime: str, wall: Callable[[], float] = time.time) -> Callable[[int], str]:
    def repair(worker_id: int) -> str:
        now = wall()
        if runtime == "codex":
            home = root.system_dir / "codex-home" / f"worker-{worker_id}"
            moved = quarantine(root, [home], f"repair of worker {worker_id}", now)
            note = "its CODEX_HOME was moved aside; its threads are resumed or recreated on their next turn"
            report = RepairReport(
                worker_id=worker_id, runtime=runtime, at=now, moved=moved.moved, into=moved.into, note=note
            )
        else:
            note = (
                "the built-in runtime keeps one state folder for every worker (system/runtime-state/): nothing "
                "of this worker's own to move; it was restarted"
            )
            report = RepairReport(worker_id=worker_id, runtime=runtime, at=now, moved=(), into="", note=note)
        folder = root.system_dir / "reports"
        private_mkdir(folder)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        path = folder / f"{stamp}-repair-worker-{worker_id}.json"
        atomic_write(path, msgspec.json.encode(report))
        path.chmod(0o600)
        moved_text = f"moved {list(report.moved)} to {report.into}" if report.moved else "moved nothing"
        return f"worker {worker_id}: {moved_text}; {note} (report: {path})"

    return repair
