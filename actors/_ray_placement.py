"""Runtimes placed on a Ray cluster: the Ray `ProcessHost` (actors._placement) of a host.

Contract:
- `RayProcessHost.connect(address, resources, root)` connects this process (the head) to the cluster once
  (`ray.init`, or the connection that already exists when it is the same cluster); an unreachable address is a
  `PlacementError`. `ray.init` runs in a thread of its own (bounded wait), so Ray never installs its SIGTERM
  handler in the application's main thread, and Ray's driver logs stay off (log_to_driver=False, level ERROR).
- Before its first runtime starts (the pool starts after persistence, which holds the root's lock) it kills every
  named actor left in the root's namespace by an earlier life of this host (event "placement.orphan_killed"): two
  hosts never share a root, so whatever holds one of its names is an orphan.
- Each worker's runtime runs in one Ray actor (`actors._ray_runtime.RuntimeHost`), named `worker-<id>` in the
  namespace `agenthost-<hash of the root>` (`namespace_for`), created with `max_restarts=0` and
  `max_task_retries=0`: Ray never restarts it or retries a call. It reserves `RayResources` (num_cpus, custom
  resources) and is scheduled with the "spread" strategy unless told otherwise. The actor is owned by the head, so
  Ray also kills it when the head dies. A name still held when a worker starts (a previous generation on its way
  out, an orphan) is killed first.
- `start()` never waits for Ray to place the actor (the worker actor must keep answering the pool's probes): it
  creates the actor, whose creation task spawns the runtime, and returns its `RayRuntime` at once; the handle's pump
  thread waits up to the spec's `startup_timeout_s` (real time) for the placement, and an actor that cannot be
  placed (no node has the resources free) or whose spawn fails ends the output with a cause naming the actor, so
  the worker reports the exit and the pool decides. Event "placement.runtime_placed" names the worker, generation,
  pid and node. Only a name still held (see above) or Ray refusing the options makes `start()` raise `OSError`.
- `kill_group(worker_id, pid)` (the pool's own kill) SIGKILLs the current runtime of that worker through its actor,
  in a background thread (the pool never blocks), and releases the actor (pid 0: not placed yet, the current one).
  `close()` releases every actor left.
- `runtime_of(worker_id)` is the current `RayRuntime` of a worker (its node: `.where`), for status and tests.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from agenthost.actors._log import get_logger
from agenthost.actors._pipes import StdoutInbox, WorkerSpec
from agenthost.actors._placement import LOOPBACK, Placement, PlacementError, RayResources
from agenthost.actors._ray_handle import READS_IN_FLIGHT, RayRuntime
from agenthost.actors._ray_runtime import RuntimeHost

__all__ = ["LOST_AFTER_S", "RayProcessHost", "namespace_for"]

_log = get_logger("agenthost.placement")
LOST_AFTER_S = 10.0  # an actor that leaves a read unanswered this much longer than its poll is lost
_CONNECT_TIMEOUT_S = 60.0
_KILL_WAIT_S = 5.0  # how long a killed actor's name may take to be free again


def namespace_for(root: Path) -> str:
    """The Ray namespace of a storage root's actors: one per root, the same in every life of its host."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return f"agenthost-{digest}"


@functools.cache
def _actor_class() -> Any:
    remote: Any = ray.remote  # its overloads do not list concurrency_groups, which it takes
    return remote(concurrency_groups={"in": 1, "out": READS_IN_FLIGHT + 1, "ctl": 2})(RuntimeHost)


def _reachable(address: str) -> None:
    """A plain TCP connect to host:port first, so a wrong address fails in seconds, not in ray.init's retries."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
    except OSError as exc:
        raise PlacementError(f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}") from None


def _quiet_sigterm_notice(record: logging.LogRecord) -> bool:
    """ray.init runs in a thread of its own, so it never replaces the application's SIGTERM handler (in the main
    thread it would install one that exits); Ray logs a warning about that, which says nothing to our users."""
    return "SIGTERM handler is not set" not in record.getMessage()


def _connect(address: str) -> None:
    if ray.is_initialized():
        current = str(ray.get_runtime_context().gcs_address)
        if address not in ("auto", current) and not address.startswith("ray://"):
            raise PlacementError(f"this process is already connected to the Ray cluster at {current}, not {address}")
        return
    if address.startswith(LOOPBACK) and ray._private.ray_constants.ENABLE_RAY_CLUSTER:
        raise PlacementError(
            f"Ray rewrites the loopback address {address!r} to this machine's network address; for a cluster "
            "bound to 127.0.0.1 set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before starting agenthost"
        )
    _reachable(address)
    failure: list[BaseException] = []
    ray_worker_log = logging.getLogger("ray._private.worker")
    if _quiet_sigterm_notice not in ray_worker_log.filters:
        ray_worker_log.addFilter(_quiet_sigterm_notice)

    def init() -> None:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # noqa: BLE001 - reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(_CONNECT_TIMEOUT_S)
    if thread.is_alive():
        raise PlacementError(f"could not connect to the Ray cluster at {address!r} within {_CONNECT_TIMEOUT_S:g} s")
    if failure:
        raise PlacementError(f"could not connect to the Ray cluster at {address!r}: {failure[0]}")


class RayProcessHost:
    """Runtimes in Ray actors on the nodes of a cluster (see the module contract)."""

    placement: Placement = "ray"

    def __init__(self, address: str, resources: RayResources, namespace: str) -> None:
        self.address = address
        self.resources = resources
        self.namespace = namespace
        self._lock = threading.Lock()
        self._runtimes: dict[int, RayRuntime] = {}
        self._swept = False
        self._sweep_lock = threading.Lock()  # held through the sweep: no runtime starts while it runs

    @classmethod
    def connect(cls, address: str, resources: RayResources, root: Path) -> RayProcessHost:
        _connect(address)
        host = cls(address, resources, namespace_for(root))
        _log.info("placement.connected", address=address, namespace=host.namespace)
        return host

    # --- names -----------------------------------------------------------------------------------------------
    def _holder(self, name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    def _kill_actor(self, actor: Any, name: str, why: str) -> None:
        """SIGKILL whatever runtime the actor hosts, then the actor; wait (bounded) until its name is free."""
        try:
            ray.get(actor.signal_group.options(concurrency_group="ctl").remote(signal.SIGKILL), timeout=2.0)
        except Exception:  # noqa: BLE001 - not started, dead or wedged: ray.kill below is the answer either way
            pass
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        _log.warning("placement.orphan_killed", namespace=self.namespace, actor=name, reason=why)
        deadline = time.monotonic() + _KILL_WAIT_S
        while self._holder(name) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill_orphans(self) -> None:
        """Kill what an earlier life of this host left in the namespace (once; called by the first `start`)."""
        with self._sweep_lock:
            if self._swept:
                return
            for entry in ray.util.list_named_actors(all_namespaces=True):
                if entry.get("namespace") == self.namespace and (actor := self._holder(entry["name"])) is not None:
                    self._kill_actor(actor, entry["name"], "left by an earlier life of this host")
            self._swept = True

    # --- ProcessHost -----------------------------------------------------------------------------------------
    def start(
        self,
        spec: WorkerSpec,
        *,
        outbox_limit_bytes: int,
        inbox: StdoutInbox,
        actor_ref: Any,
        on_error_line: Callable[[str], None],
    ) -> RayRuntime:
        name = f"worker-{spec.worker_id}"
        self.kill_orphans()
        actor = self._create(name, spec, time.monotonic() + spec.startup_timeout_s)
        runtime = RayRuntime(
            actor,
            label=f"{self.namespace}/{name}",
            worker_id=spec.worker_id,
            generation=spec.generation,
            placement_timeout_s=spec.startup_timeout_s,
            resources=self._describe_resources(),
            outbox_limit_bytes=outbox_limit_bytes,
            inbox=inbox,
            actor_ref=actor_ref,
            on_error_line=on_error_line,
            lost_after_s=LOST_AFTER_S,
            on_release=self._forget,
        )
        with self._lock:
            self._runtimes[spec.worker_id] = runtime
        return runtime

    def _create(self, name: str, spec: WorkerSpec, deadline: float) -> Any:
        options: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "max_restarts": 0,
            "max_task_retries": 0,
            "num_cpus": self.resources.num_cpus,
            "scheduling_strategy": "SPREAD" if self.resources.strategy == "spread" else "DEFAULT",
        }
        if self.resources.custom:
            options["resources"] = dict(self.resources.custom)
        while True:
            try:
                return _actor_class().options(**options).remote(spec, spawn=True)
            except ValueError as exc:  # the name is taken: a generation on its way out, or an orphan
                if "already taken" not in str(exc):
                    raise OSError(f"Ray refused to create actor {self.namespace}/{name}: {exc}") from None
                holder = self._holder(name)
                if holder is not None:
                    self._kill_actor(holder, name, f"its name is needed for generation {spec.generation}")
                if time.monotonic() >= deadline:
                    raise OSError(f"Ray actor name {self.namespace}/{name} stays taken: {exc}") from None
                time.sleep(0.05)

    def _describe_resources(self) -> str:
        custom = "".join(f", {key}={value:g}" for key, value in self.resources.custom.items())
        return f"num_cpus={self.resources.num_cpus:g}{custom}"

    def _release_quietly(self, actor: Any) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - nothing to release
            pass

    def _forget(self, runtime: RayRuntime) -> None:
        with self._lock:
            for worker_id, current in list(self._runtimes.items()):
                if current is runtime:
                    del self._runtimes[worker_id]

    def runtime_of(self, worker_id: int) -> RayRuntime | None:
        with self._lock:
            return self._runtimes.get(worker_id)

    def kill_group(self, worker_id: int, pid: int | None) -> None:
        runtime = self.runtime_of(worker_id)
        if runtime is None or (pid and runtime.pid and runtime.pid != pid):
            return
        threading.Thread(target=runtime.kill_and_wait, name=f"kill-{runtime.label}", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            runtimes = list(self._runtimes.values())
        for runtime in runtimes:
            runtime.kill_and_wait()
