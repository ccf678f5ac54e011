"""Root host supervisor: starts, restarts (with backoff) and stops the host's ordered children.

Contract:
- Children, in start order: persistence -> mapping -> turns (coordinator) -> pool (actors._children). The pool
  comes last because its workers stream output to the coordinator from their first line; every stop runs in the
  reverse order, each child within its `shutdown_timeout_s`.
- The host never blocks on a child: a child does its start-up work (opening, repairing or rebuilding the database;
  spawning runtimes) in its own thread and reports `ChildStarted` / `ChildFailed`; the next child starts only then.
  Stops run in background threads that report `ChildStopped`; each has a deadline on the injected clock, past which
  the host goes on without it. Status reads are answered at any time (state "starting" while booting).
- Strategy `rest_for_one` (default) or `one_for_all` (`one_for_one` is refused: later children hold references to
  earlier ones, so restarting one alone would leave stale references).
- A child that fails to start at boot fails the host's own start (OTP init semantics): state "failed", no retry.
- After boot, a child failure is a crashed child (`ChildFailed`, from the incarnation the host knows), a pool that
  escalated (`PoolFailed`: restart intensity exceeded, or every worker gave up) or a child that could not start.
  Each failure is answered by one `admit_restart` call on the host policy (default `HOST_POLICY`: exactly 1, 2, 4,
  8 s, then give up) and one "supervisor.decision" event (supervisor="host"):
  - "restart": the affected children (per strategy) stop, in reverse order; once they stopped and `delay_s`
    (injected clock) passed, they start again in order. When the pool goes and the coordinator stays, the
    coordinator is told `ResetWorkers`, so turns and approvals on the lost workers are reconciled at once.
    When the pool failed because every worker gave up and a fresh pool already failed once (host attempt >=
    QUARANTINE_RUNTIME_STATE_AT), the runtimes' own state (`system/runtime-state/`, `system/codex-home/`) is
    quarantined before the next attempt (decision "quarantine_runtime_state").
  - "give_up" / "escalate": every child stops in reverse order, then every caller still waiting on a turn hears it
    failed, and the host is "failed" with the cause. The root has no parent: it never loops, and reads of the
    status keep working. A failure of another child while a restart is under way is handled once it is done.
- The root cannot crash: an unexpected exception in its own handler makes the host "failed" with that cause.
- `ShutdownHost(timeout_s, done)` stops every child in reverse order, then sets `done`.
- Asks go only downwards (host -> children), never up, so status reads cannot deadlock.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import msgspec
import pykka

from agenthost.actors._children import (
    CHILD_ORDER,
    ChildDirectory,
    HostParts,
    StopJob,
    gather_status,
    start_child,
    stop_in_background,
)
from agenthost.actors._clock import Timer
from agenthost.actors._events import ChildrenRestarting
from agenthost.actors._log import decision, get_logger
from agenthost.actors._recovery import (
    QUARANTINE_RUNTIME_STATE_AT,
    ChildSpec,
    RecoveryPolicy,
    RestartHistory,
    Strategy,
    SupervisorSpec,
    admit_restart,
    children_to_restart,
    record_start,
)
from agenthost.actors._refs import tell_quietly
from agenthost.protocol._messages import (
    ChildFailed,
    ChildStarted,
    ChildStopped,
    CloseIntake,
    GetChildren,
    GetHostStatus,
    HostState,
    HostStatus,
    PoolFailed,
    RestartChildren,
    ShutdownHost,
)
from agenthost.storage import StorageError, private_mkdir, quarantine

__all__ = ["CHILD_ORDER", "HostSupervisor", "host_spec"]

_log = get_logger("agenthost.host")
_STATUS_ASK_S = 2.0  # a child's part of a status read; a child that cannot answer in time shows as unknown
_STOP_GRACE_S = 25.0  # on top of a child's shutdown timeout: its clean stop, pykka's handshake, the aftermath


def host_spec(strategy: Strategy, policy: RecoveryPolicy, shutdown_timeout_s: float) -> SupervisorSpec:
    """The host's supervisor spec; validates the strategy."""
    if strategy == "one_for_one":
        raise ValueError(
            "host strategy 'one_for_one' would leave later children with stale references; "
            "use 'rest_for_one' or 'one_for_all'"
        )
    children = tuple(ChildSpec(name=name, shutdown_timeout_s=shutdown_timeout_s) for name in CHILD_ORDER)
    return SupervisorSpec(strategy=strategy, children=children, policy=policy)


class HostSupervisor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, *, parts: HostParts, spec: SupervisorSpec, directory: ChildDirectory, rng_seed: int) -> None:
        super().__init__()
        self._parts = parts
        self._spec = spec
        self._directory = directory
        self._rng = random.Random(rng_seed)
        self._state: HostState = "starting"
        self._cause: str | None = None
        self._refs: dict[str, pykka.ActorRef[Any]] = {}
        self._incarnation = 0
        self._history = RestartHistory()
        self._restarting: tuple[str, ...] = ()  # children of the restart under way
        self._restart_timer: Timer | None = None
        self._restart_due = False
        self._to_start: list[str] = []  # the start chain: its head is starting now
        self._to_stop: list[StopJob] = []  # the stop chain: its head is stopping now
        self._stop_timer: Timer | None = None
        self._after_stop: Any = None
        self._deferred: list[tuple[str, str, str]] = []  # (child, urn, cause) failures seen during a restart
        self._shutdown_done: list[threading.Event] = []

    # --- messages -------------------------------------------------------------------------------------------
    def on_start(self) -> None:
        self._history = record_start(self._history, self._parts.clock.now())
        self._begin_start(self._spec.names)

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        except Exception as exc:  # noqa: BLE001 - the root has no parent: it reports itself failed
            _log.exception("host.crashed", error=repr(exc))
            self._give_up(f"host supervisor crashed handling {type(message).__name__}: {exc!r}")
            return None

    def _handle(self, message: Any) -> Any:
        match message:
            case ChildStarted():
                self._on_started(message.child, message.urn)
            case ChildFailed():
                self._on_child_failed(message.child, message.urn, f"{message.child} crashed: {message.error}")
            case PoolFailed():
                if "pool" in self._refs and "pool" not in self._restarting:
                    self._on_failure("pool", message.reason, workers_gave_up=message.workers_gave_up)
            case RestartChildren():
                if message.names == self._restarting and self._state == "recovering":
                    self._restart_due = True
                    self._restart_if_ready()
            case ChildStopped():
                self._on_stopped(message)
            case GetHostStatus():
                return self._status()
            case GetChildren():
                return {name: self._refs[name] for name in self._spec.names if self._directory.get(name)}
            case ShutdownHost():
                self._shutdown(message)
            case _:
                raise TypeError(f"host supervisor got an unknown message {type(message).__name__}")
        return None

    # --- starting -------------------------------------------------------------------------------------------
    def _begin_start(self, names: tuple[str, ...]) -> None:
        self._to_start = list(names)
        self._start_head()

    def _start_head(self) -> None:
        if not self._to_start:
            self._on_chain_started()
            return
        name = self._to_start[0]
        spec = self._child_spec(name)
        try:
            self._refs[name] = start_child(
                name, self._parts, self._refs, self.actor_ref, self._rng, spec.shutdown_timeout_s
            )
        except Exception as exc:  # noqa: BLE001 - a child that cannot even be created failed to start
            self._on_child_failed(name, None, f"{name} could not start: {exc!r}")

    def _on_started(self, name: str, urn: str) -> None:
        ref = self._refs.get(name)
        if not self._to_start or self._to_start[0] != name or ref is None or ref.actor_urn != urn:
            return  # a stale incarnation
        self._directory.set(name, ref)
        self._to_start.pop(0)
        self._start_head()

    def _on_chain_started(self) -> None:
        names = self._restarting or self._spec.names
        _log.info("host.children_started", children=list(names), root=str(self._parts.root.root))
        if self._state in ("starting", "recovering"):
            self._state = "running"
        self._restarting = ()
        deferred, self._deferred = self._deferred, []
        for child, urn, cause in deferred:
            ref = self._refs.get(child)
            if ref is not None and ref.actor_urn == urn:  # that incarnation still stands, dead: decide now
                self._on_failure(child, cause)

    # --- failures -------------------------------------------------------------------------------------------
    def _on_child_failed(self, child: str, urn: str | None, cause: str) -> None:
        """`urn` None: the child could not even be created (it is the head of the start chain)."""
        ref = self._refs.get(child)
        if urn is None:
            if not self._to_start or self._to_start[0] != child:
                return
        elif ref is None or ref.actor_urn != urn:
            return  # an incarnation that is already gone
        if self._state == "starting":  # OTP init: a child that fails at boot fails the host, no retry
            self._to_start = []
            decision(
                _log,
                supervisor="host",
                child=child,
                decision="give_up",
                reason=f"{cause}; a child that fails at boot is not restarted",
            )
            self._give_up(f"agenthost failed to start: {cause}")
            return
        if self._to_start and self._to_start[0] == child:  # it failed while (re)starting: the chain ends here
            self._to_start = []
            self._restarting = ()
            child, urn, cause = self._earliest_failure(child, urn, cause)
        self._on_failure(child, cause, urn=urn)

    def _earliest_failure(self, child: str, urn: str | None, cause: str) -> tuple[str, str | None, str]:
        """The restart chain failed: decide about the earliest failed child (in start order) that still stands dead,
        this one or one deferred meanwhile. A child further down often failed only because an earlier one is dead
        (mapping hydrating from a persistence that crashed during the restart)."""
        order = self._spec.names.index
        standing = [d for d in self._deferred if (ref := self._refs.get(d[0])) is not None and ref.actor_urn == d[1]]
        earlier = [d for d in standing if order(d[0]) < order(child)]
        if not earlier:
            return child, urn, cause
        first = min(earlier, key=lambda failure: order(failure[0]))
        self._deferred.remove(first)
        return first

    def _on_failure(self, child: str, cause: str, *, workers_gave_up: bool = False, urn: str | None = None) -> None:
        if self._state in ("failed", "stopping", "stopped") or child in self._restarting:
            return
        if self._restarting or self._to_stop or self._to_start:  # one restart at a time: decide this one after it
            self._deferred.append((child, urn or self._refs[child].actor_urn, cause))
            return
        verdict = admit_restart(self._spec.policy, self._history, self._parts.clock.now(), self._rng)
        affected = children_to_restart(self._spec, child)
        if verdict.action == "restart":  # acted on first, then reported: its timer exists before anyone sees it
            self._history = verdict.history
            self._state = "recovering"
            self._restarting, self._restart_due = affected, False
            quarantine_first = workers_gave_up and verdict.attempt >= QUARANTINE_RUNTIME_STATE_AT
            self._begin_stop(
                affected,
                f"agenthost is restarting after a failure ({cause})",
                then=lambda: self._stopped_for_restart(cause, verdict.attempt, quarantine_first),
            )
            ref, due = self.actor_ref, RestartChildren(names=affected)
            self._restart_timer = self._parts.clock.call_later(
                verdict.delay_s, lambda: tell_quietly(ref, due), name="host-restart"
            )
        decision(
            _log,
            supervisor="host",
            child=child,
            decision=verdict.action,
            reason=f"{cause}; {verdict.reason}",
            attempt=verdict.attempt,
            delay_s=verdict.delay_s,
            restarts=list(affected),
        )
        if verdict.action != "restart":
            self._give_up(cause)

    def _stopped_for_restart(self, cause: str, attempt: int, quarantine_first: bool) -> None:
        if quarantine_first:
            self._quarantine_runtime_state(cause, attempt)
        self._restart_if_ready()

    def _restart_if_ready(self) -> None:
        """Start the restarting children once they all stopped AND their delay passed."""
        if self._state != "recovering" or not self._restart_due or self._to_stop:
            return
        self._restart_due, self._restart_timer = False, None
        self._history = record_start(self._history, self._parts.clock.now())
        _log.record(ChildrenRestarting(children=list(self._restarting), attempt=self._history.attempt))
        self._begin_start(self._restarting)

    def _give_up(self, cause: str) -> None:
        if self._state in ("failed", "stopped"):
            return
        self._state, self._cause = "failed", cause
        if self._restart_timer is not None:
            self._restart_timer.cancel()
        self._to_start, self._restarting = [], ()
        message = (
            f"agenthost failed: {cause}. Nothing stored is lost: the transcript shows each turn's final "
            "state after the next start."
        )
        self._begin_stop(
            self._spec.names,
            f"agenthost failed: {cause}",
            then=lambda: self._parts.registry.fail_all(message),
            force=True,
        )

    def _quarantine_runtime_state(self, cause: str, attempt: int) -> None:
        """Runtimes kept failing to start even after a fresh pool: move their own state (stale internals) aside
        before the next attempt. Conversations are not lost: the transcripts and the DB keep them, and threads
        whose runtime copy is gone are recreated (said in the transcript)."""
        root = self._parts.root
        paths = [path for path in (root.runtime_state_dir, root.system_dir / "codex-home") if path.exists()]
        try:
            report = quarantine(root, paths, "runtime state after repeated start failures", self._parts.wall())
            private_mkdir(root.runtime_state_dir)
        except StorageError as exc:
            _log.error("host.quarantine_failed", error=str(exc))
            return
        decision(
            _log,
            supervisor="host",
            child="pool",
            decision="quarantine_runtime_state",
            reason=f"{cause}; still failing at host attempt {attempt}: moved {list(report.moved)} to {report.into}",
            attempt=attempt,
        )

    # --- stopping -------------------------------------------------------------------------------------------
    def _begin_stop(self, names: tuple[str, ...], reason: str, *, then: Any, force: bool = False) -> None:
        """Stop `names` (those running) in reverse start order, one after the other, then call `then()`."""
        if self._to_stop and not force:
            raise RuntimeError("a stop chain is already under way")
        self._to_start = []
        jobs = list(self._to_stop)  # stops already under way or queued go on; their head reports as usual
        for name in reversed(self._spec.names):
            if name in names and name in self._refs:
                self._directory.remove(name)
                self._incarnation += 1
                keeps_turns = name == "pool" and "turns" not in names and "turns" in self._refs
                jobs.append(
                    StopJob(
                        name=name,
                        ref=self._refs.pop(name),
                        incarnation=self._incarnation,
                        timeout_s=self._child_spec(name).shutdown_timeout_s,
                        reason=reason,
                        turns_ref=self._refs["turns"] if keeps_turns else None,
                    )
                )
        if not self._to_stop and "turns" in names and jobs and "turns" in {job.name for job in jobs}:
            turns_job = next(job for job in jobs if job.name == "turns")
            jobs[0] = msgspec.structs.replace(jobs[0], abort_turns=turns_job.ref)  # open turns end before any stop
        order = list(reversed(self._spec.names))
        head, rest = jobs[:1] if self._to_stop else [], jobs[1:] if self._to_stop else jobs
        rest.sort(key=lambda job: order.index(job.name))
        already_running = bool(self._to_stop)
        self._to_stop, self._after_stop = [*head, *rest], then
        if not already_running:
            self._stop_head()

    def _stop_head(self) -> None:
        if not self._to_stop:
            then, self._after_stop = self._after_stop, None
            if then is not None:
                then()
            return
        job = self._to_stop[0]
        stop_in_background(job, self.actor_ref)
        ref, late = self.actor_ref, ChildStopped(child=job.name, incarnation=job.incarnation, timed_out=True)
        self._stop_timer = self._parts.clock.call_later(
            job.timeout_s + _STOP_GRACE_S, lambda: tell_quietly(ref, late), name="child-stop"
        )

    def _on_stopped(self, message: ChildStopped) -> None:
        if not self._to_stop or self._to_stop[0].incarnation != message.incarnation:
            return
        if message.timed_out:
            _log.error("host.child_stop_timeout", child=message.child)
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        self._to_stop.pop(0)
        self._stop_head()

    def _shutdown(self, message: ShutdownHost) -> None:
        self._shutdown_done.append(message.done)
        if self._state == "stopped":
            message.done.set()
            return
        if self._restart_timer is not None:
            self._restart_timer.cancel()
        turns = self._refs.get("turns")
        if turns is not None:
            tell_quietly(turns, CloseIntake())
        final: HostState = "failed" if self._state == "failed" else "stopped"
        self._state, self._restarting = "stopping", ()
        self._begin_stop(
            self._spec.names,
            "agenthost shut down before the turn finished",
            then=lambda: self._stopped(final),
            force=True,
        )

    def _stopped(self, final: HostState) -> None:
        self._state = final
        _log.info("host.stopped", state=final)
        for done in self._shutdown_done:
            done.set()

    # --- status -------------------------------------------------------------------------------------------
    def _status(self) -> HostStatus:
        parts = gather_status(self._directory, _STATUS_ASK_S)
        return msgspec.structs.replace(parts, state=self._state, cause=self._cause, restarting=self._restarting)

    def _child_spec(self, name: str) -> ChildSpec:
        return next(child for child in self._spec.children if child.name == name)
