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
from agenthost._handle import CallAnswer, RuntimeCallError, TurnEvents, TurnHandle
from agenthost._host_parts import clear_live_faults, host_parts, shutdown_bound_s
from agenthost._operations import Operations
from agenthost.actors._children import ChildDirectory
from agenthost.actors._clock import Clock, SystemClock
from agenthost.actors._errors import HostUnavailableError
from agenthost.actors._host import HostSupervisor, host_spec
from agenthost.actors._log import Event, subscribe
from agenthost.actors._placement import LOCAL, PlacementError, ProcessHost, open_process_host
from agenthost.actors._refs import FaultHook, Reply, ask, tell_quietly
from agenthost.protocol._messages import (
    AnswerApproval,
    CloseIntake,
    GetHostStatus,
    GetThread,
    GetTurn,
    HealthCheck,
    HostStatus,
    InterruptTurn,
    ListApprovals,
    ListThreads,
    ListTurns,
    PendingApproval,
    ReadTranscript,
    RuntimeRequest,
    SendMessage,
    ShutdownHost,
    SteerTurn,
    TurnAccepted,
    UpdateThread,
)
from agenthost.protocol._messages import CreateThread as _CreateThread
from agenthost.storage import (
    AtomicFs,
    Finding,
    StorageRoot,
    ThreadRow,
    TurnRow,
    resolve_root,
    validate_id,
)

__all__ = ["AgentHost", "HostConfig", "HostStartError", "HostUnavailableError", "RuntimeCallError", "TurnHandle"]

_STATUS_S = 10.0  # a status read: the host answers at any time (its children's parts are bounded by 2 s each)


class HostStartError(RuntimeError):
    """The host could not start; the message holds the cause (e.g. the storage error)."""


_PRUNE_OPEN_AT_LEAST = 256  # open handles kept before ended ones are pruned


class AgentHost(Operations):
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
        self._open: dict[str, TurnHandle] = {}  # handles whose turn may still run (what shutdown drains)
        self._open_lock = threading.Lock()  # send() may be called from many threads at once
        self._prune_open_at = _PRUNE_OPEN_AT_LEAST
        self._storage_vfs = storage_vfs
        self._transcript_fs = transcript_fs
        self._fault_hook = fault_hook
        self._process_host: ProcessHost = LOCAL

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
        clear_live_faults(self.root, config.workers)
        try:  # placement "ray": connect to the cluster now, so a wrong address fails the start with its cause
            self._process_host = open_process_host(
                config.placement, ray_address=config.ray_address, resources=config.resources, root=self.root.root
            )
        except PlacementError as exc:
            raise HostStartError(f"agenthost could not start on {self.root.root}: {exc}") from None
        self._host = HostSupervisor.start(
            parts=host_parts(
                config,
                self.root,
                clock=self._clock,
                wall=self._wall,
                faults=self._faults,
                storage_vfs=self._storage_vfs,
                transcript_fs=self._transcript_fs,
                fault_hook=self._fault_hook,
                process_host=self._process_host,
            ),
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
        with self._open_lock:
            open_handles = list(self._open.values())
        for handle in open_handles:  # wait, never consume: the events belong to the caller
            if not handle.ended(max(0.0, deadline - time.monotonic())):
                break
        done = threading.Event()
        try:
            if tell_quietly(host, ShutdownHost(timeout_s=self.config.shutdown_timeout_s, done=done)):
                done.wait(shutdown_bound_s(self.config))
        finally:
            host.stop()
            with self._open_lock:
                self._open.clear()
            self._process_host.close()  # Ray actors a stop could not reach are released too

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

    def _tell(self, name: str, message: Any) -> None:
        """Tell the child `name`; HostUnavailableError (as `_ask`) when it is not running."""
        if self._host is None:
            raise RuntimeError("AgentHost is not running (call start() or use it as a context manager)")
        ref = self._children.get(name)
        if ref is None or not tell_quietly(ref, message):
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

    def thread(self, thread_id: str) -> ThreadRow:
        row: ThreadRow = self._ask("persistence", GetThread(thread_id=validate_id("thread id", thread_id)))
        return row

    def update_thread(
        self,
        thread_id: str,
        *,
        title: str | None = None,
        thread_settings: dict[str, Any] | None = None,
        turn_settings: dict[str, Any] | None = None,
    ) -> ThreadRow:
        """Rename a thread and/or merge its runtime settings: `thread_settings` go to the runtime at thread/start and
        thread/resume, `turn_settings` at every turn/start (keys and values are the runtime protocol's; a key given
        as None is removed). Kept with the thread, so a turn on another worker or after a restart gets them too."""
        message = UpdateThread(
            thread_id=validate_id("thread id", thread_id),
            title=title,
            thread_settings=thread_settings,
            turn_settings=turn_settings,
        )
        row: ThreadRow = self._ask("persistence", message)
        return row

    def send(
        self,
        thread_id: str,
        text: str,
        *,
        input: tuple[Any, ...] | None = None,
        turn_id: str | None = None,
        passthrough: bool = False,
    ) -> TurnHandle:
        """Send a message. `input`: the runtime's own turn/start input items (default: one text item of `text`;
        `text` is what the transcript records); `turn_id`: your id for the turn; `passthrough`: the handle also
        gets the runtime's notifications of the turn (`RuntimeNotice`, ids replaced by agenthost's)."""
        events = TurnEvents()
        accepted = self.submit(thread_id, text, events, input=input, turn_id=turn_id, passthrough=passthrough)
        handle = TurnHandle(accepted.turn_id, accepted.queued, events)
        with self._open_lock:  # ended handles are pruned when the dict doubles: O(1) amortised per send
            self._open[handle.turn_id] = handle
            if len(self._open) >= self._prune_open_at:
                self._open = {tid: h for tid, h in self._open.items() if not h.ended(0)}
                self._prune_open_at = max(_PRUNE_OPEN_AT_LEAST, 2 * len(self._open))
        return handle

    def submit(
        self,
        thread_id: str,
        text: str,
        sink: Any,
        *,
        input: tuple[Any, ...] | None = None,
        turn_id: str | None = None,
        passthrough: bool = False,
    ) -> TurnAccepted:
        """Send with your own event sink (an object with `put(event)`, called from the host's threads; it must not
        block): what `send` builds a TurnHandle on, and the service's control socket uses."""
        reply = Reply()
        message = SendMessage(
            thread_id=validate_id("thread id", thread_id),
            text=text,
            sink=sink,
            input=input,
            turn_id=turn_id,
            passthrough=passthrough,
            reply_to=reply,
        )
        self._tell("turns", message)  # answered once the begin is durable (begins of many sends committed together)
        try:
            accepted: TurnAccepted = reply.wait(self.config.request_timeout_s)
        except TimeoutError:
            raise HostUnavailableError(
                f"agenthost's turns did not answer within {self.config.request_timeout_s:g} s"
            ) from None
        return accepted

    def steer(self, turn_id: str, text: str, *, input: tuple[Any, ...] | None = None) -> None:
        """Add input to a running turn (the runtime's turn/steer, sent once the runtime has announced the turn);
        TurnNotActiveError when it is not running."""
        self._ask("turns", SteerTurn(turn_id=turn_id, text=text, input=input))

    def runtime_call(self, method: str, params: Any = None) -> Any:
        """Pass one request that belongs to no turn (`model/list`, `account/read` ...) to a runtime that is up and
        return its result; its error raises RuntimeCallError; none up raises NoHealthyWorkerError."""
        reply = CallAnswer()
        worker_id = self._ask("turns", RuntimeRequest(method=method, params=params, reply_to=reply))
        return reply.wait(worker_id, method, self.config.request_timeout_s + 5.0)

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

    def subscribe(self, callback: Callable[[Event], None], names: Any = None) -> Callable[[], None]:
        """Deliver the host's structured events (all, or those named) to `callback`; returns the unsubscriber."""
        return subscribe(callback, names)

    def answer_approval(self, approval_id: str, decision: Any) -> None:
        self._ask("turns", AnswerApproval(approval_id=approval_id, decision=decision))

    def interrupt(self, turn_id: str) -> None:
        self._ask("turns", InterruptTurn(turn_id=turn_id))

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
