"""The turn coordinator's storage round: effects that wait to be sent to the storage together.

Contract:
- `defer(effect)` keeps an effect for the next round and returns True: enqueues of queued sends (and the `Accept`
  of each, answered only once its enqueue is durable), starts of the next follow-ups, direct begins, the resolves
  of begun turns' workers and the updates of runtime thread ids (`MappingUpdate`). Anything else: False (the caller
  carries it out at once).
- `flush(run)` sends them in rounds until nothing waits: first the enqueues (one transaction; each caller then
  hears `TurnAccepted(queued)` or its error, and a refused one's sink is dropped), then the follow-up starts and the
  direct begins (one transaction each), then the mapping updates and the resolves of begun turns' workers (one ask
  of the mapping actor, `resolve`, which applies the updates first, in the order they came). Each outcome is fed to
  `run` (the machine), which may defer more (a turn begun needs its worker resolved; a start that found nothing
  frees a slot for the next waiting thread): the loop goes on until nothing waits. Enqueues go first so that a
  start always sees every message queued before it. The direct sends begun in the flush are answered
  (`TurnAccepted`) only when it ends, also when it ends in an exception: their runtime calls go out first, so
  waking their callers does not delay them.
- `send_updates()` sends the waiting mapping updates now (one ask, nothing resolved): the coordinator calls it
  before anything that must come after them (a turn's end going to the storage, which must find the runtime thread
  id its turn bound already told to it; a worker event for the mapping).
- `fail_all(error)` answers every waiting caller with `error` (the coordinator crashed; nothing waiting began).
- `len()` is the number of effects waiting; `bool()` whether any waits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agenthost.actors import _turnevents as ev
from agenthost.actors._turns import TurnRegistry
from agenthost.actors._turnstore import TurnStore
from agenthost.protocol._messages import TurnAccepted

__all__ = ["StorageRound"]


class StorageRound:
    def __init__(
        self,
        store: TurnStore,
        registry: TurnRegistry,
        resolve: Callable[[Sequence[ev.Resolve], Sequence[ev.MappingUpdate]], Sequence[ev.Event]],
    ) -> None:
        self._store = store
        self._registry = registry
        self._resolve = resolve  # updates then resolves, in one ask of the mapping actor: per resolve an event
        self._resolves: list[ev.Resolve] = []
        self._updates: list[ev.MappingUpdate] = []
        self._enqueues: list[ev.Enqueue] = []
        self._enqueued: set[str] = set()  # their turn ids
        self._accepts: dict[str, ev.Accept] = {}  # queued sends' replies, by turn id, until their enqueue is durable
        self._starts: list[ev.StartFollowUp] = []
        self._begins: list[ev.Begin] = []
        self._replies: list[ev.Accept] = []  # direct sends begun in the running flush, answered when it ends
        self._flushing = False

    def __bool__(self) -> bool:
        """Something waits (cheaper than `len`, asked after every message)."""
        return bool(self._enqueues or self._starts or self._begins or self._resolves or self._updates)

    def __len__(self) -> int:
        return len(self._enqueues) + len(self._starts) + len(self._begins) + len(self._resolves) + len(self._updates)

    def defer(self, effect: ev.Effect) -> bool:
        match effect:
            case ev.Enqueue():
                self._enqueues.append(effect)
                self._enqueued.add(effect.turn_id)
            case ev.Accept(queued=True) if effect.turn_id in self._enqueued:
                self._accepts[effect.turn_id] = effect
            case ev.Accept(queued=False) if self._flushing:
                self._replies.append(effect)
            case ev.StartFollowUp():
                self._starts.append(effect)
            case ev.Begin():
                self._begins.append(effect)
            case ev.Resolve():
                self._resolves.append(effect)
            case ev.MappingUpdate():
                self._updates.append(effect)
            case _:
                return False
        return True

    def flush(self, run: Callable[[ev.Event], None]) -> None:
        self._flushing = True
        try:
            self._flush(run)
        finally:
            self._flushing = False
            replies, self._replies = self._replies, []
            for reply in replies:
                reply.reply_to.set(TurnAccepted(turn_id=reply.turn_id, queued=False))

    def _flush(self, run: Callable[[ev.Event], None]) -> None:
        while self:
            if self._enqueues:
                self._flush_enqueues()
            if self._starts:
                starts, self._starts = self._starts, []
                for outcome in self._store.start_followups(starts):
                    run(outcome)
            if self._begins:
                begins, self._begins = self._begins, []
                for outcome in self._store.begin_direct(begins):
                    run(outcome)
            if self._resolves or self._updates:
                resolves, self._resolves, updates, self._updates = self._resolves, [], self._updates, []
                for outcome in self._resolve(resolves, updates):
                    run(outcome)

    def send_updates(self) -> None:
        if self._updates:
            updates, self._updates = self._updates, []
            self._resolve([], updates)

    def fail_all(self, error: BaseException) -> None:
        for accept in self._accepts.values():
            accept.reply_to.fail(error)
        for begin in self._begins:
            begin.reply_to.fail(error)
        self._enqueues, self._accepts, self._starts, self._begins = [], {}, [], []
        self._enqueued = set()

    def _flush_enqueues(self) -> None:
        enqueues, self._enqueues, self._enqueued = self._enqueues, [], set()
        for enqueue, error in zip(enqueues, self._store.enqueue(enqueues), strict=True):
            accept = self._accepts.pop(enqueue.turn_id, None)
            if error is not None:
                self._registry.pop(enqueue.turn_id)  # never queued: no event will ever reach its sink
            if accept is None:
                continue
            if error is None:
                accept.reply_to.set(TurnAccepted(turn_id=accept.turn_id, queued=True))
            else:
                accept.reply_to.fail(error)
