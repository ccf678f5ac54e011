"""Operator operations of `AgentHost` (a mixin): the seed app's follow-up queue, and replacing, repairing or
fault-loading a worker.

Contract: each is one ask to the child that owns it (see agenthost._api for what a failed ask raises); a change to
a queue is then told to the turn coordinator, which dispatches what became runnable. Follow-ups: `move` (0-based
position, clamped), `edit` and `cancel` work on queued ones only, `retry` queues a failed one again (it runs as a
new turn), `set_dispatch_mode` "auto" runs them one after the other, "manual" waits for `send_next`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agenthost._config import HostConfig
from agenthost._repair import repairer
from agenthost.actors._runtimes import faults_file_path
from agenthost.protocol._faults import RuntimeFaults, encode_faults
from agenthost.protocol._messages import (
    CancelFollowUp,
    EditFollowUp,
    FollowUpsChanged,
    HostStatus,
    ListFollowUps,
    MoveFollowUp,
    QueueDepths,
    RestartWorker,
    RetryFollowUp,
    SetDispatchMode,
    WorkerRestarted,
)
from agenthost.storage import (
    DispatchMode,
    FollowUpRow,
    StorageRoot,
    ThreadRow,
    atomic_write,
    private_mkdir,
    validate_id,
)

__all__ = ["Operations"]


class Operations:
    """Needs `_ask(child, message)`, `status()`, `root`, `config`, `_wall` and `_faults` from its host."""

    root: StorageRoot
    config: HostConfig
    _wall: Callable[[], float]
    _faults: dict[int, RuntimeFaults]

    def _ask(self, name: str, message: Any) -> Any:
        raise NotImplementedError

    def status(self) -> HostStatus:
        raise NotImplementedError

    def queue_depths(self) -> dict[str, int]:
        """The number of queued follow-ups of each thread that has any."""
        depths: dict[str, int] = self._ask("persistence", QueueDepths())
        return depths

    def move_followup(self, followup_id: str, position: int) -> list[FollowUpRow]:
        """Move a waiting follow-up to `position` (0-based, clamped) in its thread's queue; returns the queue."""
        queue: list[FollowUpRow] = self._ask("persistence", MoveFollowUp(followup_id=followup_id, position=position))
        if queue:
            self._ask("turns", FollowUpsChanged(thread_id=queue[0].thread_id))
        return queue

    def edit_followup(self, followup_id: str, text: str) -> FollowUpRow:
        row: FollowUpRow = self._ask("persistence", EditFollowUp(followup_id=followup_id, text=text))
        return row

    def cancel_followup(self, followup_id: str) -> FollowUpRow:
        """Remove a waiting follow-up from its queue for good; its caller hears it ended without running."""
        row: FollowUpRow = self._ask("persistence", CancelFollowUp(followup_id=followup_id))
        self._ask("turns", FollowUpsChanged(thread_id=row.thread_id, cancelled=(followup_id,)))
        return row

    def set_dispatch_mode(self, thread_id: str, mode: DispatchMode) -> ThreadRow:
        """ "auto": the thread's follow-ups run one after the other; "manual": each waits for `send_next`."""
        row: ThreadRow = self._ask("persistence", SetDispatchMode(thread_id=thread_id, mode=mode))
        self._ask("turns", FollowUpsChanged(thread_id=thread_id))
        return row

    def send_next(self, thread_id: str) -> None:
        """Run the thread's next queued follow-up as soon as the thread is free, even in manual mode."""
        self._ask("turns", FollowUpsChanged(thread_id=validate_id("thread id", thread_id), send_next=True))

    def restart_worker(self, worker_id: int, reason: str = "operator request") -> int:
        """Replace a worker's runtime now (it counts as no failed attempt); returns the generation to come."""
        answer: WorkerRestarted = self._ask("pool", RestartWorker(worker_id=worker_id, reason=reason))
        return answer.generation

    def repair_worker(self, worker_id: int, timeout_s: float = 60.0) -> str:
        """Move the worker's own runtime state aside (quarantined, never deleted), restart it, and return what was
        done (a JSON report is written under system/reports/). Waits until the new runtime is up."""
        repair = repairer(self.root, self.config.runtime, self._wall)
        answer: WorkerRestarted = self._ask("pool", RestartWorker(worker_id=worker_id, reason="repair", repair=repair))
        deadline = time.monotonic() + timeout_s
        while True:
            worker = next(w for w in self.status().workers if w.worker_id == worker_id)
            if worker.generation >= answer.generation and worker.state != "starting" and worker.last_repair:
                return worker.last_repair
            if time.monotonic() >= deadline:
                raise TimeoutError(f"worker {worker_id} was not back within {timeout_s:g} s after its repair")
            time.sleep(0.02)

    def followups(self, thread_id: str) -> list[FollowUpRow]:
        """The thread's follow-up queue: every message that waited for its turn, in order, with its state."""
        rows: list[FollowUpRow] = self._ask("persistence", ListFollowUps(thread_id=thread_id))
        return rows

    def retry_followup(self, followup_id: str) -> FollowUpRow:
        """Queue a failed follow-up again; it runs as a new turn when its thread is free."""
        row: FollowUpRow = self._ask("persistence", RetryFollowUp(followup_id=followup_id))
        self._ask("turns", FollowUpsChanged(thread_id=row.thread_id))
        return row

    def set_worker_faults(self, worker_id: int, faults: RuntimeFaults | None) -> None:
        """Fault knobs for the next process of `worker_id` (takes effect at its next (re)start), also written
        atomically to its live faults file (builtin runtime: the running process re-reads it); None removes both."""
        if not 1 <= worker_id <= self.config.workers:
            raise ValueError(f"worker id must be in 1..{self.config.workers}, got {worker_id!r}")
        path = faults_file_path(self.root, worker_id)
        if faults is None:
            self._faults.pop(worker_id, None)
            path.unlink(missing_ok=True)
        else:
            self._faults[worker_id] = faults
            private_mkdir(path.parent)
            atomic_write(path, encode_faults(faults).encode())
