"""Root host supervisor: starts, restarts (with backoff) and stops the host's ordered children.

Contract:
- Children, in start order: persistence -> mapping -> turns (coordinator) -> pool. The pool comes last because its
  workers stream output to the coordinator from their first line; every stop runs in the reverse order, each
  child within its `shutdown_timeout_s`.
- Strategy `rest_for_one` (default) or `one_for_all` (`one_for_one` is refused: later children hold references to
  earlier ones, so restarting one alone would leave stale references).
- A child that fails to start at boot fails the host's own start (OTP init semantics): state "failed", no retry.
- After boot, a child failure is a crashed child (`ChildFailed`), a pool that escalated (`PoolFailed`: restart intensity
  exceeded, or every worker gave up) or a child that could not start. Each failure is answered by one
  `admit_restart` call on the host policy (default `HOST_POLICY`: exactly 1, 2, 4, 8 s, then give up) and one
  "supervisor.decision" event (supervisor="host"):
  - "restart": the affected children (per strategy) stop now, in reverse order; after `delay_s` (injected clock)
    they start again in order. While the pool is down the coordinator is told `ResetWorkers`, so turns and
    approvals on the lost workers are reconciled at once.
    When the pool failed because every worker gave up, and a fresh pool already failed once (attempt >= 2), the
    runtimes' own state (`system/runtime-state/`, `system/codex-home/`) is quarantined before the next attempt
    (decision "quarantine_runtime_state"): stale runtime internals are the usual cause of runtimes that cannot start.
  - "give_up" / "escalate": every child stops in reverse order, every caller still waiting on a turn hears it
    failed, and the host is "failed" with the cause. The root
    has no parent: it never loops, and reads of the status keep working.
- Asks go only downwards (host -> children), never up, so status reads cannot deadlock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pykka

from agenthost.actors._clock import Clock, Timer
from agenthost.actors._coordinator import TurnCoordinator
from agenthost.actors._log import decision, get_logger
from agenthost.actors._mapping import MappingActor
from agenthost.actors._persistence import PersistenceActor
from agenthost.actors._pool import PoolSupervisor, SpecFactory
from agenthost.actors._recovery import (
    ChildSpec,
    RecoveryPolicy,
    RestartHistory,
    RestartType,
    Strategy,
    SupervisorSpec,
    admit_restart,
    children_to_restart,
    record_start,
)
from agenthost.actors._refs import tell_quietly, unknown_message
from agenthost.actors._turns import CoordinatorSettings, TurnRegistry
from agenthost.protocol._messages import (
    AbortActiveTurns,
    ChildFailed,
    CloseIntake,
    GetChildren,
    GetHostStatus,
    GetPins,
    GetPoolStatus,
    HostState,
    HostStatus,
    ListActiveTurns,
    PoolFailed,
    ResetWorkers,
    RestartChildren,
    ShutdownHost,
    StopPool,
)
from agenthost.storage import StorageError, StorageRoot, quarantine

__all__ = ["HostSupervisor", "host_spec"]

_log = get_logger("agenthost.host")
CHILD_ORDER = ("persistence", "mapping", "turns", "pool")


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

    def __init__(
        self,
        *,
        root: StorageRoot,
        clock: Clock,
        wall: Callable[[], float],
        worker_count: int,
        spec_factory: SpecFactory,
        worker_policy: RecoveryPolicy,
        worker_restart: RestartType = "permanent",
        max_consecutive_timeouts: int = 3,
        settings: CoordinatorSettings,
        checkpoint_interval_s: float,
        rng_seed: int,
        spec: SupervisorSpec,
        storage_vfs: str | None = None,
        transcript_fs: Any = None,
        prepare_resume: Callable[[str, int], bool] | None = None,
    ) -> None:
        super().__init__()
        self._root = root
        self._clock = clock
        self._wall = wall
        self._worker_count = worker_count
        self._spec_factory = spec_factory
        self._worker_policy = worker_policy
        self._worker_restart = worker_restart
        self._max_consecutive_timeouts = max_consecutive_timeouts
        self._settings = settings
        self._checkpoint_interval_s = checkpoint_interval_s
        self._rng = random.Random(rng_seed)
        self._rng_seed = rng_seed
        self._spec = spec
        self._storage_vfs = storage_vfs
        self._prepare_resume = prepare_resume
        self._transcript_fs = transcript_fs
        self._registry = TurnRegistry()
        self._state: HostState = "running"
        self._cause: str | None = None
        self._children: dict[str, pykka.ActorRef[Any]] = {}
        self._history = RestartHistory()
        self._restarting: tuple[str, ...] = ()
        self._timer: Timer | None = None

    # --- starting children ----------------------------------------------------------------------------------
    def on_start(self) -> None:
        self._history = record_start(self._history, self._clock.now())
        self._start_children(self._spec.names, booting=True)

    def _start_children(self, names: tuple[str, ...], *, booting: bool = False) -> None:
        for name in names:
            try:
                self._children[name] = self._start_child(name)
            except Exception as exc:  # noqa: BLE001 - a child that cannot start is a child failure
                cause = f"{name} could not start: {type(exc).__name__}: {exc}"
                _log.error("host.child_start_failed", child=name, error=repr(exc))
                if booting:  # OTP: a supervisor whose child fails in init does not start; nothing to retry
                    self._state, self._cause = "failed", cause
                    self._stop_children(self._spec.names, f"agenthost failed to start: {cause}")
                    decision(
                        _log,
                        supervisor="host",
                        child=name,
                        decision="give_up",
                        reason=f"{cause}; a child that fails at boot is not restarted",
                    )
                else:
                    self._on_failure(name, cause)
                return
        _log.info("host.children_started", children=list(names), root=str(self._root.root))

    def _start_child(self, name: str) -> pykka.ActorRef[Any]:
        me, refs = self.actor_ref, self._children
        if name == "persistence":
            return PersistenceActor.start(
                root=self._root,
                clock=self._clock,
                wall=self._wall,
                checkpoint_interval_s=self._checkpoint_interval_s,
                vfs=self._storage_vfs,
                transcript_fs=self._transcript_fs,
                supervisor_ref=me,
            )
        if name == "mapping":
            return MappingActor.start(persistence_ref=refs["persistence"], supervisor_ref=me)
        if name == "turns":
            return TurnCoordinator.start(
                persistence_ref=refs["persistence"],
                mapping_ref=refs["mapping"],
                clock=self._clock,
                settings=self._settings,
                registry=self._registry,
                prepare_resume=self._prepare_resume,
                project_dir=lambda project_id: str(self._root.project_dir(project_id)),
                supervisor_ref=me,
            )
        return PoolSupervisor.start(
            worker_count=self._worker_count,
            spec_factory=self._spec_factory,
            policy=self._worker_policy,
            worker_restart=self._worker_restart,
            clock=self._clock,
            output_ref=refs["turns"],
            listeners=[refs["turns"]],
            parent_ref=me,
            rng_seed=self._rng.randrange(2**32),
            shutdown_timeout_s=self._child_spec("pool").shutdown_timeout_s,
            max_consecutive_timeouts=self._max_consecutive_timeouts,
        )

    def _child_spec(self, name: str) -> ChildSpec:
        return next(child for child in self._spec.children if child.name == name)

    # --- messages -------------------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        match message:
            case ChildFailed():
                self._on_failure(message.child, f"{message.child} crashed: {message.error}")
            case PoolFailed():
                self._on_failure("pool", message.reason, workers_gave_up=message.workers_gave_up)
            case RestartChildren():
                self._on_restart_due(message.names)
            case GetHostStatus():
                return self._status()
            case GetChildren():
                return dict(self._children)
            case ShutdownHost():
                self._shutdown(message.timeout_s)
            case _:
                unknown_message("host supervisor", message)
        return None

    # --- failures -------------------------------------------------------------------------------------------
    def _on_failure(self, child: str, cause: str, *, workers_gave_up: bool = False) -> None:
        if self._state in ("failed", "stopped") or child in self._restarting:
            return  # already down, or already being restarted
        now = self._clock.now()
        verdict = admit_restart(self._spec.policy, self._history, now, self._rng)
        affected = children_to_restart(self._spec, child)
        if verdict.action == "restart":
            self._history = verdict.history
            self._restarting = affected
            self._stop_children(affected, f"agenthost is restarting after a failure ({cause})")
            if workers_gave_up and verdict.attempt >= 2:
                self._quarantine_runtime_state(cause, verdict.attempt)
            ref, due = self.actor_ref, RestartChildren(names=affected)
            self._timer = self._clock.call_later(verdict.delay_s, lambda: tell_quietly(ref, due))
        else:
            self._state, self._cause = "failed", cause
            self._stop_children(self._spec.names, f"agenthost failed: {cause}")
            self._registry.fail_all(
                f"agenthost failed: {cause}. Nothing stored is lost: the transcript shows "
                "each turn's final state after the next start."
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

    def _quarantine_runtime_state(self, cause: str, attempt: int) -> None:
        """Runtimes kept failing to start even after a fresh pool: move their own state (stale internals) aside
        before the next attempt. Conversations are not lost: the transcripts and the DB keep them, and threads
        whose runtime copy is gone are recreated (said in the transcript)."""
        system = self._root.system_dir
        paths = [path for path in (self._root.runtime_state_dir, system / "codex-home") if path.exists()]
        try:
            report = quarantine(self._root, paths, "runtime state after repeated start failures", self._wall())
            self._root.runtime_state_dir.mkdir(parents=True, exist_ok=True)
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

    def _on_restart_due(self, names: tuple[str, ...]) -> None:
        if self._state != "running" or names != self._restarting:
            return
        self._restarting, self._timer = (), None
        self._history = record_start(self._history, self._clock.now())
        _log.info("host.restarting_children", children=list(names), attempt=self._history.attempt)
        self._start_children(names)

    def _stop_children(self, names: tuple[str, ...], reason: str) -> None:
        """Stop `names` in reverse start order; open turns end with `reason`; survivors learn what they lost."""
        turns = self._children.get("turns")
        if turns is not None and "turns" in names:
            _ask_quietly(turns, AbortActiveTurns(reason=reason))
        for name in reversed(self._spec.names):
            if name in names and name in self._children:
                self._stop_child(name, self._children.pop(name))
        if "pool" in names and "turns" not in names and turns is not None:
            _ask_quietly(turns, ResetWorkers(reason=reason))

    def _stop_child(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        timeout_s = self._child_spec(name).shutdown_timeout_s
        if name == "pool":
            _ask_quietly(ref, StopPool(timeout_s=timeout_s), timeout=timeout_s + 10.0)
        try:
            ref.stop(timeout=timeout_s + 10.0)
        except pykka.Timeout:
            _log.error("host.child_stop_timeout", child=name, timeout_s=timeout_s)

    # --- status and shutdown --------------------------------------------------------------------------------
    def _status(self) -> HostStatus:
        def ask(name: str, message: Any, default: Any) -> Any:
            ref = self._children.get(name)
            if ref is None:
                return default
            try:
                return ref.ask(message, timeout=5.0)
            except (pykka.ActorDeadError, pykka.Timeout):
                return default

        state: HostState = "recovering" if self._restarting and self._state == "running" else self._state
        return HostStatus(
            state=state,
            cause=self._cause,
            workers=ask("pool", GetPoolStatus(), ()),
            active_turns=ask("turns", ListActiveTurns(), ()),
            pins=ask("mapping", GetPins(), {}),
            restarting=self._restarting,
        )

    def _shutdown(self, timeout_s: float) -> None:
        started = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
        turns = self._children.get("turns")
        if turns is not None:
            _ask_quietly(turns, CloseIntake())
        self._stop_children(self._spec.names, "agenthost shut down before the turn finished")
        if self._state == "running":
            self._state = "stopped"
        _log.info("host.stopped", seconds=round(time.monotonic() - started, 3))


def _ask_quietly(ref: pykka.ActorRef[Any], message: Any, timeout: float = 30.0) -> Any:
    try:
        return ref.ask(message, timeout=timeout)
    except (pykka.ActorDeadError, pykka.Timeout) as exc:
        _log.warning("host.ask_failed", message=type(message).__name__, error=repr(exc))
        return None
