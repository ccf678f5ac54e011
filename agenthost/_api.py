"""The embedding API: `AgentHost`, a context manager around the actor system.

Contract:
- `HostConfig` is validated at construction; errors name the field and the bad value.
- `start()` (or `with AgentHost(...)`) starts the actors and, with `wait_ready=True`, waits (real time, at most
  `startup_timeout_s` + 5 s) until every worker has left "starting". Workers that fail are handled by the pool's
  policy; the host still starts with the rest.
- `send()` returns at once with a `TurnHandle`; by then the user message and the pending checkpoint are durable
  (or, for a busy thread, the message is durable in the follow-up queue). Events stream through the handle;
  `TurnHandle.wait()` returns the `TurnFinished` event, which is emitted only after the turn's end is durable.
- `shutdown()` drains: no new messages, waits up to `drain_timeout_s` for open turns (without consuming their
  events: every event stays in its handle for the caller), then stops the host (turns
  still open end as failed and are persisted; runtimes get stdin closed, then their group SIGKILLed after
  `shutdown_timeout_s`). It is idempotent; `__exit__` calls it.
- Every wait on a handle takes a timeout; a timeout raises `TimeoutError` naming the turn, nothing is lost.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import msgspec
import pykka

from agenthost.actors._clock import Clock, SystemClock
from agenthost.actors._host import HostSupervisor, host_spec
from agenthost.actors._log import get_logger
from agenthost.actors._recovery import HOST_POLICY, WORKER_POLICY, RecoveryPolicy, RestartType
from agenthost.actors._refs import ask, tell_quietly
from agenthost.actors._runtimes import CodexRolloutSync, builtin_spec_factory, codex_spec_factory, faults_file_path
from agenthost.actors._turns import CoordinatorSettings
from agenthost.protocol._faults import RuntimeFaults, encode_faults
from agenthost.protocol._messages import (
    AnswerApproval,
    CloseIntake,
    GetChildren,
    GetHostStatus,
    HostStatus,
    InterruptTurn,
    ListThreads,
    ListTurns,
    ReadTranscript,
    SendMessage,
    ShutdownHost,
    TurnEvent,
    TurnFinished,
)
from agenthost.protocol._messages import CreateThread as _CreateThread
from agenthost.storage import AtomicFs, StorageRoot, ThreadRow, TurnRow, atomic_write, resolve_root, validate_id

__all__ = ["AgentHost", "HostConfig", "HostStartError", "HostUnavailableError", "TurnHandle"]

_log = get_logger("agenthost.api")


class HostUnavailableError(RuntimeError):
    """The part of the host that serves this request is down (restarting, or the host failed)."""


class HostStartError(RuntimeError):
    """The host could not start; the message holds the cause (e.g. the storage error)."""


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"HostConfig.{name} must be > 0, got {value!r}")


def _at_least_one(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"HostConfig.{name} must be an int >= 1, got {value!r}")


class HostConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a host needs; all times in seconds."""

    storage_root: str
    workers: int = 2
    runtime: Literal["builtin", "codex"] = "builtin"
    codex_bin: str | None = None  # the native codex binary (runtime "codex")
    codex_config: tuple[str, ...] = ()  # extra `-c key=value` overrides for codex app-server
    worker_faults: dict[int, RuntimeFaults] = {}
    worker_policy: RecoveryPolicy = WORKER_POLICY
    worker_restart: RestartType = "permanent"
    max_consecutive_timeouts: int = 3
    host_policy: RecoveryPolicy = HOST_POLICY
    host_strategy: Literal["rest_for_one", "one_for_all"] = "rest_for_one"
    deltas_per_reply: int = 4
    startup_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    turn_timeout_s: float = 600.0
    shutdown_timeout_s: float = 5.0
    drain_timeout_s: float = 30.0
    checkpoint_interval_s: float = 5.0
    max_active_turns: int = 8
    rng_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("workers", "deltas_per_reply", "max_active_turns", "max_consecutive_timeouts"):
            _at_least_one(name, getattr(self, name))
        for name in (
            "startup_timeout_s",
            "request_timeout_s",
            "turn_timeout_s",
            "shutdown_timeout_s",
            "drain_timeout_s",
            "checkpoint_interval_s",
        ):
            _positive(name, getattr(self, name))
        if self.runtime == "codex" and not self.codex_bin:
            raise ValueError("HostConfig.codex_bin is required when runtime is 'codex', got None")
        if self.runtime == "codex" and self.worker_faults:
            raise ValueError("HostConfig.worker_faults are knobs of the built-in runtime; runtime is 'codex'")
        for worker_id in self.worker_faults:
            if not 1 <= worker_id <= self.workers:
                raise ValueError(f"HostConfig.worker_faults names worker {worker_id!r}; workers are 1..{self.workers}")


EventT = TypeVar("EventT")


def _shutdown_bound_s(config: HostConfig) -> float:
    """How long a shutdown may take at most: every child's stop (each bounded by shutdown_timeout_s plus the
    grace pykka gives it) with room to spare; past it the caller is told, the host threads are daemons."""
    return 4 * (config.shutdown_timeout_s + 10.0) + 30.0


class TurnEvents(queue.Queue[TurnEvent]):
    """A turn's event queue that also records, without consuming anything, that `TurnFinished` was delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = threading.Event()

    def put(self, item: TurnEvent, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if isinstance(item, TurnFinished):
            self.ended.set()


class TurnHandle:
    """The caller's view of one turn: its events, in order, ending with `TurnFinished`."""

    def __init__(self, turn_id: str, queued: bool, events: TurnEvents) -> None:
        self.turn_id = turn_id
        self.queued = queued
        self._events = events
        self.history: list[TurnEvent] = []
        self.finished: TurnFinished | None = None

    def next_event(self, timeout_s: float) -> TurnEvent:
        if self.finished is not None:
            raise RuntimeError(f"turn {self.turn_id} already finished ({self.finished.status})")
        try:
            event = self._events.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"turn {self.turn_id}: no event within {timeout_s:g} s") from None
        self.history.append(event)
        if isinstance(event, TurnFinished):
            self.finished = event
        return event

    def ended(self, timeout_s: float) -> bool:
        """Wait until the turn's `TurnFinished` was delivered, WITHOUT consuming any event; False on timeout."""
        return self._events.ended.wait(timeout_s)

    def events(self, timeout_s: float = 60.0) -> Iterator[TurnEvent]:
        """Yield events until (and including) `TurnFinished`; each must come within `timeout_s`."""
        while self.finished is None:
            yield self.next_event(timeout_s)

    def wait_for(self, kind: type[EventT], timeout_s: float = 60.0) -> EventT:
        """Consume events until one of type `kind` arrives; TimeoutError if the turn ends or time runs out first."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.finished is not None:
                if isinstance(self.finished, kind):
                    return self.finished
                raise TimeoutError(f"turn {self.turn_id} finished ({self.finished.status}) before a {kind.__name__}")
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, kind):
                return event

    def wait(self, timeout_s: float = 60.0) -> TurnFinished:
        return self.wait_for(TurnFinished, timeout_s)


def _clear_live_faults(root: StorageRoot, workers: int) -> None:
    """Live fault files are test knobs of one host's life: a new host never inherits them."""
    for worker_id in range(1, workers + 1):
        faults_file_path(root, worker_id).unlink(missing_ok=True)


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
    ) -> None:
        """`clock` drives every timer (default: real time); `storage_vfs` (a registered APSW VFS name) and
        `transcript_fs` are fault-injection seams for the database and the transcript writes."""
        self.config = config
        self.root = resolve_root(StorageRoot(config.storage_root))  # follows a finished `migrate-storage`
        self._clock = clock or SystemClock()
        self._wall = wall
        self._faults = dict(config.worker_faults)
        self._host: pykka.ActorRef[Any] | None = None
        self._children: dict[str, pykka.ActorRef[Any]] = {}
        self._open: dict[str, TurnHandle] = {}
        self._storage_vfs = storage_vfs
        self._transcript_fs = transcript_fs

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
        )
        self._host = HostSupervisor.start(
            root=self.root,
            clock=self._clock,
            wall=self._wall,
            worker_count=config.workers,
            spec_factory=spec_factory,
            worker_policy=config.worker_policy,
            worker_restart=config.worker_restart,
            max_consecutive_timeouts=config.max_consecutive_timeouts,
            settings=settings,
            checkpoint_interval_s=config.checkpoint_interval_s,
            rng_seed=config.rng_seed,
            spec=host_spec(config.host_strategy, config.host_policy, config.shutdown_timeout_s),
            storage_vfs=self._storage_vfs,
            transcript_fs=self._transcript_fs,
            prepare_resume=prepare_resume,
        )
        self._children = ask(self._host, GetChildren())
        status: HostStatus = ask(self._host, GetHostStatus())
        if status.state == "failed":
            self._host.stop()
            self._host = None
            raise HostStartError(f"agenthost could not start on {self.root.root}: {status.cause}")
        if wait_ready:
            self.wait_workers_settled(config.startup_timeout_s + 5.0)
        return self

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
        try:
            ask(host, ShutdownHost(timeout_s=self.config.shutdown_timeout_s), _shutdown_bound_s(self.config))
        finally:
            host.stop()
            self._open.clear()

    # --- threads and turns ----------------------------------------------------------------------------------
    def _ask(self, name: str, message: Any) -> Any:
        """Ask child `name`; after a restart of that child by the host, ask its new incarnation."""
        if self._host is None:
            raise RuntimeError("AgentHost is not running (call start() or use it as a context manager)")
        for attempt in (1, 2):
            ref = self._children.get(name)
            if ref is not None:
                try:
                    return ask(ref, message)
                except pykka.ActorDeadError:
                    pass
            if attempt == 1:
                self._children = ask(self._host, GetChildren())
        status: HostStatus = ask(self._host, GetHostStatus())
        raise HostUnavailableError(
            f"agenthost cannot serve this now: {name} is not running (host {status.state}"
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
        accepted = self._ask("turns", SendMessage(thread_id=thread_id, text=text, sink=events))
        handle = TurnHandle(accepted.turn_id, accepted.queued, events)
        self._open = {tid: h for tid, h in self._open.items() if not h.ended(0)}
        self._open[handle.turn_id] = handle
        return handle

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
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, encode_faults(faults).encode())

    # --- reads ----------------------------------------------------------------------------------------------
    def status(self) -> HostStatus:
        if self._host is None:
            raise RuntimeError("AgentHost is not running")
        status: HostStatus = ask(self._host, GetHostStatus())
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
