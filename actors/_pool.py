"""Pool supervisor: owns N worker actors and makes every restart decision for them (one_for_one).

Contract:
- Worker states: starting -> ready -> degraded -> restarting(attempt, next_restart_at) -> given_up (or stopped).
  A worker is "ready" only after its runtime answered `initialize`. It is "degraded" while its calls time out
  (no new pins go to it).
- The pool stops trusting a worker, by the thresholds of `WorkerWatch` (actors._recovery), and kills its runtime's
  whole process group (decision "kill"; the exit is then decided like any other): after
  `max_consecutive_timeouts` timeouts in a row; at once when the runtime stopped reading its stdin (`stalled`); and
  when the worker actor itself left `missed_probes` probes in a row unanswered (one probe every `probe_interval_s`,
  injected clock). A wedged worker actor cannot report its own exit, so the pool SIGKILLs the group by the pid it
  was told at spawn (through the `ProcessHost`, actors._placement, when the runtime runs on another node) and
  decides the exit itself. This watch is actors._pool_watch, mixed in.
- Restart types (OTP): permanent workers are always considered for a restart, transient ones only after an
  abnormal exit (non-zero or signal), temporary ones never (decision "no_restart", state "stopped").
- Workers never restart themselves. An exit of the current generation of a worker is answered by one call to the
  recovery policy (`admit_restart`) and one "supervisor.decision" event (supervisor="pool", child="worker-N"):
  "restart" (after `delay_s`, scheduled on the injected clock), "give_up" (attempts exhausted; the worker stays
  down and gets no pins) or "escalate" (restart intensity exceeded; the parent is told).
- Messages from an older generation of a worker are ignored, so a late exit can never restart a newer process.
- Listeners (mapping, coordinator) get `WorkerUp` when a worker answers `initialize` and `WorkerDown` when a worker
  that was up exits. A worker that dies before it is ready is never announced.
- When every worker has given up, or intensity is exceeded, the pool stops every worker (reverse order) and tells
  the parent `PoolFailed` with the cause; it never restarts itself. If the pool actor itself crashes, it stops its
  workers before the crash is reported, so no runtime outlives its supervisor.
- `StopPool(timeout_s)` cancels pending restarts and stops all runtimes in parallel (stdin close, then SIGKILL of
  the group after `timeout_s`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pykka

from agenthost.actors._clock import Clock, Timer
from agenthost.actors._errors import UnknownWorkerError
from agenthost.actors._events import PoolFailedEvent, WorkerRestarting, WorkerUpEvent
from agenthost.actors._log import decision, get_logger
from agenthost.actors._pipes import WorkerSpec
from agenthost.actors._placement import LOCAL, ProcessHost
from agenthost.actors._pool_watch import Slot, WorkerWatching
from agenthost.actors._recovery import (
    WORKER_WATCH,
    RecoveryPolicy,
    RestartHistory,
    RestartType,
    WorkerWatch,
    admit_operator_restart,
    admit_restart,
    record_start,
    should_restart,
)
from agenthost.actors._refs import FaultHook, SupervisedActor, tell_quietly
from agenthost.actors._worker import WorkerActor
from agenthost.protocol._messages import (
    GetPoolStatus,
    PoolFailed,
    ProbeReply,
    ProbeTick,
    RestartDue,
    RestartWorker,
    StopPool,
    StopRuntime,
    WorkerDown,
    WorkerExited,
    WorkerHealth,
    WorkerReady,
    WorkerRestarted,
    WorkerSpawned,
    WorkerUp,
)

__all__ = ["PoolSupervisor", "SpecFactory"]

_log = get_logger("agenthost.pool")

SpecFactory = Callable[[int, int], WorkerSpec]  # (worker_id, generation) -> spec


class PoolSupervisor(WorkerWatching, SupervisedActor):
    child_name = "pool"
    expected_errors = (UnknownWorkerError,)

    def __init__(
        self,
        *,
        worker_count: int,
        spec_factory: SpecFactory,
        policy: RecoveryPolicy,
        clock: Clock,
        output_ref: pykka.ActorRef[Any],
        listeners: list[pykka.ActorRef[Any]],
        parent_ref: pykka.ActorRef[Any] | None = None,
        rng_seed: int = 0,
        worker_restart: RestartType = "permanent",
        shutdown_timeout_s: float = 5.0,
        watch: WorkerWatch = WORKER_WATCH,
        fault_hook: FaultHook | None = None,
        process_host: ProcessHost = LOCAL,
    ) -> None:
        super().__init__(supervisor_ref=parent_ref, fault_hook=fault_hook)
        if worker_count < 1:
            raise ValueError(f"worker_count must be >= 1, got {worker_count!r}")
        self._slots = {wid: Slot(worker_id=wid) for wid in range(1, worker_count + 1)}
        self._spec_factory = spec_factory
        self._policy = policy
        self._clock = clock
        self._output = output_ref
        self._listeners = list(listeners)
        self._parent = parent_ref
        self._rng = random.Random(rng_seed)
        self._stopping = False
        self._worker_restart = worker_restart
        self._shutdown_timeout_s = shutdown_timeout_s
        self._watch = watch
        self._fault_hook = fault_hook
        self._probe_timer: Timer | None = None
        self._process_host = process_host

    def on_child_start(self) -> None:
        for slot in self._slots.values():
            self._spawn(slot)
        self._schedule_probe()

    def handle(self, message: Any) -> Any:
        match message:
            case WorkerSpawned():
                if (slot := self._current(message.worker_id, message.generation)) is not None:
                    slot.pid = message.pid
            case WorkerReady():
                self._on_ready(message)
            case WorkerExited():
                self._on_exited(message)
            case RestartDue():
                self._on_restart_due(message)
            case WorkerHealth():
                self._on_health(message)
            case ProbeTick():
                self._on_probe_tick()
            case ProbeReply():
                self._on_probe_reply(message)
            case RestartWorker():
                return self._operator_restart(message)
            case GetPoolStatus():
                return tuple(slot.status() for slot in self._slots.values())
            case StopPool():
                return self._stop_all(message.timeout_s)
            case _:
                return super().handle(message)
        return None

    # --- lifecycle of one slot -------------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        slot.generation += 1
        slot.state = "starting"
        slot.pid = None
        slot.next_restart_at = None
        slot.timer = None
        slot.probe_answered, slot.missed_probes = True, 0
        slot.history = record_start(slot.history, self._clock.now())
        spec = self._spec_factory(slot.worker_id, slot.generation)
        slot.ref = WorkerActor.start(
            spec,
            pool_ref=self.actor_ref,
            output_ref=self._output,
            clock=self._clock,
            watch=self._watch,
            fault_hook=self._fault_hook,
            process_host=self._process_host,
        )

    def _current(self, worker_id: int, generation: int) -> Slot | None:
        slot = self._slots.get(worker_id)
        if slot is None or slot.generation != generation or self._stopping:
            return None
        return slot

    def _on_ready(self, message: WorkerReady) -> None:
        slot = self._current(message.worker_id, message.generation)
        if slot is None:
            return
        slot.state = "ready"
        slot.pid = message.pid
        _log.record(WorkerUpEvent(worker=slot.worker_id, generation=slot.generation, pid=message.pid))
        self._notify(WorkerUp(worker_id=slot.worker_id, generation=slot.generation, ref=slot.ref))

    # --- exits and restarts ----------------------------------------------------------------------------------
    def _operator_restart(self, message: RestartWorker) -> WorkerRestarted:
        """Replace a worker's runtime now (see the module contract); the answer names the generation to come."""
        slot = self._slots.get(message.worker_id)
        if slot is None or self._stopping:
            raise UnknownWorkerError(f"no worker {message.worker_id!r}; workers are 1..{len(self._slots)}")
        slot.operator = (message.reason, message.repair)
        next_generation = slot.generation + 1
        if slot.state in ("starting", "ready", "degraded"):
            self._kill(slot, f"restart requested by the operator: {message.reason}")  # the exit brings it back
        else:  # restarting, given up or stopped: bring it back now
            if slot.timer is not None:
                slot.timer.cancel()
            self._operator_spawn(slot, f"worker was {slot.state}")
        return WorkerRestarted(worker_id=slot.worker_id, generation=next_generation)

    def _operator_spawn(self, slot: Slot, exit_reason: str) -> None:
        reason, repair = slot.operator
        slot.operator = None
        if repair is not None:
            slot.last_repair = str(repair(slot.worker_id))
        verdict = admit_operator_restart(slot.history)
        if slot.state in ("given_up", "stopped"):
            slot.history = RestartHistory()  # an operator revives it: it counts its attempts from 0 again
        decision(
            _log,
            supervisor="pool",
            child=slot.child,
            decision="restart",
            reason=f"{exit_reason}; {verdict.reason}: {reason}",
            attempt=verdict.attempt,
            delay_s=0.0,
            generation=slot.generation,
        )
        slot.restarts += 1
        self._spawn(slot)

    def _on_exited(self, message: WorkerExited) -> None:
        slot = self._current(message.worker_id, message.generation)
        if slot is None or slot.state in ("restarting", "given_up", "stopped"):
            return
        if slot.operator is not None:  # an operator restart: no policy verdict on a failure, back at once
            was_up = slot.state in ("ready", "degraded")
            slot.last_exit, slot.pid, slot.ref = message.reason, None, None
            if was_up:
                self._notify(WorkerDown(worker_id=slot.worker_id, generation=slot.generation, reason=message.reason))
            self._operator_spawn(slot, message.reason)
            return
        was_up = slot.state in ("ready", "degraded")
        slot.last_exit = message.reason
        slot.pid = None
        slot.ref = None
        if was_up:
            self._notify(WorkerDown(worker_id=slot.worker_id, generation=slot.generation, reason=message.reason))
        abnormal = message.returncode != 0
        if not should_restart(self._worker_restart, abnormal):
            slot.state = "stopped"
            decision(
                _log,
                supervisor="pool",
                child=slot.child,
                decision="no_restart",
                reason=f"{message.reason}; restart type {self._worker_restart}",
                generation=slot.generation,
            )
            return
        self._decide(slot, message.reason)

    def _decide(self, slot: Slot, exit_reason: str) -> None:
        """One policy call, acted on, then reported as one event (timers exist before anyone can see the event)."""
        now = self._clock.now()
        verdict = admit_restart(self._policy, slot.history, now, self._rng)
        if verdict.action == "restart":
            slot.history = verdict.history
            slot.state = "restarting"
            slot.next_restart_at = now + verdict.delay_s
            ref, due = self.actor_ref, RestartDue(worker_id=slot.worker_id, generation=slot.generation)
            slot.timer = self._clock.call_later(verdict.delay_s, lambda: tell_quietly(ref, due), name="restart")
        else:
            slot.state = "given_up"
        decision(
            _log,
            supervisor="pool",
            child=slot.child,
            decision=verdict.action,
            reason=f"{exit_reason}; {verdict.reason}",
            attempt=verdict.attempt,
            delay_s=verdict.delay_s,
            generation=slot.generation,
            decided_at=now,
        )
        if verdict.action == "escalate":
            self._escalate(f"{slot.child}: {verdict.reason}")
        elif verdict.action == "give_up" and all(s.state == "given_up" for s in self._slots.values()):
            reason = f"all {len(self._slots)} workers gave up; last: {slot.child} {exit_reason}"
            self._escalate(reason, workers_gave_up=True)

    def _on_restart_due(self, message: RestartDue) -> None:
        slot = self._current(message.worker_id, message.generation)
        if slot is None or slot.state != "restarting":
            return
        slot.restarts += 1
        _log.record(WorkerRestarting(worker=slot.worker_id, attempt=slot.history.attempt))
        self._spawn(slot)

    def _escalate(self, reason: str, *, workers_gave_up: bool = False) -> None:
        """Stop every worker (reverse order), then hand the failure to the parent."""
        self._stop_all(self._shutdown_timeout_s)
        _log.record(PoolFailedEvent(reason=reason), "error")
        if self._parent is not None:
            tell_quietly(self._parent, PoolFailed(reason=reason, workers_gave_up=workers_gave_up))

    def on_crash(self, error: BaseException) -> None:
        self._stop_all(self._shutdown_timeout_s)

    def _notify(self, message: Any) -> None:
        for listener in self._listeners:
            tell_quietly(listener, message)

    def _stop_all(self, timeout_s: float) -> dict[int, int | None]:
        self._stopping = True
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        futures = {}
        for slot in sorted(self._slots.values(), key=lambda s: -s.worker_id):
            if slot.timer is not None:
                slot.timer.cancel()
            if slot.ref is not None:
                try:
                    futures[slot.worker_id] = slot.ref.ask(StopRuntime(timeout_s=timeout_s), block=False)
                except pykka.ActorDeadError:
                    pass
            if slot.state != "given_up":
                slot.state = "stopped"
        codes: dict[int, int | None] = {}
        for worker_id, future in futures.items():
            try:
                codes[worker_id] = future.get(timeout=timeout_s + 5.0)
            except (pykka.ActorDeadError, pykka.Timeout):
                codes[worker_id] = None
                self._killpg(self._slots[worker_id])  # a worker actor that cannot stop: its runtime still dies
        _log.info("pool.stopped", returncodes=codes)
        return codes
