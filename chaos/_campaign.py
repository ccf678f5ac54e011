"""The chaos campaign runner: drive a workload plus a fault schedule against an AgentHost, record, then check.

Contract:
- `run_campaign(schedule, root, settings)` runs the host in a SUBPROCESS (`python -m agenthost.chaos._serve
  CONFIG_JSON`) so HostKill9 and StorageCrash are real SIGKILLs of the whole host process; a new host process is then
  started on the same storage root (its start settles what the dead one left: orphaned turns fail with a note,
  queued follow-ups run). `run_embedded(host_driver, schedule, settings)` (see chaos._plugin) uses the same loop on
  an in-process host and skips the faults that need a process kill.
- Control protocol (JSON lines): runner -> host `{"id": n, "op": name, ...args}`; host -> runner
  `{"id": n, "ok": true, "result": ...}` / `{"id": n, "ok": false, "error": "..."}` and unsolicited
  `{"event": {"kind": ..., "t": monotonic, ...}}` (turn events of every acknowledged send, and every event of
  RECORDED_EVENTS, the typed events of actors._events, stamped when emitted). Ops: create_thread, send, answer,
  status, set_faults, storage_fault, actor_crash, power_cut, fd_count, settle, shutdown.
- The loop, for op i of the schedule: inject the faults scheduled at i, expire timed faults (clear fault files,
  SIGCONT hung or stopped runtimes, heal the disk, disarm an actor crash that never fired), wait (bounded) until
  fewer than `max_inflight` turns are open, send op i. Approvals are answered as the op planned, except one per
  ApprovalNeverAnswered. A send the host refuses (e.g. HostUnavailableError while a crashed child is restarted) is
  recorded as "send_failed"; so is a status read that fails ("status_failed" note): neither stops the runner.
- RuntimeStopsReading: the runner picks a campaign thread pinned to the target worker (or, when none is, a thread
  pinned to another live worker, named in the detail), waits (bounded) until that thread has no open turn, runs a
  small warm-up turn on it (at most twice) until one completes on the worker's current process (so the thread is
  loaded there and the next call is the big turn/start, not a small thread/resume), SIGSTOPs the worker's process
  group and sends `size_kib` KiB of text on the thread (warm-up and big sends are acknowledged sends like any other,
  with `fault` set), then waits (bounded: the call's deadline + 1.5 s) for the detection before the next fault can
  pre-empt it. A "stall_detected" note records the pool's "kill" decision for that worker generation, a
  "stall_not_detected" note the SIGCONT of a group that was still waiting for one: after `ops` ops but never before
  the call's deadline + 1 s, at any heal, and before a host is replaced.
  ActorCrash arms the host's `ArmableHook` (op actor_crash); at expiry it is disarmed and an "actor_crash_fired" or
  "actor_crash_not_fired" note records whether it fired. SlowDisk arms slow syncs on the host's FaultyVFS
  (storage_fault "slow") and is healed at expiry.
- After the last op: heal everything, wait for open turns (bounded by `drain_timeout_s`; turns the host ended or
  reconciled over 5 s ago whose caller was still not told are not waited for, but recorded in a "never_told" note),
  replace a host that reports "failed", let workers settle, record the final status and fd count, then the liveness
  phase (chaos._liveness: one new message on every campaign thread, each must complete within `liveness_bound_s` of
  the policies), shut the host down cleanly, wait (bounded) for runtime processes to go, then run every invariant
  checker on history + storage.
- A host that reports "failed" (e.g. after persistent storage faults: the host policy gave up) is shut down and a
  new host process is started on the same root; that is recorded, not a violation by itself.
- Host settings are small so 1000 faults take minutes: worker backoff 0.01 s doubling to 0.08 s, 8 attempts,
  intensity 50 restarts / 1 s, stable after 0.3 s; host backoff 0.01..0.08 s, 4 attempts; turn timeout 2 s;
  request timeout 1 s; ask timeout 1.5 s (so a SlowDisk sync of 2..3 s makes the asking actor time out and
  crash). Every random choice is in the schedule (one seed); wall-clock timing is not replayed.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from agenthost.actors._events import EVENT_TYPES, HostEvent
from agenthost.chaos._history import History
from agenthost.chaos._schedule import (
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
    encode_schedule,
)
from agenthost.protocol._faults import RuntimeFaults, kill_process_group

__all__ = [
    "RECORDED_EVENTS",
    "CampaignResult",
    "CampaignSettings",
    "HostDriver",
    "HostGoneError",
    "SubprocessHost",
    "campaign_host_config",
    "git_commit",
    "run_campaign",
    "run_loop",
]

RECORDED_EVENTS: tuple[type[HostEvent], ...] = EVENT_TYPES  # every typed event (actors._events) is recorded
_FILE_KNOB_FAULTS = (WorkerHang, StdoutGarbage, EofMidLine, SlowStream, CrashOnStart)


class HostGoneError(RuntimeError):
    """The host process died or stopped answering."""


class CampaignSettings(msgspec.Struct, frozen=True, kw_only=True):
    runtime: str = "builtin"  # builtin | codex
    codex_bin: str | None = None
    max_inflight: int = 4
    turn_timeout_s: float = 2.0
    request_timeout_s: float = 1.0
    ask_timeout_s: float = 1.5  # an actor's deadline on another's reply: a slower sync (SlowDisk) is a crash
    drain_timeout_s: float = 30.0
    storage_faults: bool = True  # stack FaultyVFS/CrashVFS/ArmableFs in the host (needed by storage fault kinds)
    progress: bool = False


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


def campaign_host_config(
    root: str, workers: int, settings: CampaignSettings, codex_config: tuple[str, ...] = ()
) -> Any:
    from agenthost import HostConfig
    from agenthost.actors import Backoff, Intensity, RecoveryPolicy

    fast = Backoff(initial_s=0.01, multiplier=2.0, max_s=0.08)
    return HostConfig(
        storage_root=root,
        workers=workers,
        runtime=settings.runtime,  # type: ignore[arg-type]
        codex_bin=settings.codex_bin,
        codex_config=codex_config,
        worker_policy=RecoveryPolicy(
            backoff=fast, max_attempts=8, intensity=Intensity(max_restarts=50, period_s=1.0), stable_after_s=0.3
        ),
        host_policy=RecoveryPolicy(
            backoff=fast, max_attempts=4, intensity=Intensity(max_restarts=20, period_s=1.0), stable_after_s=0.3
        ),
        startup_timeout_s=10.0 if settings.runtime == "codex" else 5.0,
        request_timeout_s=settings.request_timeout_s if settings.runtime == "builtin" else 10.0,
        turn_timeout_s=settings.turn_timeout_s,
        shutdown_timeout_s=1.0,
        drain_timeout_s=2.0,
        checkpoint_interval_s=0.5,
        ask_timeout_s=settings.ask_timeout_s,
        max_active_turns=8,
        deltas_per_reply=6,
    )


# --- the driver interface (one host incarnation) ----------------------------------------------------------------
class HostDriver(Protocol):
    pid: int

    def request(self, op: str, timeout_s: float = 30.0, **args: Any) -> Any: ...
    def kill(self) -> None: ...
    def close(self, timeout_s: float = 30.0) -> None: ...


class SubprocessHost:
    """Runner side of the control protocol: one host process."""

    def __init__(self, config: dict[str, Any], on_event: Callable[[dict[str, Any]], None], log_path: Path) -> None:
        self._on_event = on_event
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        self._dead = False
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "agenthost.chaos._serve", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self.pid = self._proc.pid
        self._ready: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"chaos-host-{self.pid}", daemon=True)
        self._reader.start()
        try:
            hello = self._ready.get(timeout=60.0)
        except queue.Empty:
            self.kill()
            raise HostGoneError(f"host process {self.pid} did not start within 60 s") from None
        if not hello.get("ok"):
            self.kill()
            raise HostGoneError(f"host process {self.pid} failed to start: {hello.get('error')}")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if "event" in message:
                self._on_event(message["event"])
            elif message.get("id") == 0:
                self._ready.put(message)
            else:
                with self._lock:
                    waiter = self._replies.pop(message.get("id"), None)
                if waiter is not None:
                    waiter.put(message)
        self._dead = True
        self._ready.put({"ok": False, "error": "host process exited"})
        with self._lock:
            waiters, self._replies = list(self._replies.values()), {}
        for waiter in waiters:
            waiter.put({"ok": False, "error": "host process exited", "gone": True})

    def request(self, op: str, timeout_s: float = 30.0, **args: Any) -> Any:
        if self._dead:
            raise HostGoneError(f"host process {self.pid} is gone")
        waiter: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            self._replies[request_id] = waiter
            line = json.dumps({"id": request_id, "op": op, **args}) + "\n"
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._replies.pop(request_id, None)
                raise HostGoneError(f"host process {self.pid} is gone") from None
        try:
            reply = waiter.get(timeout=timeout_s)
        except queue.Empty:
            raise HostGoneError(f"host process {self.pid}: no answer to {op} within {timeout_s:g} s") from None
        if reply.get("gone"):
            raise HostGoneError(f"host process {self.pid} exited during {op}")
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error")))
        return reply.get("result")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.wait(30)
        self._reader.join(10)

    def close(self, timeout_s: float = 30.0) -> None:
        try:
            self.request("shutdown", timeout_s=timeout_s)
        except (HostGoneError, RuntimeError):
            pass
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reader.join(10)

    @property
    def alive(self) -> bool:
        return not self._dead and self._proc.poll() is None


# --- the loop ---------------------------------------------------------------------------------------------------
class _Loop:
    """State of one campaign run (runner side)."""

    def __init__(
        self,
        schedule: Schedule,
        settings: CampaignSettings,
        history: History,
        start_host: Callable[[Callable[[dict[str, Any]], None]], Any],
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
        self.host: Any = None
        self.thread_ids = [f"chaos-{n}" for n in range(schedule.threads)]
        self.open: dict[str, float] = {}  # turn id -> time sent (this host)
        self.turn_threads: dict[str, str] = {}  # turn id -> thread id, for every acknowledged send
        self.finished: dict[str, dict[str, Any]] = {}  # turn id -> its TurnFinished event (this host)
        self.ended: dict[str, float] = {}  # turn id -> when the host ended or reconciled it (this host)
        self.stopped_pids: set[int] = set()  # runtimes SIGSTOPped by RuntimeStopsReading
        self.generations: dict[int, int] = {}  # worker id -> generation of its process that is up (this host)
        self.turn_workers: dict[str, tuple[int, int]] = {}  # turn id -> (worker, generation) it ran on (this host)
        self.bound: dict[str, tuple[int, int]] = {}  # thread id -> (worker, generation) of its last completed turn
        self.stalls: dict[int, tuple[int, int, int]] = {}  # fault index -> (pid, worker, generation): not found yet
        self.op_index = 0  # the op being run (timed undos may postpone themselves to the next one)
        self.turn_answers: dict[str, str] = {}
        self.never_answer = 0
        self.file_faults: dict[int, dict[str, Any]] = {}  # worker -> knob -> (value, until_op)
        self.timed: list[tuple[int, Callable[[], None]]] = []  # (until op, undo)
        self.watchers: list[Callable[[dict[str, Any]], bool]] = []  # drop when they return True
        self.hung_pids: set[int] = set()
        self.injected: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.host_processes = 0
        self.repairs = 0
        self.status: dict[str, Any] = {}

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
        self.resume_hung()
        self.continue_all()
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
                self._match_stall(event)
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

    def wait_turn(self, turn_id: str, timeout_s: float) -> bool:
        """Wait (bounded) until the turn finished."""
        deadline = time.monotonic() + timeout_s
        while turn_id in self.open:
            if time.monotonic() >= deadline:
                return False
            self.pump(0.02)
        return True

    def wait_thread_idle(self, thread_id: str, timeout_s: float) -> bool:
        """Wait (bounded) until no open turn of this host is on `thread_id`."""
        deadline = time.monotonic() + timeout_s
        while any(self.turn_threads.get(turn_id) == thread_id for turn_id in self.open):
            if time.monotonic() >= deadline:
                return False
            self.pump(0.05)
        return True

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

    def wait_capacity(self, limit: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.open) >= limit:
            if time.monotonic() >= deadline:
                return False
            self.pump(0.05)
        return True

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
        if isinstance(fault, RuntimeStopsReading):
            detail = self._stop_reading(fault, index, int(event.target.split(":", 1)[1]), op_index)
        elif isinstance(fault, ActorCrash):
            detail = self._actor_crash(fault, index, op_index)
        else:
            detail = self._inject(fault, event.target, op_index)
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

    def _inject(self, fault: Any, target: str, op_index: int) -> str | None:
        builtin = self.settings.runtime == "builtin"
        if isinstance(fault, ApprovalNeverAnswered):
            self.never_answer += 1
            return "next approval will not be answered"
        if isinstance(fault, (HostKill9, StorageCrash)):
            return self._kill_host(fault)
        if isinstance(fault, (StorageIOError, DiskFull, TranscriptStepFailure, SlowDisk)):
            return self._storage(fault, op_index)
        worker_id = int(target.split(":", 1)[1])
        if isinstance(fault, WorkerKill9):
            pid = self.worker_pid(worker_id)
            if pid is None:
                return None
            kill_process_group(pid, signal.SIGKILL)
            return f"SIGKILL pid {pid}"
        if isinstance(fault, WorkerHang) and not builtin:
            pid = self.worker_pid(worker_id)
            if pid is None:
                return None
            kill_process_group(pid, signal.SIGSTOP)
            self.hung_pids.add(pid)
            self.timed.append((op_index + fault.resume_after_ops, self.resume_hung))
            return f"SIGSTOP pid {pid} for {fault.resume_after_ops} ops"
        if not builtin or not isinstance(fault, _FILE_KNOB_FAULTS):
            return None
        return self._file_fault(fault, worker_id, op_index)

    def _file_fault(self, fault: Any, worker_id: int, op_index: int) -> str | None:
        if isinstance(fault, WorkerHang):
            pid = self.worker_pid(worker_id, wait_s=0.0)
            if pid is not None:
                self.hung_pids.add(pid)
            self.set_knob(worker_id, "stop_self", True)
            self.timed.append((op_index + fault.resume_after_ops, lambda: self._unhang(worker_id)))
            return f"stop_self for {fault.resume_after_ops} ops (pid {pid})"
        if isinstance(fault, StdoutGarbage):
            self.set_knob(worker_id, "garbage_before_turn", True)
            self.timed.append((op_index + fault.ops, lambda: self.set_knob(worker_id, "garbage_before_turn", None)))
            return f"garbage_before_turn for {fault.ops} ops"
        if isinstance(fault, SlowStream):
            self.set_knob(worker_id, "delta_delay_s", fault.delay_s)
            self.timed.append((op_index + fault.ops, lambda: self.set_knob(worker_id, "delta_delay_s", None)))
            return f"delta_delay_s={fault.delay_s} for {fault.ops} ops"
        if isinstance(fault, EofMidLine):
            self.set_knob(worker_id, "eof_mid_line", True)
            self._clear_after_exits(worker_id, "eof_mid_line", 1)
            self.timed.append((op_index + 3, lambda: self.set_knob(worker_id, "eof_mid_line", None)))
            return "eof_mid_line at the next turn start or delta"
        assert isinstance(fault, CrashOnStart)
        pid = self.worker_pid(worker_id)
        if pid is None:
            return None
        self.set_knob(worker_id, "crash_on_start", True)
        self._clear_after_exits(worker_id, "crash_on_start", fault.restarts + 1)
        kill_process_group(pid, signal.SIGKILL)
        return f"SIGKILL pid {pid}, then {fault.restarts} crashing starts"

    def _clear_after_exits(self, worker_id: int, knob: str, exits: int) -> None:
        seen = [0]

        def watcher(event: dict[str, Any]) -> bool:
            if event.get("event") == "worker.exited" and event.get("worker") == worker_id:
                seen[0] += 1
                if seen[0] >= exits:
                    self.set_knob(worker_id, knob, None)
                    return True
            return False

        self.watchers.append(watcher)

    def set_knob(self, worker_id: int, knob: str, value: Any) -> None:
        knobs = self.file_faults.setdefault(worker_id, {})
        if value is None:
            if knobs.pop(knob, None) is None:
                return
        else:
            knobs[knob] = value
        faults = RuntimeFaults(**knobs) if knobs else None
        try:
            self.host.request(
                "set_faults", worker_id=worker_id, faults=None if faults is None else msgspec.to_builtins(faults)
            )
        except (HostGoneError, RuntimeError) as exc:
            self.history.add("note", what="set_faults_failed", worker=worker_id, error=str(exc)[:200])

    def _unhang(self, worker_id: int) -> None:
        self.set_knob(worker_id, "stop_self", None)
        pid = self.worker_pid(worker_id, wait_s=0.0)
        if pid is not None:
            self.hung_pids.add(pid)
        self.resume_hung()

    def continue_all(self) -> None:
        """SIGCONT every process of this root: a runtime that stopped itself (stop_self) after its host was killed
        could otherwise never read the EOF that tells it to exit."""
        from agenthost.chaos._invariants import processes_under

        if self.root is None:
            return
        for pid, _ in processes_under(self.root, exclude=frozenset({self.host.pid})):
            try:
                os.kill(pid, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass

    def resume_hung(self) -> None:
        for pid in sorted(self.hung_pids):
            try:
                kill_process_group(pid, signal.SIGCONT)
            except (ValueError, PermissionError):
                pass
        self.hung_pids.clear()

    def _storage(self, fault: Any, op_index: int) -> str | None:
        if not self.settings.storage_faults:
            return None
        spec: dict[str, Any]
        if isinstance(fault, StorageIOError):
            spec = {"what": "io", "io_op": fault.op, "nth": fault.nth, "persistent": fault.persistent}
            until = op_index + fault.ops
        elif isinstance(fault, DiskFull):
            spec = {"what": "full"}
            until = op_index + fault.ops
        elif isinstance(fault, SlowDisk):
            spec = {"what": "slow", "delay_s": fault.delay_s, "syncs": fault.syncs}
            until = op_index + fault.ops
        else:
            spec = {"what": "fs", "step": fault.step}
            until = op_index + 2
        try:
            self.host.request("storage_fault", **spec)
        except (HostGoneError, RuntimeError):
            return None
        self.timed.append((until, self.heal_storage))
        return json.dumps(spec)

    def heal_storage(self) -> None:
        try:
            self.host.request("storage_fault", what="heal")
        except (HostGoneError, RuntimeError) as exc:
            self.history.add("note", what="heal_failed", error=str(exc)[:200])

    def _kill_host(self, fault: Any) -> str | None:
        if not self.can_kill_host:
            return None
        pid = self.host.pid
        if isinstance(fault, StorageCrash):
            if not self.settings.storage_faults:
                return None
            try:
                self.host.request("power_cut", timeout_s=5.0)
            except (HostGoneError, RuntimeError):
                pass
        self.host.kill()
        self.timed = [(until, undo) for until, undo in self.timed if undo != self.heal_storage]
        self.replace_host(type(fault).__name__, killed=True)
        return f"host pid {pid} killed; new host pid {self.host.pid}"

    def expire(self, op_index: int) -> None:
        self.op_index = op_index
        due = [undo for until, undo in self.timed if until <= op_index]
        self.timed = [(until, undo) for until, undo in self.timed if until > op_index]
        for undo in due:
            undo()

    def clear_all_faults(self, remote: bool = True) -> None:
        timed, self.timed = self.timed, []
        for _, undo in timed:
            if remote or undo in (self.resume_hung,):
                undo()
        self.timed = []  # what an undo postponed (a stopped runtime: resume_stopped below resumes every one)
        self.watchers = []
        self.never_answer = 0
        if remote:
            for worker_id in list(self.file_faults):
                for knob in list(self.file_faults[worker_id]):
                    self.set_knob(worker_id, knob, None)
            self.heal_storage()
        self.file_faults = {}
        self.resume_hung()
        self.resume_stopped()

    # --- RuntimeStopsReading ---
    def _stop_reading(self, fault: RuntimeStopsReading, index: int, worker_id: int, op_index: int) -> str | None:
        self.worker_pid(worker_id)  # a worker that is restarting: wait (bounded) until it is up again
        picked = self._stall_thread(worker_id)
        if picked is not None:
            self.wait_thread_idle(picked[0], self.settings.turn_timeout_s + 0.5)
            picked = self._warm_up(picked, index, op_index)
        pid = None if picked is None else self.worker_pid(picked[1], wait_s=0.0)
        if picked is None or pid is None:
            pins = self.status.get("pins", {})
            self.history.add("note", what="stall_skipped", fault=index, worker=worker_id, pins=pins)
            return None
        thread_id, worker_id = picked
        kill_process_group(pid, signal.SIGSTOP)
        self.stopped_pids.add(pid)
        # ops can take milliseconds: stay stopped past the call's deadline (+ grace), or the runtime would read on
        not_before = time.monotonic() + self.settings.request_timeout_s + 1.0
        self.timed.append((op_index + fault.ops, functools.partial(self._resume_stopped_after, pid, not_before)))
        generation = next(
            (int(w["generation"]) for w in self.status.get("workers", ()) if int(w["worker_id"]) == worker_id), 0
        )
        self.stalls[index] = (pid, worker_id, generation)
        filler = "the runtime stopped reading its stdin; " * (fault.size_kib * 1024 // 39 + 1)
        text = f"op {op_index}: stall {index}: {filler[: fault.size_kib * 1024]}"
        turn_id = self.send_text(thread_id, text, op=op_index, fault=index)
        deadline = time.monotonic() + self.settings.request_timeout_s + 1.5  # the call's deadline, then the kill
        while turn_id is not None and index in self.stalls and time.monotonic() < deadline:
            self.pump(0.02)  # the next faults (a host kill...) would otherwise pre-empt the detection
        return f"SIGSTOP pid {pid} (worker {worker_id}), {fault.size_kib} KiB on {thread_id}: turn {turn_id}"

    def _warm_up(self, picked: tuple[str, int], index: int, op_index: int) -> tuple[str, int] | None:
        """A small turn on the thread first (twice at most) until one completes on the worker's current process: the
        thread is then loaded there, so the big turn/start goes out at once (a thread that must be resumed first
        would send a small thread/resume, which only times out). The (thread, worker) to stall, or None."""
        for _ in range(2):
            found = self._stall_thread(picked[1], prefer=picked[0])
            if found is None:
                return None
            picked = found
            warm_up = self.send_text(picked[0], f"op {op_index}: warm-up for stall {index}", op=op_index, fault=index)
            done = warm_up is not None and self.wait_turn(warm_up, self.settings.turn_timeout_s + 0.5)
            if done and self.finished.get(str(warm_up), {}).get("status") == "completed" and self.is_bound(*picked):
                break
        return self._stall_thread(picked[1], prefer=picked[0])

    def _stall_thread(self, worker_id: int, prefer: str | None = None) -> tuple[str, int] | None:
        """(thread, worker): a campaign thread pinned to `worker_id` (`prefer` first, then idle ones), or else one
        pinned to another worker that is up; None when no campaign thread is pinned to a live worker."""
        status = self.refresh_status()
        live = {int(w["worker_id"]) for w in status.get("workers", ()) if w["state"] in ("ready", "degraded")}
        pins = {t: int(w) for t, w in status.get("pins", {}).items() if t in self.thread_ids and int(w) in live}
        busy = {self.turn_threads.get(turn_id) for turn_id in self.open}

        def rank(thread_id: str) -> tuple[bool, bool, bool, bool, str]:
            ran_there = self.is_bound(thread_id, pins[thread_id])
            return (pins[thread_id] != worker_id, thread_id != prefer, not ran_there, thread_id in busy, thread_id)

        ranked = sorted(pins, key=rank)
        return (ranked[0], pins[ranked[0]]) if ranked else None

    def is_bound(self, thread_id: str, worker_id: int) -> bool:
        """The thread's last turn completed on the worker's current process: its runtime thread is loaded there, so
        its next turn/start goes out at once (a thread that must be resumed first sends a small thread/resume)."""
        return self.bound.get(thread_id) == (worker_id, self.generations.get(worker_id, -1))

    def _match_stall(self, event: dict[str, Any]) -> None:
        """A pool "kill" decision because a runtime stopped reading its stdin: the stall it detected."""
        if "stopped reading its stdin" not in str(event.get("reason")):
            return
        for index, (pid, worker_id, generation) in list(self.stalls.items()):
            if event.get("child") == f"worker-{worker_id}" and event.get("generation") == generation:
                del self.stalls[index]
                self.history.add("note", what="stall_detected", fault=index, worker=worker_id, pid=pid)

    def _resume_stopped_after(self, pid: int, not_before: float) -> None:
        if pid not in self.stopped_pids:
            return
        if time.monotonic() < not_before:  # expired by ops but too early: look again at the next op
            self.timed.append((self.op_index + 1, functools.partial(self._resume_stopped_after, pid, not_before)))
            return
        self.resume_stopped(pid)

    def resume_stopped(self, pid: int | None = None) -> None:
        """SIGCONT the group of a runtime RuntimeStopsReading stopped (every one when `pid` is None)."""
        for stopped in sorted(self.stopped_pids) if pid is None else [pid]:
            self.stopped_pids.discard(stopped)
            for index in [i for i, stall in self.stalls.items() if stall[0] == stopped]:
                del self.stalls[index]
                self.history.add("note", what="stall_not_detected", fault=index, pid=stopped)
            try:
                kill_process_group(stopped, signal.SIGCONT)
            except (ValueError, PermissionError, ProcessLookupError):
                pass

    # --- ActorCrash ---
    def _actor_crash(self, fault: ActorCrash, index: int, op_index: int) -> str | None:
        if not self.can_crash_actors:
            return None
        try:
            self.host.request("actor_crash", what="arm", child=fault.child, message=fault.message)
        except (HostGoneError, RuntimeError):
            return None
        self.timed.append((op_index + fault.ops, functools.partial(self._disarm_crash, index, fault)))
        return f"armed: {fault.child} crashes at its next {fault.message}"

    def _disarm_crash(self, index: int, fault: ActorCrash) -> None:
        try:
            fired = self.host.request("actor_crash", what="disarm")
        except (HostGoneError, RuntimeError) as exc:
            self.history.add("note", what="disarm_failed", fault=index, error=str(exc)[:200])
            return
        what = "actor_crash_fired" if fired else "actor_crash_not_fired"
        self.history.add("note", what=what, fault=index, child=fault.child, message=fault.message)


def run_loop(loop: _Loop, *, progress: Callable[[str], None] | None = None, close: bool = True) -> None:
    """Drive the whole schedule through `loop` (host started by the caller), then drain and stop the host."""
    schedule = loop.schedule
    by_op: dict[int, list[tuple[int, FaultEvent]]] = {}
    for index, event in enumerate(schedule.events):
        by_op.setdefault(event.at, []).append((index, event))
    for thread_id in loop.thread_ids:
        loop.host.request("create_thread", thread_id=thread_id)
    loop.pump(0.0)
    stall_s = 3 * loop.settings.turn_timeout_s + 10.0
    started = time.monotonic()
    for op_index in range(len(schedule.ops)):
        try:
            _one_op(loop, op_index, by_op.get(op_index, ()), stall_s)
        except HostGoneError as exc:
            loop.history.add("note", what="host_gone", error=str(exc)[:300])
            loop.host.kill()
            loop.replace_host(f"host process died: {exc}", killed=True)
        if progress and (op_index + 1) % 100 == 0:
            injected = sum(loop.injected.values())
            progress(
                f"op {op_index + 1}/{len(schedule.ops)}: {injected} faults injected, "
                f"{loop.host_processes} host processes, {time.monotonic() - started:.1f} s"
            )
    _finish(loop, close)


def _one_op(loop: _Loop, op_index: int, events: Any, stall_s: float) -> None:
    loop.pump(0.0)
    for index, event in events:
        loop.inject(index, event, op_index)
    loop.expire(op_index)
    status = loop.refresh_status()
    if status["state"] == "failed" and loop.can_kill_host:
        loop.history.add("note", what="host_failed", cause=status.get("cause"))
        loop.host.close()
        loop.replace_host(f"host failed: {status.get('cause')}", killed=False)
    if not loop.wait_capacity(loop.settings.max_inflight, stall_s):
        loop.history.add("note", what="stalled", open=sorted(loop.open)[:20])
    loop.send(op_index)


def _finish(loop: _Loop, close: bool = True) -> None:
    from agenthost.chaos._liveness import run_liveness

    loop.clear_all_faults()
    loop.wait_drained(loop.settings.drain_timeout_s)
    loop.pump(0.2)
    try:
        status = loop.refresh_status()
        if status["state"] == "failed" and loop.can_kill_host:  # a failed host never recovers by itself: replace it
            loop.history.add("note", what="host_failed", cause=status.get("cause"))
            loop.host.close()
            loop.replace_host(f"host failed: {status.get('cause')}", killed=False)
        status = loop.host.request("settle", timeout_s=60.0)
        loop.history.add("note", what="final_status", **status)
        loop.note_fds()
    except (HostGoneError, RuntimeError) as exc:
        loop.history.add("note", what="final_status_failed", error=str(exc)[:300])
    run_liveness(loop)
    if close:
        loop.continue_all()
        loop.host.close()
        loop.continue_all()
        loop.pump(0.5)
        loop.history.add("host_stop", clean=True)


def _wait_no_processes(root: Path, timeout_s: float) -> None:
    from agenthost.chaos._invariants import processes_under

    deadline = time.monotonic() + timeout_s
    while processes_under(root) and time.monotonic() < deadline:
        time.sleep(0.05)


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

    def start_host(sink: Callable[[dict[str, Any]], None]) -> SubprocessHost:
        return SubprocessHost(config, sink, root / "campaign-host.log")

    host_config = campaign_host_config(str(root), schedule.workers, settings)
    bound_s = liveness_bound_s(host_config.worker_policy, host_config.host_policy, host_config.turn_timeout_s)
    loop = _Loop(schedule, settings, history, start_host, root, can_kill_host=True, liveness_bound_s=bound_s)
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
    first_of_each = {v.invariant: v for v in reversed(violations)}
    chosen = list(first_of_each.values()) + [v for v in violations if v not in first_of_each.values()]
    reports = [_violation_report(schedule, v, root, settings, shrink) for v in chosen[:20]]
    return CampaignResult(
        seed=schedule.seed,
        commit=git_commit(),
        runtime=settings.runtime,
        faults_scheduled=len(schedule.events),
        faults_injected=dict(sorted(loop.injected.items())),
        faults_skipped=dict(sorted(loop.skipped.items())),
        ops=len(schedule.ops),
        turns_acknowledged=len(history.entries("send")),
        turns_by_status=_turns_by_status(root),
        host_processes=loop.host_processes,
        repairs=loop.repairs,
        invariants_checked=INVARIANTS,
        violations=reports,
        violations_total=len(violations),
        duration_s=round(time.monotonic() - began, 3),
    )


def _turns_by_status(root: Path) -> dict[str, int]:
    from agenthost.chaos._invariants import read_storage

    counts: dict[str, int] = {}
    for row in read_storage(root).turns.values():
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return dict(sorted(counts.items()))


def reproducer(schedule: Schedule, at_fault: int | None, extra_ops: int = 20) -> Schedule:
    """The schedule prefix up to (and including) fault `at_fault`, with the ops it needs plus `extra_ops`."""
    events = schedule.events[: (at_fault + 1) if at_fault is not None else 0]
    last_op = max((e.at for e in events), default=0)
    ops = schedule.ops[: min(len(schedule.ops), last_op + 1 + extra_ops)]
    return msgspec.structs.replace(schedule, events=events, ops=ops)


def _violation_report(
    schedule: Schedule, violation: Any, root: Path, settings: CampaignSettings, shrink: bool
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
