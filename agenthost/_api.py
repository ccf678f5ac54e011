"""The embedding API: `AgentHost`, a context manager around the actor system.

Contract:
- `start()` (or `with AgentHost(...)`) starts the actors and waits (real time, at most `boot_timeout_s`) until the
  host supervisor started every child, then, with `wait_ready=True`, until every worker has left "starting" (at
  most `startup_timeout_s` + 5 s). Workers that fail are handled by the pool's policy; the host still starts with
  the rest. A host that cannot start raises `HostStartError` with the cause.
- `send()` returns at once with a `TurnHandle`; by then the user message and the pending checkpoint are durable
  (or, for a busy thread or while no worker is up, the message is durable in the follow-up queue). Events stream
  through the handle; `TurnHandle.wait()` returns the `TurnFinished` event, which is emitted only after the turn's
  end is durable.
- A request goes straight to the child that serves it (found in the host's `ChildDirectory`, no retry): a child
  that is not running, crashes while handling it, or does not answer within `request_timeout_s` makes the call
  raise `HostUnavailableError` naming it and the host's state. Domain errors (`UnknownThreadError`,
  `UnknownApprovalError`, `TurnNotActiveError`, `HostClosedError`, ...) are raised as they are.
- `shutdown()` drains: no new messages, waits up to `drain_timeout_s` for open turns (without consuming their
  events: every event stays in its handle for the caller), then stops the host (turns still open end as failed
  and are persisted; runtimes get stdin closed, then their group SIGKILLed after `shutdown_timeout_s`). It is
  idempotent; `__exit__` calls it.
- Seams for tests and chaos: `clock` drives every timer, `storage_vfs` / `transcript_fs` fail storage operations,
  `fault_hook(child, message)` runs before every actor handler and may raise (a crash on purpose).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pykka

from agenthost._config import HostConfig
from agenthost._handle import TurnEvents, TurnHandle
from agenthost._repair import repairer
from agenthost.actors._children import ChildDirectory, HostParts
from agenthost.actors._clock import Clock, SystemClock
from agenthost.actors._errors import HostUnavailableError
from agenthost.actors._host import HostSupervisor, host_spec
from agenthost.actors._log import Event, subscribe
from agenthost.actors._refs import FaultHook, ask, tell_quietly
from agenthost.actors._runtimes import CodexRolloutSync, builtin_spec_factory, codex_spec_factory, faults_file_path
from agenthost.actors._turns import CoordinatorSettings, TurnRegistry
from agenthost.protocol._faults import RuntimeFaults, encode_faults
from agenthost.protocol._messages import (
    AnswerApproval,
    CancelFollowUp,
    CloseIntake,
    EditFollowUp,
    FollowUpsChanged,
    GetHostStatus,
    GetTurn,
    HealthCheck,
    HostStatus,
    InterruptTurn,
    ListApprovals,
    ListFollowUps,
    ListThreads,
    ListTurns,
    MoveFollowUp,
    PendingApproval,
    QueueDepths,
    ReadTranscript,
    RestartWorker,
    RetryFollowUp,
    SendMessage,
    SetDispatchMode,
    ShutdownHost,
    TurnAccepted,
    WorkerRestarted,
)
from agenthost.protocol._messages import CreateThread as _CreateThread
from agenthost.storage import (
    AtomicFs,
    DispatchMode,
    Finding,
    FollowUpRow,
    StorageRoot,
    ThreadRow,
    TurnRow,
    atomic_write,
    private_mkdir,
    resolve_root,
    validate_id,
)

__all__ = ["AgentHost", "HostConfig", "HostStartError", "HostUnavailableError", "TurnHandle"]

_STATUS_S = 10.0  # a status read: the host answers at any time (its children's parts are bounded by 2 s each)


class HostStartError(RuntimeError):
    """The host could not start; the message holds the cause (e.g. the storage error)."""


def _clear_live_faults(root: StorageRoot, workers: int) -> None:
    """Live fault files are test knobs of one host's life: a new host never inherits them."""
    for worker_id in range(1, workers + 1):
        faults_file_path(root, worker_id).unlink(missing_ok=True)


def _shutdown_bound_s(config: HostConfig) -> float:
    """How long the host's own stop may take at most: four children, each bounded by its shutdown timeout plus
    the host's grace; past it the caller goes on (the host's threads are daemons)."""
    return 4 * (config.shutdown_timeout_s + 25.0) + 10.0


class AgentHost:
    """A supervised pool of runtimes plus durable threads; use as a context manager."""

    def __init__(
        self,
        config: HostConfig,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        storage_vfs: str | None = None,
        transcript_fs: AtomicFs | None = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.config = config
        self.root = resolve_root(StorageRoot(config.storage_root))  # follows a finished `migrate-storage`
        self._clock = clock or SystemClock()
        self._wall = wall
        self._faults = dict(config.worker_faults)
        self._host: pykka.ActorRef[Any] | None = None
        self._children = ChildDirectory()
        self._open: dict[str, TurnHandle] = {}
        self._storage_vfs = storage_vfs
        self._transcript_fs = transcript_fs
        self._fault_hook = fault_hook

    # --- lifecycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> AgentHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self, *, wait_ready: bool = True) -> AgentHost:
        if self._host is not None:
            raise RuntimeError("AgentHost already started")
        config = self.config
        self.root.ensure()
        _clear_live_faults(self.root, config.workers)
        self._host = HostSupervisor.start(
            parts=self._parts(),
            spec=host_spec(config.host_strategy, config.host_policy, config.shutdown_timeout_s),
            directory=self._children,
            rng_seed=config.rng_seed,
        )
        status = self._wait_booted(config.boot_timeout_s)
        if status.state != "running":
            self.shutdown(drain_timeout_s=0.0)
            raise HostStartError(f"agenthost could not start on {self.root.root}: {status.cause}")
        if wait_ready:
            self.wait_workers_settled(config.startup_timeout_s + 5.0)
        return self

    def _parts(self) -> HostParts:
        config = self.config
        prepare_resume = None
        if config.runtime == "codex":
            assert config.codex_bin is not None
            prepare_resume = CodexRolloutSync(self.root).prepare_resume
            spec_factory = codex_spec_factory(
                self.root,
                codex_bin=config.codex_bin,
                config_overrides=config.codex_config,
                startup_timeout_s=config.startup_timeout_s,
            )
        else:
            spec_factory = builtin_spec_factory(
                self.root,
                faults=self._faults,
                deltas_per_reply=config.deltas_per_reply,
                startup_timeout_s=config.startup_timeout_s,
            )
        settings = CoordinatorSettings(
            request_timeout_s=config.request_timeout_s,
            turn_timeout_s=config.turn_timeout_s,
            max_active_turns=config.max_active_turns,
            ask_timeout_s=config.ask_timeout_s,
        )
        return HostParts(
            root=self.root,
            clock=self._clock,
            wall=self._wall,
            worker_count=config.workers,
            spec_factory=spec_factory,
            worker_policy=config.worker_policy,
            worker_restart=config.worker_restart,
            watch=config.worker_watch,
            settings=settings,
            checkpoint_interval_s=config.checkpoint_interval_s,
            registry=TurnRegistry(),
            storage_vfs=self._storage_vfs,
            transcript_fs=self._transcript_fs,
            prepare_resume=prepare_resume,
            fault_hook=self._fault_hook,
        )

    def _wait_booted(self, timeout_s: float) -> HostStatus:
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status()
            if status.state != "starting":
                return status
            if time.monotonic() >= deadline:
                return HostStatus(state="failed", cause=f"the host did not finish starting within {timeout_s:g} s")
            time.sleep(0.005)

    def wait_workers_settled(self, timeout_s: float) -> HostStatus:
        """Wait until no worker is "starting" (ready, restarting or given up); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status()
            if all(worker.state != "starting" for worker in status.workers):
                return status
            if time.monotonic() >= deadline:
                states = {w.worker_id: w.state for w in status.workers}
                raise TimeoutError(f"workers still starting after {timeout_s:g} s: {states}")
            time.sleep(0.01)

    def shutdown(self, drain_timeout_s: float | None = None) -> None:
        if self._host is None:
            return
        host, self._host = self._host, None
        drain = self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        turns = self._children.get("turns")
        if turns is not None:
            tell_quietly(turns, CloseIntake())
        deadline = time.monotonic() + drain
        for handle in list(self._open.values()):  # wait, never consume: the events belong to the caller
            if not handle.ended(max(0.0, deadline - time.monotonic())):
                break
        done = threading.Event()
        try:
            if tell_quietly(host, ShutdownHost(timeout_s=self.config.shutdown_timeout_s, done=done)):
                done.wait(_shutdown_bound_s(self.config))
        finally:
            host.stop()
            self._open.clear()

    # --- threads and turns ----------------------------------------------------------------------------------
    def _ask(self, name: str, message: Any) -> Any:
        """Ask the child `name` (see the module contract: no retry; HostUnavailableError when it cannot serve)."""
        if self._host is None:
            raise RuntimeError("AgentHost is not running (call start() or use it as a context manager)")
        ref = self._children.get(name)
        try:
            if ref is not None:
                return ask(ref, message, self.config.request_timeout_s)
        except pykka.ActorDeadError:
            pass
        except pykka.Timeout:
            raise HostUnavailableError(
                f"agenthost's {name} did not answer within {self.config.request_timeout_s:g} s"
            ) from None
        status = self.status()
        raise HostUnavailableError(
            f"agenthost cannot serve this now: its {name} is not running (host {status.state}"
            + (f": {status.cause})" if status.cause else ")")
        )

    def create_thread(self, title: str = "", *, project_id: str = "default", thread_id: str | None = None) -> str:
        thread_id = validate_id("thread id", thread_id) if thread_id is not None else f"th-{uuid.uuid4().hex[:12]}"
        message = _CreateThread(
            thread_id=thread_id, project_id=validate_id("project id", project_id), title=title or thread_id
        )
        self._ask("persistence", message)
        return thread_id

    def send(self, thread_id: str, text: str) -> TurnHandle:
        events = TurnEvents()
        accepted = self.submit(thread_id, text, events)
        handle = TurnHandle(accepted.turn_id, accepted.queued, events)
        self._open = {tid: h for tid, h in self._open.items() if not h.ended(0)}
        self._open[handle.turn_id] = handle
        return handle

    def submit(self, thread_id: str, text: str, sink: Any) -> TurnAccepted:
        """Send with your own event sink (an object with `put(event)`, called from the host's threads; it must not
        block): what `send` builds a TurnHandle on, and the service's control socket uses."""
        accepted: TurnAccepted = self._ask(
            "turns", SendMessage(thread_id=validate_id("thread id", thread_id), text=text, sink=sink)
        )
        return accepted

    def turn(self, turn_id: str) -> TurnRow:
        row: TurnRow = self._ask("persistence", GetTurn(turn_id=validate_id("turn id", turn_id)))
        return row

    def health(self) -> list[Finding]:
        """The storage health checks, read-only, as the running host sees them (turns in flight are no problem)."""
        findings: list[Finding] = self._ask("persistence", HealthCheck())
        return findings

    def close_intake(self) -> None:
        """Take no new messages from now on (a drain): sends raise HostClosedError."""
        self._ask("turns", CloseIntake())

    def approvals(self) -> list[PendingApproval]:
        """Every approval waiting for an answer."""
        return list(self._ask("turns", ListApprovals()))

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

    def subscribe(self, callback: Callable[[Event], None], names: Any = None) -> Callable[[], None]:
        """Deliver the host's structured events (all, or those named) to `callback`; returns the unsubscriber."""
        return subscribe(callback, names)

    def followups(self, thread_id: str) -> list[FollowUpRow]:
        """The thread's follow-up queue: every message that waited for its turn, in order, with its state."""
        rows: list[FollowUpRow] = self._ask("persistence", ListFollowUps(thread_id=thread_id))
        return rows

    def retry_followup(self, followup_id: str) -> FollowUpRow:
        """Queue a failed follow-up again; it runs as a new turn when its thread is free."""
        row: FollowUpRow = self._ask("persistence", RetryFollowUp(followup_id=followup_id))
        self._ask("turns", FollowUpsChanged(thread_id=row.thread_id))
        return row

    def answer_approval(self, approval_id: str, decision: Any) -> None:
        self._ask("turns", AnswerApproval(approval_id=approval_id, decision=decision))

    def interrupt(self, turn_id: str) -> None:
        self._ask("turns", InterruptTurn(turn_id=turn_id))

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

    # --- reads ----------------------------------------------------------------------------------------------
    def status(self) -> HostStatus:
        if self._host is None:
            raise RuntimeError("AgentHost is not running")
        try:
            status: HostStatus = ask(self._host, GetHostStatus(), _STATUS_S)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            raise HostUnavailableError(f"agenthost's host supervisor cannot answer: {exc!r}") from None
        return status

    def threads(self) -> list[ThreadRow]:
        rows: list[ThreadRow] = self._ask("persistence", ListThreads())
        return rows

    def turns(self, thread_id: str) -> list[TurnRow]:
        rows: list[TurnRow] = self._ask("persistence", ListTurns(thread_id=thread_id))
        return rows

    def transcript(self, thread_id: str) -> str:
        text: str = self._ask("persistence", ReadTranscript(thread_id=thread_id))
        return text

    def worker_pid(self, worker_id: int) -> int | None:
        for worker in self.status().workers:
            if worker.worker_id == worker_id:
                return worker.pid
        raise ValueError(f"no worker {worker_id!r}")
