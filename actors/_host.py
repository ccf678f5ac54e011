"""Root host supervisor: starts, watches and stops the host's ordered children.

Contract:
- Start order: persistence -> mapping -> turns (coordinator) -> pool. The pool comes last because its workers
  stream output to the coordinator from their first line; stop order is the reverse.
- A child that cannot start (e.g. the database cannot be opened) leaves the host "failed" with that error as the
  cause, the children already started stopped again; `AgentHost.start()` raises `HostStartError` with it.
- A crashed child (`ChildFailed`) or a failed pool (`PoolFailed`: every worker gave up, or restart intensity was
  exceeded) puts the host in state "failed" with the cause, in one "supervisor.decision" event
  (supervisor="host", decision="fail_host"). The host never loops restarting itself; reads keep working.
- `ShutdownHost(timeout_s)`: intake closed, active turns aborted as failed (persisted), workers stopped (stdin
  close, then SIGKILL of the group after `timeout_s`), then the coordinator, mapping and persistence stop (the last
  runs a TRUNCATE checkpoint).
- Asks go only downwards (host -> children), never up, so status reads cannot deadlock.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pykka

from actors._clock import Clock
from actors._coordinator import CoordinatorSettings, TurnCoordinator
from actors._log import decision, get_logger
from actors._mapping import MappingActor
from actors._persistence import PersistenceActor
from actors._pool import PoolSupervisor, SpecFactory
from actors._recovery import RecoveryPolicy
from protocol._messages import (
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
    ShutdownHost,
    StopPool,
)
from storage import StorageRoot

__all__ = ["HostSupervisor"]

_log = get_logger("agenthost.host")


class HostSupervisor(pykka.ThreadingActor):
    def __init__(
        self,
        *,
        root: StorageRoot,
        clock: Clock,
        wall: Callable[[], float],
        worker_count: int,
        spec_factory: SpecFactory,
        worker_policy: RecoveryPolicy,
        settings: CoordinatorSettings,
        checkpoint_interval_s: float,
        rng_seed: int,
    ) -> None:
        super().__init__()
        self._root = root
        self._clock = clock
        self._wall = wall
        self._worker_count = worker_count
        self._spec_factory = spec_factory
        self._worker_policy = worker_policy
        self._settings = settings
        self._checkpoint_interval_s = checkpoint_interval_s
        self._rng_seed = rng_seed
        self._state: HostState = "running"
        self._cause: str | None = None
        self._children: list[tuple[str, pykka.ActorRef[Any]]] = []

    def on_start(self) -> None:
        try:
            self._start_children()
        except Exception as exc:  # noqa: BLE001 - reported as the host's cause, never swallowed
            self._fail("startup", f"{type(exc).__name__}: {exc}")
            self._stop_children()

    def _start_children(self) -> None:
        me = self.actor_ref
        persistence = PersistenceActor.start(
            root=self._root, clock=self._clock, wall=self._wall,
            checkpoint_interval_s=self._checkpoint_interval_s, supervisor_ref=me,
        )
        self._children.append(("persistence", persistence))
        mapping = MappingActor.start(persistence_ref=persistence, supervisor_ref=me)
        self._children.append(("mapping", mapping))
        turns = TurnCoordinator.start(
            persistence_ref=persistence, mapping_ref=mapping, clock=self._clock, settings=self._settings,
            project_dir=lambda project_id: str(self._root.project_dir(project_id)), supervisor_ref=me,
        )
        self._children.append(("turns", turns))
        pool = PoolSupervisor.start(
            worker_count=self._worker_count, spec_factory=self._spec_factory, policy=self._worker_policy,
            clock=self._clock, output_ref=turns, listeners=[turns], parent_ref=me, rng_seed=self._rng_seed,
        )
        self._children.append(("pool", pool))
        _log.info("host.started", root=str(self._root.root), workers=self._worker_count)

    def on_receive(self, message: Any) -> Any:
        match message:
            case ChildFailed():
                self._fail(message.child, f"{message.child} crashed: {message.error}")
            case PoolFailed():
                self._fail("pool", message.reason)
            case GetHostStatus():
                return self._status()
            case ShutdownHost():
                self._shutdown(message.timeout_s)
            case GetChildren():
                return dict(self._children)
            case _:
                _log.warning("host.unknown_message", message=type(message).__name__)
        return None

    def _stop_children(self) -> None:
        for name, ref in reversed(self._children):
            try:
                ref.stop(timeout=10.0)
            except pykka.Timeout:
                _log.error("host.child_stop_timeout", child=name)

    def _fail(self, child: str, cause: str) -> None:
        if self._state != "running":
            return
        self._state, self._cause = "failed", cause
        decision(_log, supervisor="host", child=child, decision="fail_host", reason=cause)

    def _status(self) -> HostStatus:
        children = dict(self._children)

        def ask(name: str, message: Any, default: Any) -> Any:
            try:
                return children[name].ask(message, timeout=5.0)
            except (KeyError, pykka.ActorDeadError, pykka.Timeout):
                return default

        return HostStatus(
            state=self._state,
            cause=self._cause,
            workers=ask("pool", GetPoolStatus(), ()),
            active_turns=ask("turns", ListActiveTurns(), ()),
            pins=ask("mapping", GetPins(), {}),
        )

    def _shutdown(self, timeout_s: float) -> None:
        started = time.monotonic()
        children = dict(self._children)
        turns, pool = children["turns"], children["pool"]
        for message in (CloseIntake(), AbortActiveTurns(reason="agenthost shut down before the turn finished")):
            _ask_quietly(turns, message)
        _ask_quietly(pool, StopPool(timeout_s=timeout_s), timeout=timeout_s + 10.0)
        self._stop_children()
        if self._state == "running":
            self._state = "stopped"
        _log.info("host.stopped", seconds=round(time.monotonic() - started, 3))


def _ask_quietly(ref: pykka.ActorRef[Any], message: Any, timeout: float = 30.0) -> Any:
    try:
        return ref.ask(message, timeout=timeout)
    except (pykka.ActorDeadError, pykka.Timeout) as exc:
        _log.warning("host.ask_failed", message=type(message).__name__, error=repr(exc))
        return None
