"""The coordinator's round (actors._turnround.StorageRound): the resolves of begun turns' workers go in one ask."""

from __future__ import annotations

from typing import Any

import pytest

from agenthost.actors import _turnevents as ev
from agenthost.actors._turnround import StorageRound
from agenthost.actors._turns import TurnRegistry

pytestmark = pytest.mark.timeout(10)


def test_the_resolves_of_a_round_go_to_the_mapping_in_one_ask_and_each_outcome_is_run() -> None:
    """D25: the worker resolves waiting in a round are one call of `resolve` (one ask of the mapping actor), in
    order, and each outcome it returns is fed to the machine."""
    asks: list[list[str]] = []

    def resolve(effects: Any) -> list[ev.Event]:
        asks.append([effect.thread_id for effect in effects])
        return [ev.Resolved(turn_id=e.turn_id, worker_id=1, runtime_thread_id=None) for e in effects]

    storage_round = StorageRound(store=None, registry=TurnRegistry(), resolve=resolve)  # type: ignore[arg-type]
    for index in range(3):
        assert storage_round.defer(ev.Resolve(turn_id=f"turn-{index}", thread_id=f"t{index}"))
    assert len(storage_round) == 3
    ran: list[Any] = []
    storage_round.flush(ran.append)
    assert asks == [["t0", "t1", "t2"]]
    assert [event.turn_id for event in ran] == ["turn-0", "turn-1", "turn-2"]
    assert len(storage_round) == 0


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

    def resolve(effects: Any) -> list[ev.Event]:
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
    assert [reply.value.turn_id for reply in replies.values()] == ["turn-0", "turn-1"]
    assert not storage_round.defer(ev.Accept(turn_id="late", queued=False, reply_to=None))  # outside a flush: at once
