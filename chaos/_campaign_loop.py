"""The state of one campaign run, runner side: the host incarnation, its events, the workload and the open faults.

Contract:
- `CampaignLoop(schedule, settings, history, start_host, root, can_kill_host, *, can_crash_actors=True,
  liveness_bound_s=30.0)`. `start_host(sink)` starts one host incarnation (a HostDriver) whose events go to `sink`;
  they are queued and only recorded into `history` by `pump` (on the runner's thread), with the incarnation that
  sent them. `root` is the storage root (None: no process of it is signalled and no fault file removed).
  `can_kill_host` False (an embedded host) skips HostKill9 and StorageCrash and keeps a failed host;
  `can_crash_actors` False skips ActorCrash. The campaign threads are "chaos-0".."chaos-{threads-1}".
- `replace_host(why, killed)` (after a kill, or for a host that reports "failed"): records "host_kill" or an
  unclean "host_stop", resumes every stopped runtime, drops the faults without asking the old host (timed undos are
  dropped too, except resuming hung runtimes), forgets what was per host (open turns, finished and ended turns,
  worker generations, bindings), removes the runtime fault files under `root` and starts the next host
  incarnation; a kill counts as a repair.
- A send the host refuses (RuntimeError, e.g. HostUnavailableError while a crashed child is restarted) is recorded
  as "send_failed" and returns None; a status read that fails is recorded as a "status_failed" note and the last
  status stands: neither stops the runner. HostGoneError always propagates.
- Approvals are answered as the op planned ("accept" when it did not say), except one per ApprovalNeverAnswered
  (an "approval_never_answered" note).
- `inject(index, event, op_index)` applies a fault through its family (chaos._worker_faults, chaos._stall_faults,
  chaos._host_faults) and records a "fault" entry: injected with its detail, or not ("skipped": the fault cannot
  apply here, e.g. no worker up). Timed undos (until op, undo) run at `expire(op_index)` once that op is reached;
  `clear_all_faults()` runs every one, clears every knob, heals the disk and resumes every stopped runtime.
- Every wait is bounded and pumps events while it waits (`pump_until`, `wait_*`, `worker_pid`).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agenthost.chaos._campaign_settings import CampaignSettings
from agenthost.chaos._history import History
from agenthost.chaos._host_faults import STORAGE_FAULTS, HostFaults
from agenthost.chaos._host_process import EventSink, HostDriver, HostGoneError
from agenthost.chaos._schedule import (
    ActorCrash,
    ApprovalNeverAnswered,
    FaultEvent,
    HostKill9,
    RuntimeStopsReading,
    Schedule,
    StorageCrash,
)
from agenthost.chaos._stall_faults import StallFaults
from agenthost.chaos._worker_faults import WorkerFaults

__all__ = ["CampaignLoop"]


class CampaignLoop:
    """State of one campaign run (runner side)."""

    host: HostDriver  # the host incarnation: set by start_host

    def __init__(
        self,
        schedule: Schedule,
        settings: CampaignSettings,
        history: History,
        start_host: Callable[[EventSink], HostDriver],
        root: Path | None,
        can_kill_host: bool,
        *,
        can_crash_actors: bool = True,
        liveness_bound_s: float = 30.0,
    ) -> None:
        self.schedule = schedule
        self.settings = settings
        self.history = history
        self._start_host = start_host
        self.root = root
        self.can_kill_host = can_kill_host
        self.can_crash_actors = can_crash_actors
        self.liveness_bound_s = liveness_bound_s
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.thread_ids = [f"chaos-{n}" for n in range(schedule.threads)]
        self.open: dict[str, float] = {}  # turn id -> time sent (this host)
        self.turn_threads: dict[str, str] = {}  # turn id -> thread id, for every acknowledged send
        self.finished: dict[str, dict[str, Any]] = {}  # turn id -> its TurnFinished event (this host)
        self.ended: dict[str, float] = {}  # turn id -> when the host ended or reconciled it (this host)
        self.generations: dict[int, int] = {}  # worker id -> generation of its process that is up (this host)
        self.turn_workers: dict[str, tuple[int, int]] = {}  # turn id -> (worker, generation) it ran on (this host)
        self.bound: dict[str, tuple[int, int]] = {}  # thread id -> (worker, generation) of its last completed turn
        self.op_index = 0  # the op being run (timed undos may postpone themselves to the next one)
        self.turn_answers: dict[str, str] = {}
        self.never_answer = 0
        self.timed: list[tuple[int, Callable[[], None]]] = []  # (until op, undo)
        self.watchers: list[Callable[[dict[str, Any]], bool]] = []  # drop when they return True
        self.injected: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.host_processes = 0
        self.repairs = 0
        self.status: dict[str, Any] = {}
        self.worker_faults = WorkerFaults(self)
        self.stall_faults = StallFaults(self)
        self.host_faults = HostFaults(self)

    # --- host lifecycle ---
    def start_host(self) -> None:
        incarnation = self.history.host

        def sink(event: dict[str, Any]) -> None:
            self.events.put((incarnation, event))

        self.host = self._start_host(sink)
        self.host_processes += 1
        self.history.add("host_start", pid=self.host.pid)
        self.note_fds()

    def replace_host(self, why: str, killed: bool) -> None:
        """After a kill (or a failed host): a new host process on the same root."""
        if killed:
            self.history.add("host_kill", pid=self.host.pid, why=why)
        else:
            self.history.add("host_stop", clean=False, why=why)
        self.worker_faults.resume_hung()
        self.worker_faults.continue_all()
        self.clear_all_faults(remote=False)
        self.pump(0.0)
        self.history.host += 1
        self.open.clear()
        self.finished.clear()
        self.ended.clear()
        self.generations.clear()
        self.turn_workers.clear()
        self.bound.clear()
        if self.root is not None:
            for path in (self.root / "system" / "faults").glob("worker-*.json"):
                path.unlink(missing_ok=True)
        self.start_host()
        self.repairs += 1 if killed else 0

    def note_fds(self) -> None:
        try:
            count = self.host.request("fd_count", timeout_s=10.0)
        except (HostGoneError, RuntimeError):
            return
        self.history.add("note", what="fd_count", count=count)

    # --- events ---
    def pump(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                incarnation, event = (
                    self.events.get(timeout=max(0.0, remaining)) if remaining > 0 else self.events.get_nowait()
                )
            except queue.Empty:
                return
            self.record(incarnation, event)

    def record(self, incarnation: int, event: dict[str, Any]) -> None:
        kind = event.pop("kind")
        t = float(event.pop("t"))
        self.history.add(kind, t=t, host=incarnation, **event)
        self.watchers = [w for w in self.watchers if not w(event)]
        if kind == "log" and incarnation == self.history.host:
            if event.get("event") == "pool.worker_up":
                self.generations[int(event.get("worker", 0))] = int(event.get("generation", 0))
            elif event.get("event") == "turns.dispatched":
                worker_id = int(event.get("worker", 0))
                self.turn_workers[str(event.get("turn"))] = (worker_id, self.generations.get(worker_id, 0))
            elif event.get("event") == "supervisor.decision" and event.get("decision") == "kill":
                self.stall_faults.match(event)
            elif event.get("event") in ("turns.finished", "turns.reconciled_pending"):
                self.ended[str(event.get("turn"))] = time.monotonic()
        if kind != "turn" or incarnation != self.history.host:
            return
        if event.get("event") == "TurnFinished":
            turn_id = str(event.get("turn_id"))
            self.open.pop(turn_id, None)
            self.finished[turn_id] = {**event, "t": t}
            if event.get("status") == "completed" and turn_id in self.turn_threads and turn_id in self.turn_workers:
                self.bound[self.turn_threads[turn_id]] = self.turn_workers[turn_id]
        elif event.get("event") == "ApprovalRequested":
            self.answer(str(event["turn_id"]), str(event["approval_id"]))

    def answer(self, turn_id: str, approval_id: str) -> None:
        if self.never_answer:
            self.never_answer -= 1
            self.history.add("note", what="approval_never_answered", approval_id=approval_id, turn_id=turn_id)
            return
        decision = self.turn_answers.get(turn_id, "accept")
        try:
            self.host.request("answer", approval_id=approval_id, decision=decision)
        except (HostGoneError, RuntimeError) as exc:
            self.history.add("note", what="answer_failed", approval_id=approval_id, error=str(exc)[:300])
            return
        self.history.add("answer", approval_id=approval_id, turn_id=turn_id, decision=decision)

    # --- workload ---
    def send(self, index: int) -> None:
        op = self.schedule.ops[index]
        turn_id = self.send_text(self.thread_ids[op.thread], op.text, op=index)
        if turn_id is not None and op.answer is not None:
            self.turn_answers[turn_id] = op.answer

    def send_text(self, thread_id: str, text: str, *, op: int | str, **extra: Any) -> str | None:
        """Send `text` on `thread_id`; the turn id, or None when the host refused it (recorded as send_failed)."""
        try:
            result = self.host.request("send", thread_id=thread_id, text=text)
        except HostGoneError:
            raise
        except RuntimeError as exc:
            self.history.add("send_failed", op=op, thread_id=thread_id, error=str(exc)[:300], **extra)
            return None
        turn_id = str(result["turn_id"])
        self.open[turn_id] = time.monotonic()
        self.turn_threads[turn_id] = thread_id
        self.history.add("send", op=op, turn_id=turn_id, thread_id=thread_id, queued=bool(result["queued"]), **extra)
        return turn_id

    def pump_until(self, done: Callable[[], bool], timeout_s: float, step_s: float) -> bool:
        """Pump events (`step_s` at a time) until `done()`; False when `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline:
                return False
            self.pump(step_s)
        return True

    def wait_turn(self, turn_id: str, timeout_s: float) -> bool:
        """Wait (bounded) until the turn finished."""
        return self.pump_until(lambda: turn_id not in self.open, timeout_s, 0.02)

    def wait_thread_idle(self, thread_id: str, timeout_s: float) -> bool:
        """Wait (bounded) until no open turn of this host is on `thread_id`."""
        return self.pump_until(
            lambda: not any(self.turn_threads.get(turn_id) == thread_id for turn_id in self.open), timeout_s, 0.05
        )

    def wait_capacity(self, limit: int, timeout_s: float) -> bool:
        return self.pump_until(lambda: len(self.open) < limit, timeout_s, 0.05)

    def wait_drained(self, timeout_s: float, told_within_s: float = 5.0) -> None:
        """Wait (bounded) until every open turn finished; stop early when each one left ended in the host (TurnEnded
        or reconciled) more than `told_within_s` ago and its caller was still not told: it never will be. Those are
        recorded as a "never_told" note."""
        deadline = time.monotonic() + timeout_s
        while self.open and time.monotonic() < deadline:
            now = time.monotonic()
            if all(now - self.ended.get(turn_id, now) > told_within_s for turn_id in self.open):
                break
            self.pump(0.05)
        if self.open:
            self.history.add(
                "note", what="never_told", turns=sorted(self.open), ended=sorted(set(self.open) & set(self.ended))
            )

    def refresh_status(self) -> dict[str, Any]:
        """The host's status; when the read fails (RuntimeError: the host answered with an error), the last one."""
        try:
            self.status = self.host.request("status", timeout_s=30.0)
        except RuntimeError as exc:
            self.history.add("note", what="status_failed", error=str(exc)[:300])
            return self.status or {"state": "unknown", "workers": [], "pins": {}}
        return self.status

    def worker_pid(self, worker_id: int, wait_s: float = 5.0) -> int | None:
        """The pid of the worker once it is up (waiting at most `wait_s`); None at once for a worker that gave up or
        stopped (it will not come back in this host's life)."""
        deadline = time.monotonic() + wait_s
        while True:
            for worker in self.refresh_status()["workers"]:
                if worker["worker_id"] != worker_id:
                    continue
                if worker["pid"] and worker["state"] in ("ready", "degraded"):
                    return int(worker["pid"])
                if worker["state"] in ("given_up", "stopped"):
                    return None
            if time.monotonic() >= deadline:
                return None
            self.pump(0.02)

    # --- faults ---
    def inject(self, index: int, event: FaultEvent, op_index: int) -> None:
        fault, name = event.fault, type(event.fault).__name__
        detail: str | None
        if isinstance(fault, RuntimeStopsReading):
            detail = self.stall_faults.stop_reading(fault, index, int(event.target.split(":", 1)[1]), op_index)
        elif isinstance(fault, ActorCrash):
            detail = self.host_faults.actor_crash(fault, index, op_index)
        elif isinstance(fault, ApprovalNeverAnswered):
            self.never_answer += 1
            detail = "next approval will not be answered"
        elif isinstance(fault, (HostKill9, StorageCrash)):
            detail = self.host_faults.kill_host(fault)
        elif isinstance(fault, STORAGE_FAULTS):
            detail = self.host_faults.storage(fault, op_index)
        else:
            detail = self.worker_faults.inject(fault, event.target, op_index)
        injected = detail is not None
        bucket = self.injected if injected else self.skipped
        bucket[name] = bucket.get(name, 0) + 1
        self.history.add(
            "fault",
            index=index,
            fault=name,
            target=event.target,
            injected=injected,
            detail=detail or "skipped",
            at=event.at,
        )

    def expire(self, op_index: int) -> None:
        self.op_index = op_index
        due = [undo for until, undo in self.timed if until <= op_index]
        self.timed = [(until, undo) for until, undo in self.timed if until > op_index]
        for undo in due:
            undo()

    def clear_all_faults(self, remote: bool = True) -> None:
        """Run every timed undo and heal everything; `remote` False (the host is gone): only resume what is stopped."""
        timed, self.timed = self.timed, []
        for _, undo in timed:
            if remote or undo == self.worker_faults.resume_hung:
                undo()
        self.timed = []  # what an undo postponed (a stopped runtime: resume_stopped below resumes every one)
        self.watchers = []
        self.never_answer = 0
        self.worker_faults.clear_knobs(remote)
        if remote:
            self.host_faults.heal_storage()
        self.worker_faults.resume_hung()
        self.stall_faults.resume_stopped()
