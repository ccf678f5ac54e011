"""The coordinator's round (actors._turnround.StorageRound): the runtime thread id updates and the resolves of begun
turns' workers go in one ask."""

from __future__ import annotations

from typing import Any

import pykka
import pytest

from agenthost.actors import FakeClock
from agenthost.actors import _turnevents as ev
from agenthost.actors._coordinator import TurnCoordinator
from agenthost.actors._turnround import StorageRound
from agenthost.actors._turns import CoordinatorSettings, TurnRegistry
from agenthost.actors._turnstate import Unpersisted
from agenthost.protocol._messages import BindRuntimeThread, ResolveThreads, WorkerDown

pytestmark = pytest.mark.timeout(10)


def _update(thread_id: str, runtime_thread_id: str | None) -> ev.MappingUpdate:
    return ev.MappingUpdate(thread_id=thread_id, worker_id=1, runtime_thread_id=runtime_thread_id)


def test_the_resolves_of_a_round_go_to_the_mapping_in_one_ask_and_each_outcome_is_run() -> None:
    """D25: the runtime thread id updates and the worker resolves waiting in a round are one call of `resolve`
    (one ask of the mapping actor), each in order, and each outcome it returns is fed to the machine."""
    asks: list[tuple[list[str], list[tuple[str, str | None]]]] = []

    def resolve(effects: Any, updates: Any) -> list[ev.Event]:
        asks.append(([e.thread_id for e in effects], [(u.thread_id, u.runtime_thread_id) for u in updates]))
        return [ev.Resolved(turn_id=e.turn_id, worker_id=1, runtime_thread_id=None) for e in effects]

    storage_round = StorageRound(store=None, registry=TurnRegistry(), resolve=resolve)  # type: ignore[arg-type]
    assert storage_round.defer(_update("t9", "rt-9"))
    for index in range(3):
        assert storage_round.defer(ev.Resolve(turn_id=f"turn-{index}", thread_id=f"t{index}"))
    assert storage_round.defer(_update("t9", None))
    assert len(storage_round) == 5
    ran: list[Any] = []
    storage_round.flush(ran.append)
    assert asks == [(["t0", "t1", "t2"], [("t9", "rt-9"), ("t9", None)])]
    assert [event.turn_id for event in ran] == ["turn-0", "turn-1", "turn-2"]
    assert len(storage_round) == 0


def test_send_updates_sends_only_the_waiting_updates_and_nothing_when_none_wait() -> None:
    """What must come after a bind (the end of its turn going to the storage) can send the updates first, alone;
    the resolves keep waiting for the round."""
    asks: list[tuple[list[str], list[str]]] = []

    def resolve(effects: Any, updates: Any) -> list[ev.Event]:
        asks.append(([e.thread_id for e in effects], [u.thread_id for u in updates]))
        return [ev.Resolved(turn_id=e.turn_id, worker_id=1, runtime_thread_id=None) for e in effects]

    storage_round = StorageRound(store=None, registry=TurnRegistry(), resolve=resolve)  # type: ignore[arg-type]
    storage_round.send_updates()
    assert asks == []
    assert storage_round.defer(ev.Resolve(turn_id="turn-0", thread_id="t0"))
    assert storage_round.defer(_update("t1", "rt-1"))
    storage_round.send_updates()
    assert asks == [([], ["t1"])] and len(storage_round) == 1
    storage_round.flush(lambda event: None)
    assert asks == [([], ["t1"]), (["t0"], [])]


def test_the_length_counts_every_kind_of_effect_waiting() -> None:
    """`len()` is what the coordinator holds against MAX_BEGIN_BATCH: every kind waiting counts, each once."""
    storage_round = StorageRound(store=None, registry=TurnRegistry(), resolve=lambda *_: [])  # type: ignore[arg-type]
    kinds: list[tuple[int, Any]] = [
        (1, lambda i: ev.Enqueue(turn_id=f"q{i}", thread_id="t", text="x")),
        (3, lambda i: ev.StartFollowUp(thread_id=f"f{i}")),
        (6, lambda i: ev.Begin(turn_id=f"d{i}", thread_id=f"d{i}", text="x", sink=None)),
        (2, lambda i: ev.Resolve(turn_id=f"r{i}", thread_id=f"r{i}")),
        (4, lambda i: _update(f"m{i}", None)),
    ]
    for count, make in kinds:
        for index in range(count):
            assert storage_round.defer(make(index))
    assert len(storage_round) == 16 and bool(storage_round)


class _Enqueues:
    def enqueue(self, effects: list[ev.Enqueue]) -> list[BaseException | None]:
        return [None] * len(effects)


def test_each_enqueue_with_a_caller_waiting_is_answered_queued_after_the_round() -> None:
    """An enqueue with no caller waiting (none deferred its Accept) does not stop the answers of those after it."""
    order: list[str] = []
    storage_round = StorageRound(store=_Enqueues(), registry=TurnRegistry(), resolve=lambda *_: [])  # type: ignore[arg-type]
    reply = _Recorded(order, "q1")
    for index in range(2):
        assert storage_round.defer(ev.Enqueue(turn_id=f"q{index}", thread_id=f"t{index}", text="x"))
    assert storage_round.defer(ev.Accept(turn_id="q1", queued=True, reply_to=reply))
    storage_round.flush(lambda event: None)
    assert order == ["answer q1"] and reply.value.queued is True


def test_a_crashed_coordinator_fails_every_caller_still_waiting_in_the_round() -> None:
    order: list[str] = []
    storage_round = StorageRound(store=None, registry=TurnRegistry(), resolve=lambda *_: [])  # type: ignore[arg-type]
    assert storage_round.defer(ev.Enqueue(turn_id="q0", thread_id="t0", text="x"))
    assert storage_round.defer(ev.Accept(turn_id="q0", queued=True, reply_to=_Recorded(order, "q0")))
    begin = ev.Begin(turn_id="d0", thread_id="t1", text="x", sink=None, reply_to=_Recorded(order, "d0"))
    assert storage_round.defer(begin)
    storage_round.fail_all(RuntimeError("coordinator crashed"))
    assert order == ["fail q0", "fail d0"] and len(storage_round) == 0


class _Recorded:
    """A reply_to that notes when its caller would wake."""

    def __init__(self, order: list[str], name: str) -> None:
        self._order, self._name = order, name
        self.value: Any = None

    def set(self, value: Any) -> None:
        self._order.append(f"answer {self._name}")
        self.value = value

    def fail(self, error: BaseException) -> None:
        self._order.append(f"fail {self._name}")


class _BeginsAll:
    def begin_direct(self, effects: list[ev.Begin]) -> list[ev.Event]:
        return [ev.Resolve(turn_id=e.turn_id, thread_id=e.thread_id) for e in effects]  # stands in for Begun


@pytest.mark.parametrize("raises", [False, True])
def test_direct_sends_are_answered_after_their_runtime_calls_go_out_even_when_the_round_fails(raises: bool) -> None:
    """D25: a direct send begun in a round is answered (TurnAccepted) when the round ends, after the resolve of its
    worker and what it triggered (the runtime call): waking the caller earlier delays the call. The answer still
    comes when the round ends in an exception (the begin is durable)."""
    order: list[str] = []

    def resolve(effects: Any, updates: Any) -> list[ev.Event]:
        order.append("resolve " + ",".join(e.thread_id for e in effects))
        if raises:
            raise RuntimeError("mapping gone")
        return [ev.Resolved(turn_id=e.turn_id, worker_id=1, runtime_thread_id="rt") for e in effects]

    storage_round = StorageRound(store=_BeginsAll(), registry=TurnRegistry(), resolve=resolve)  # type: ignore[arg-type]
    replies = {f"turn-{i}": _Recorded(order, f"turn-{i}") for i in range(2)}

    def run(event: ev.Event) -> None:  # the machine: a begun send is accepted, then its worker resolved
        if isinstance(event, ev.Resolve):
            assert storage_round.defer(ev.Accept(turn_id=event.turn_id, queued=False, reply_to=replies[event.turn_id]))
            assert storage_round.defer(event)
        else:
            order.append(f"call {event.turn_id}")

    assert not storage_round.defer(ev.Accept(turn_id="early", queued=False, reply_to=None))  # no flush yet: at once
    for index in range(2):
        begin = ev.Begin(turn_id=f"turn-{index}", thread_id=f"t{index}", text="hi", sink=None)
        assert storage_round.defer(begin)
    if raises:
        with pytest.raises(RuntimeError, match="mapping gone"):
            storage_round.flush(run)
        assert order == ["resolve t0,t1", "answer turn-0", "answer turn-1"]
    else:
        storage_round.flush(run)
        assert order == ["resolve t0,t1", "call turn-0", "call turn-1", "answer turn-0", "answer turn-1"]
    assert [(reply.value.turn_id, reply.value.queued) for reply in replies.values()] == [
        ("turn-0", False),
        ("turn-1", False),
    ]
    assert not storage_round.defer(ev.Accept(turn_id="late", queued=False, reply_to=None))  # outside a flush: at once


class _Ref:
    """An actor ref that writes what it is told or asked into one shared log (asks answer at once)."""

    def __init__(self, name: str, log: list[tuple[str, Any]]) -> None:
        self.name, self.log = name, log
        self.actor_urn = f"urn:{name}"

    def tell(self, message: Any) -> None:
        self.log.append((self.name, message))

    def ask(self, message: Any, block: bool = True, timeout: float | None = None) -> Any:
        self.log.append((self.name, message))
        answer = tuple(None for _ in message.thread_ids) if isinstance(message, ResolveThreads) else None
        future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        future.set(answer)
        return future


@pytest.mark.parametrize(
    "end",
    [
        ev.PersistComplete(turn_id="turn-1", text="done", worker_id=1),
        ev.Persist(
            record=Unpersisted(
                turn_id="turn-1",
                thread_id="t1",
                status="failed",
                text="",
                error="x",
                worker_id=1,
                followup_id=None,
                sink=None,
            )
        ),
        ev.MappingEvent(message=WorkerDown(worker_id=1, generation=1, reason="gone")),
    ],
    ids=["turn end", "failed turn end", "worker event"],
)
def test_a_turn_end_or_worker_event_goes_only_after_the_mapping_updates_waiting(end: ev.Effect) -> None:
    """D25: a bind waits for the round, but the end of its turn is told to the storage only after it was sent to
    the mapping (which tells the storage the pin first), so the pin is committed with or before that end."""
    log: list[tuple[str, Any]] = []
    coordinator = TurnCoordinator(
        persistence_ref=_Ref("persistence", log),  # type: ignore[arg-type]
        mapping_ref=_Ref("mapping", log),  # type: ignore[arg-type]
        clock=FakeClock(),
        settings=CoordinatorSettings(),
        project_dir=str,
    )
    assert coordinator._do(_update("t1", "rt-1")) is None  # deferred: nothing sent yet
    assert log == []
    coordinator._do(end)
    assert [name for name, _ in log] == ["mapping", "mapping" if isinstance(end, ev.MappingEvent) else "persistence"]
    sent = log[0][1]
    assert isinstance(sent, ResolveThreads) and sent.thread_ids == ()
    assert sent.updates == (BindRuntimeThread(thread_id="t1", worker_id=1, runtime_thread_id="rt-1"),)
    assert len(coordinator._round) == 0
