"""The host's children: what each needs to start, how each is stopped without blocking the host, and the directory
through which the embedding API finds them.

Contract:
- `CHILD_ORDER` is the start order (persistence -> mapping -> turns -> pool); stops run in the reverse order.
- `HostParts` holds everything the host supervisor hands to its children (clock, settings, seams); `start_child`
  starts one child by name, given the refs of the children started before it. Starting returns at once: the
  child does its start-up work in its own thread and reports `ChildStarted` or `ChildFailed`.
- `stop_in_background(job, host_ref)` stops one child in a short-lived thread and tells the host
  `ChildStopped(child, incarnation)` when done, so the host's mailbox is never blocked by a slow stop. When the
  coordinator goes too, the first job of a chain first has it end its open turns as failed and persisted (before
  any runtime stops); the job then asks the child what a clean stop needs (the pool stops its runtimes), stops the
  actor, then tells the survivors what they lost (the coordinator hears
  `ResetWorkers` when the pool went and it stays). Each ask and the stop are bounded by the child's
  `shutdown_timeout_s` plus a grace; the host also keeps its own deadline on the whole stop.
- `gather_status(directory, timeout_s)` asks the children for their parts of the host's status in parallel; one
  that cannot answer within `timeout_s` shows as unknown.
- `ChildDirectory` is a thread-safe name -> ref map the host keeps current (a child is listed once it started and
  removed before it stops), read by the embedding API without asking the host.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import pykka

from agenthost.actors._clock import Clock
from agenthost.actors._coordinator import TurnCoordinator
from agenthost.actors._log import get_logger
from agenthost.actors._mapping import MappingActor
from agenthost.actors._persistence import PersistenceActor
from agenthost.actors._placement import LOCAL, ProcessHost
from agenthost.actors._pool import PoolSupervisor, SpecFactory
from agenthost.actors._recovery import WORKER_WATCH, RecoveryPolicy, RestartType, WorkerWatch
from agenthost.actors._refs import FaultHook, ask, tell_quietly
from agenthost.actors._turns import CoordinatorSettings, TurnRegistry
from agenthost.protocol._messages import (
    AbortActiveTurns,
    ChildStopped,
    GetPins,
    GetPoolStatus,
    HostStatus,
    ListActiveTurns,
    ResetWorkers,
    StopPool,
)
from agenthost.storage import StorageRoot

__all__ = [
    "CHILD_ORDER",
    "ChildDirectory",
    "HostParts",
    "StopJob",
    "gather_status",
    "start_child",
    "stop_in_background",
]

_log = get_logger("agenthost.host")
CHILD_ORDER = ("persistence", "mapping", "turns", "pool")
_STOP_GRACE_S = 10.0  # pykka's own stop handshake on top of a child's shutdown timeout


class HostParts(msgspec.Struct, kw_only=True):
    """What the host supervisor gives its children (live objects: never serialised)."""

    root: StorageRoot
    clock: Clock
    wall: Callable[[], float]
    worker_count: int
    spec_factory: SpecFactory
    worker_policy: RecoveryPolicy
    worker_restart: RestartType = "permanent"
    watch: WorkerWatch = WORKER_WATCH
    settings: CoordinatorSettings
    checkpoint_interval_s: float
    registry: TurnRegistry
    storage_vfs: str | None = None
    transcript_fs: Any = None
    prepare_resume: Callable[[str, int], bool] | None = None
    fault_hook: FaultHook | None = None
    process_host: ProcessHost = LOCAL  # where the workers' runtimes run (actors._placement)


def start_child(
    name: str,
    parts: HostParts,
    refs: dict[str, pykka.ActorRef[Any]],
    host: pykka.ActorRef[Any],
    rng: random.Random,
    shutdown_timeout_s: float,
) -> pykka.ActorRef[Any]:
    """Start child `name`; `refs` holds the children started before it."""
    hook = parts.fault_hook
    if name == "persistence":
        return PersistenceActor.start(
            root=parts.root,
            clock=parts.clock,
            wall=parts.wall,
            checkpoint_interval_s=parts.checkpoint_interval_s,
            vfs=parts.storage_vfs,
            transcript_fs=parts.transcript_fs,
            supervisor_ref=host,
            fault_hook=hook,
        )
    if name == "mapping":
        return MappingActor.start(
            persistence_ref=refs["persistence"],
            supervisor_ref=host,
            fault_hook=hook,
            ask_timeout_s=parts.settings.ask_timeout_s,
        )
    if name == "turns":
        root = parts.root
        return TurnCoordinator.start(
            persistence_ref=refs["persistence"],
            mapping_ref=refs["mapping"],
            clock=parts.clock,
            settings=parts.settings,
            registry=parts.registry,
            prepare_resume=parts.prepare_resume,
            project_dir=lambda project_id: str(root.project_dir(project_id)),
            supervisor_ref=host,
            fault_hook=hook,
        )
    if name == "pool":
        return PoolSupervisor.start(
            worker_count=parts.worker_count,
            spec_factory=parts.spec_factory,
            policy=parts.worker_policy,
            worker_restart=parts.worker_restart,
            clock=parts.clock,
            output_ref=refs["turns"],
            listeners=[refs["turns"]],
            parent_ref=host,
            rng_seed=rng.randrange(2**32),
            shutdown_timeout_s=shutdown_timeout_s,
            watch=parts.watch,
            fault_hook=hook,
            process_host=parts.process_host,
        )
    raise ValueError(f"unknown child {name!r}; children are {CHILD_ORDER}")


class StopJob(msgspec.Struct, frozen=True, kw_only=True):
    """One child to stop: its ref, its incarnation, its timeout, and who must hear about it."""

    name: str
    ref: Any
    incarnation: int
    timeout_s: float
    reason: str
    abort_turns: Any = None  # the coordinator, when it goes too: it ends its open turns first (failed, persisted)
    turns_ref: Any = None  # the coordinator, when it stays and the pool goes: it hears ResetWorkers


def stop_in_background(job: StopJob, host: pykka.ActorRef[Any]) -> None:
    threading.Thread(target=_stop, args=(job, host), name=f"agenthost-stop-{job.name}", daemon=True).start()


def _stop(job: StopJob, host: pykka.ActorRef[Any]) -> None:
    bound_s = job.timeout_s + _STOP_GRACE_S
    try:
        if job.abort_turns is not None:
            _ask_quietly(job.abort_turns, AbortActiveTurns(reason=job.reason), bound_s)
        if job.name == "pool":
            _ask_quietly(job.ref, StopPool(timeout_s=job.timeout_s), bound_s)
        try:
            job.ref.stop(block=True, timeout=bound_s)
        except pykka.ActorDeadError:
            pass  # it crashed or stopped already
        except pykka.Timeout:
            _log.error("host.child_stop_timeout", child=job.name, timeout_s=bound_s)
        if job.turns_ref is not None:
            _ask_quietly(job.turns_ref, ResetWorkers(reason=job.reason), bound_s)
    finally:
        tell_quietly(host, ChildStopped(child=job.name, incarnation=job.incarnation))


def _ask_quietly(ref: pykka.ActorRef[Any], message: Any, timeout_s: float) -> Any:
    try:
        return ask(ref, message, timeout_s)
    except Exception as exc:  # noqa: BLE001 - a child that fails while stopping is stopped anyway
        _log.warning("host.ask_failed", message=type(message).__name__, error=repr(exc))
        return None


class ChildDirectory:
    """The running children by name (see the module contract)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[str, pykka.ActorRef[Any]] = {}

    def set(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        with self._lock:
            self._refs[name] = ref

    def remove(self, name: str) -> None:
        with self._lock:
            self._refs.pop(name, None)

    def get(self, name: str) -> pykka.ActorRef[Any] | None:
        with self._lock:
            return self._refs.get(name)

    def snapshot(self) -> dict[str, pykka.ActorRef[Any]]:
        with self._lock:
            return dict(self._refs)


def gather_status(directory: ChildDirectory, timeout_s: float) -> HostStatus:
    """The children's parts of the host's status, asked in parallel, each waited for at most `timeout_s`; a child
    that cannot answer shows as unknown (logged): its supervisor decides about it. State and cause are the host's."""
    asks = (("pool", GetPoolStatus()), ("turns", ListActiveTurns()), ("mapping", GetPins()))
    futures = {}
    for name, message in asks:
        ref = directory.get(name)
        if ref is not None:
            try:
                futures[name] = ref.ask(message, block=False)
            except pykka.ActorDeadError:
                pass
    answers: dict[str, Any] = {}
    for name, future in futures.items():
        try:
            answers[name] = future.get(timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a child that cannot answer shows as unknown; its supervisor decides
            _log.warning("host.status_unanswered", child=name)
    return HostStatus(
        state="running",
        workers=answers.get("pool", ()),
        active_turns=answers.get("turns", ()),
        pins=answers.get("mapping", {}),
    )
