"""The pool supervisor's watch on its workers: health reports, kills and probes (mixed into actors._pool).

Contract (the thresholds are `WorkerWatch`'s, actors._recovery):
- A `WorkerHealth` of the current generation: `stalled` (the runtime stopped reading its stdin) kills the runtime at
  once; a worker still starting is left alone otherwise; a report that is not `degraded` makes a degraded worker
  "ready" again (event "pool.worker_recovered", listeners told); `max_consecutive_timeouts` timeouts in a row kill
  it; fewer make a ready worker "degraded" (decision "degrade", listeners told: no new pins go to it).
- A kill (decision "kill") tells the worker actor `KillRuntime` and SIGKILLs the runtime's process group by the pid
  the pool was told at spawn, through its `ProcessHost` (actors._placement); the exit that follows is decided as
  any other.
- Every `probe_interval_s` (injected clock) each worker actor that is starting, ready or degraded gets a `Probe`;
  a `ProbeReply` to the last one (same generation and seq) clears its count. `missed_probes` unanswered in a row
  mean the worker actor is wedged: the pool kills its runtime, stops the actor without waiting for it, and decides
  the exit itself (a wedged actor cannot report it). No probe goes out while the pool stops.
"""

from __future__ import annotations

from typing import Any

import msgspec

from agenthost.actors._clock import Clock, Timer
from agenthost.actors._log import decision, get_logger
from agenthost.actors._placement import ProcessHost
from agenthost.actors._recovery import RestartHistory, WorkerWatch, should_kill_for_timeouts, worker_wedged
from agenthost.actors._refs import tell_quietly
from agenthost.protocol._messages import (
    KillRuntime,
    Probe,
    ProbeReply,
    ProbeTick,
    WorkerExited,
    WorkerHealth,
    WorkerState,
    WorkerStatus,
)

__all__ = ["Slot", "WorkerWatching"]

_log = get_logger("agenthost.pool")


class Slot(msgspec.Struct):
    worker_id: int
    state: WorkerState = "starting"
    generation: int = 0
    ref: Any = None
    pid: int | None = None
    history: RestartHistory = RestartHistory()
    restarts: int = 0
    next_restart_at: float | None = None
    last_exit: str | None = None
    timer: Timer | None = None
    operator: Any = None  # (reason, repair) of an operator restart under way
    last_repair: str | None = None  # what the last operator repair did
    probe_seq: int = 0  # the last probe sent
    probe_answered: bool = True  # the last probe was answered
    missed_probes: int = 0

    @property
    def child(self) -> str:
        return f"worker-{self.worker_id}"

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            worker_id=self.worker_id,
            state=self.state,
            generation=self.generation,
            pid=self.pid,
            attempt=self.history.attempt,
            restarts=self.restarts,
            next_restart_at=self.next_restart_at,
            last_exit=self.last_exit,
            last_repair=self.last_repair,
        )


class WorkerWatching:
    """Health, kills and probes of the pool's workers (the base of actors._pool's `PoolSupervisor`, which sets the
    state below in its `__init__` and provides `_current`, `_notify` and `_on_exited`)."""

    actor_ref: Any
    _slots: dict[int, Slot]
    _clock: Clock
    _watch: WorkerWatch
    _stopping: bool
    _probe_timer: Timer | None
    _process_host: ProcessHost

    def _current(self, worker_id: int, generation: int) -> Slot | None:
        raise NotImplementedError

    def _notify(self, message: Any) -> None:
        raise NotImplementedError

    def _on_exited(self, message: WorkerExited) -> None:
        raise NotImplementedError

    def _on_health(self, message: WorkerHealth) -> None:
        slot = self._current(message.worker_id, message.generation)
        if slot is None or slot.state not in ("starting", "ready", "degraded"):
            return
        if message.stalled:
            self._kill(slot, message.reason)
            return
        if slot.state == "starting":
            return
        if not message.degraded:
            slot.state = "ready"
            _log.info("pool.worker_recovered", worker=slot.worker_id)
            self._notify(message)
            return
        if should_kill_for_timeouts(self._watch, message.consecutive_timeouts):
            limit = self._watch.max_consecutive_timeouts
            self._kill(slot, f"{message.consecutive_timeouts} calls in a row timed out (max {limit}): {message.reason}")
            return
        if slot.state == "ready":
            slot.state = "degraded"
            decision(
                _log,
                supervisor="pool",
                child=slot.child,
                decision="degrade",
                reason=message.reason,
                attempt=slot.history.attempt,
                delay_s=0.0,
                generation=slot.generation,
            )
            self._notify(message)

    def _kill(self, slot: Slot, reason: str) -> None:
        """Stop trusting the worker: SIGKILL its runtime's group; the exit that follows is decided as usual."""
        decision(
            _log,
            supervisor="pool",
            child=slot.child,
            decision="kill",
            reason=reason,
            attempt=slot.history.attempt,
            delay_s=0.0,
            generation=slot.generation,
        )
        tell_quietly(slot.ref, KillRuntime(reason=reason))
        self._killpg(slot)

    def _killpg(self, slot: Slot) -> None:
        """The pool's own kill of a worker's runtime, by the pid it was told (on a cluster: through its Ray actor)."""
        self._process_host.kill_group(slot.worker_id, slot.pid)

    # --- probes: the pool's own deadline on every worker actor ----------------------------------------------
    def _schedule_probe(self) -> None:
        ref, tick = self.actor_ref, ProbeTick()
        self._probe_timer = self._clock.call_later(
            self._watch.probe_interval_s, lambda: tell_quietly(ref, tick), name="probe"
        )

    def _on_probe_tick(self) -> None:
        if self._stopping:
            return
        for slot in self._slots.values():
            if slot.ref is None or slot.state not in ("starting", "ready", "degraded"):
                continue
            if not slot.probe_answered:
                slot.missed_probes += 1
                if worker_wedged(self._watch, slot.missed_probes):
                    self._on_wedged(slot)
                    continue
            slot.probe_seq += 1
            slot.probe_answered = False
            tell_quietly(slot.ref, Probe(seq=slot.probe_seq))
        self._schedule_probe()

    def _on_probe_reply(self, message: ProbeReply) -> None:
        slot = self._current(message.worker_id, message.generation)
        if slot is not None and message.seq == slot.probe_seq:
            slot.probe_answered, slot.missed_probes = True, 0

    def _on_wedged(self, slot: Slot) -> None:
        interval = self._watch.probe_interval_s
        reason = f"worker actor did not answer {slot.missed_probes} probes in a row (one every {interval:g} s)"
        self._kill(slot, reason)
        old = slot.ref
        if old is not None:
            old.stop(block=False)  # a wedged actor may never process it: the pool decides without it
        self._on_exited(WorkerExited(worker_id=slot.worker_id, generation=slot.generation, reason=reason))
