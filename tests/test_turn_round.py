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
