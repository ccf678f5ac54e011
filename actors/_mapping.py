"""Thread-mapping actor: local thread id -> pinned worker + runtime thread id, cached and persisted.

Contract:
- Hydrated from the database at start (`LoadMappings`); every change is kept in memory and told to the persistence
  actor, which group-commits it with the completions: durable before any later write reaches the database (so
  before the end of the turn that needed it). A crash before that commit loses only the pin of a turn that then
  fails anyway; the thread is pinned again at its next use (a lost runtime thread id is recreated, and said so).
  Except a thread's first pin: it stays in memory until its runtime thread id is bound (that bind saves both), as
  nothing a runtime holds depends on it before; a restart meanwhile pins the thread afresh. (A new thread's first
  turn writes its mapping once, not twice.)
- `ResolveThreads` first applies its `updates` in order (`BindRuntimeThread` records a thread's runtime thread id
  on its worker, `InvalidateRuntimeThread` forgets it), then resolves threads in order, in the same message: per
  thread its pinned worker when that worker is up;
  otherwise it pins the thread to the least-loaded worker that is up (ties: lowest id) and keeps the runtime
  thread id, so the new worker can `thread/resume` it. No worker up -> a `NoHealthyWorkerError` naming the thread,
  in that thread's place.
- `WorkerDown` moves every thread pinned to that worker to the workers that are up, least-loaded first, in one
  "mapping.pins_moved" event. With no worker up the pins stay until the next resolve.
- A given-up or restarting worker is never "up", so it never receives pins. A degraded worker (`WorkerHealth`)
  keeps the threads already pinned to it but gets no new ones until it answers again.
"""

from __future__ import annotations

import collections
from typing import Any

import msgspec
import pykka

from agenthost.actors._errors import NoHealthyWorkerError
from agenthost.actors._events import PinsMoved
from agenthost.actors._log import get_logger
from agenthost.actors._refs import ASK_TIMEOUT_S, FaultHook, SupervisedActor, ask, tell_quietly
from agenthost.protocol._messages import (
    BindRuntimeThread,
    GetPins,
    InvalidateRuntimeThread,
    LoadMappings,
    ResolveThreads,
    SaveMapping,
    ThreadRoute,
    WorkerDown,
    WorkerHealth,
    WorkerUp,
)
from agenthost.storage import MappingPin

__all__ = ["MappingActor"]

_log = get_logger("agenthost.mapping")


class _Pin(msgspec.Struct):
    worker_id: int
    runtime_thread_id: str | None = None


class MappingActor(SupervisedActor):
    child_name = "mapping"
    expected_errors = (NoHealthyWorkerError,)

    def __init__(
        self,
        *,
        persistence_ref: pykka.ActorRef[Any],
        supervisor_ref: Any = None,
        fault_hook: FaultHook | None = None,
        ask_timeout_s: float = ASK_TIMEOUT_S,
    ) -> None:
        super().__init__(supervisor_ref=supervisor_ref, fault_hook=fault_hook)
        self._ask_timeout_s = ask_timeout_s
        self._persistence = persistence_ref
        self._pins: dict[str, _Pin] = {}
        self._load: collections.Counter[int] = collections.Counter()  # worker id -> threads pinned to it
        self._up: set[int] = set()
        self._degraded: set[int] = set()

    def on_child_start(self) -> None:
        pins: list[MappingPin] = self._db(LoadMappings())
        self._pins = {pin.thread_id: _Pin(pin.worker_id, pin.runtime_thread_id) for pin in pins}
        self._load = collections.Counter(pin.worker_id for pin in pins)
        _log.info("mapping.hydrated", threads=len(self._pins))

    def handle(self, message: Any) -> Any:
        match message:
            case ResolveThreads():
                for update in message.updates:
                    self._update(update)
                return tuple(self._route_or_refusal(thread_id) for thread_id in message.thread_ids)
            case WorkerUp():
                self._up.add(message.worker_id)
                self._degraded.discard(message.worker_id)
            case WorkerHealth():
                (self._degraded.add if message.degraded else self._degraded.discard)(message.worker_id)
            case WorkerDown():
                self._up.discard(message.worker_id)
                self._degraded.discard(message.worker_id)
                self._move_pins_from(message.worker_id, message.reason)
            case GetPins():
                return {tid: pin.worker_id for tid, pin in self._pins.items()}
            case _:
                return super().handle(message)
        return None

    def _update(self, update: BindRuntimeThread | InvalidateRuntimeThread) -> None:
        if isinstance(update, BindRuntimeThread):
            self._save(update.thread_id, _Pin(worker_id=update.worker_id, runtime_thread_id=update.runtime_thread_id))
        elif (pin := self._pins.get(update.thread_id)) is not None:
            self._save(update.thread_id, _Pin(worker_id=pin.worker_id))

    def _db(self, message: Any) -> Any:
        return ask(self._persistence, message, self._ask_timeout_s)

    def _save(self, thread_id: str, pin: _Pin) -> None:
        save = SaveMapping(thread_id=thread_id, worker_id=pin.worker_id, runtime_thread_id=pin.runtime_thread_id)
        tell_quietly(self._persistence, save)
        self._pin(thread_id, pin)

    def _pin(self, thread_id: str, pin: _Pin) -> None:
        old = self._pins.get(thread_id)
        if old is not None:
            self._load[old.worker_id] -= 1
        self._pins[thread_id] = pin
        self._load[pin.worker_id] += 1

    def _least_loaded(self) -> int | None:
        candidates = (self._up - self._degraded) or self._up  # a degraded worker only when nothing else is up
        if not candidates:
            return None
        return min(candidates, key=lambda wid: (self._load[wid], wid))  # (kept count: O(workers), not O(threads))

    def _route_or_refusal(self, thread_id: str) -> ThreadRoute | NoHealthyWorkerError:
        try:
            return self._resolve(thread_id)
        except NoHealthyWorkerError as exc:
            return exc

    def _resolve(self, thread_id: str) -> ThreadRoute:
        pin = self._pins.get(thread_id)
        if pin is None or pin.worker_id not in self._up:
            worker_id = self._least_loaded()
            if worker_id is None:
                raise NoHealthyWorkerError(f"no runtime worker is up to run thread {thread_id!r}")
            previous = None if pin is None else pin.worker_id
            pin = _Pin(worker_id=worker_id, runtime_thread_id=None if pin is None else pin.runtime_thread_id)
            if previous is None:  # a first pin: no runtime holds the thread yet; its runtime thread's bind saves it
                self._pin(thread_id, pin)
            else:
                self._save(thread_id, pin)
            _log.info("mapping.pinned", thread=thread_id, worker=worker_id, previous=previous)
        return ThreadRoute(thread_id=thread_id, worker_id=pin.worker_id, runtime_thread_id=pin.runtime_thread_id)

    def _move_pins_from(self, worker_id: int, reason: str) -> None:
        stranded = sorted(tid for tid, pin in self._pins.items() if pin.worker_id == worker_id)
        moves: dict[str, int] = {}
        for thread_id in stranded:
            target = self._least_loaded()
            if target is None:
                break
            self._save(thread_id, _Pin(worker_id=target, runtime_thread_id=self._pins[thread_id].runtime_thread_id))
            moves[thread_id] = target
        _log.record(
            PinsMoved(from_worker=worker_id, reason=reason, moves=moves, left_unpinned=len(stranded) - len(moves))
        )
