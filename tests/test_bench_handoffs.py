"""bench/_handoffs.py: its ring passes exactly the hand-offs it claims, and the host's turn wakes the actors its
BEGIN_PATH and END_PATH name, in that order (so figure 3's "least own time" times the path the host really takes)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agenthost import AgentHost, HostConfig
from agenthost.actors import _refs
from bench import _handoffs
from bench._codex import _PipeClock

Receipt = tuple[float, float, str]  # (started, ended, who): one message handled by one actor


@pytest.mark.timeout(60)
def test_each_leg_passes_as_many_receipts_as_its_path_and_each_turn_is_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[int] = []
    handle = _handoffs._Relay.handle

    def counted(relay: Any, message: Any) -> Any:
        if isinstance(message, _handoffs._Baton):
            received.append(message.left)
        return handle(relay, message)

    monkeypatch.setattr(_handoffs._Relay, "handle", counted)
    seconds: list[float] = []
    _handoffs.measure(3, 0.0, seconds)
    assert len(seconds) == 3 and all(0 < value < 5 for value in seconds)
    begin, end = len(_handoffs.BEGIN_PATH), len(_handoffs.END_PATH) - 1  # the end leg's last hand-off wakes the caller
    assert received == [*range(begin, 0, -1), *range(end, 0, -1)] * 4  # the warm-up turn and 3 timed ones


@pytest.fixture
def receipts(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[Receipt], list[float], list[float]]]:
    """Every message an actor handles, and when turn/start is written and turn/completed read (perf_counter, by the
    bench's own pipe clock)."""
    handled: list[Receipt] = []
    on_receive = _refs.SupervisedActor.on_receive

    def timed_receive(actor: Any, message: Any) -> Any:
        began = time.perf_counter()
        try:
            return on_receive(actor, message)
        finally:
            handled.append((began, time.perf_counter(), actor.child_name.split("-")[0]))

    monkeypatch.setattr(_refs.SupervisedActor, "on_receive", timed_receive)
    with _PipeClock() as pipes:
        yield handled, pipes.started, pipes.completed


def _wakes(handled: list[Receipt], since: float, until: float) -> tuple[str, ...]:
    """Who woke, in order, between `since` and `until`: each actor as it takes a message, and again as the answer
    of one it asked comes back (a receipt handled inside another's handling is one that other one waited for); an
    actor that takes the next message of its mailbox straight after the last one was not woken again."""
    inside = sorted(receipt for receipt in handled if since <= receipt[0] <= until)
    wakes: list[str] = []
    for index, (began, ended, who) in enumerate(inside):
        waiting = [outer for outer in inside[:index] if outer[0] < began and ended <= outer[1]]
        for woken in (who, waiting[-1][2]) if waiting else (who,):
            if not wakes or wakes[-1] != woken:
                wakes.append(woken)
    return tuple(wakes)


@pytest.mark.timeout(120)
def test_a_host_turn_wakes_the_actors_of_the_bench_paths_in_order(
    tmp_path: Path, receipts: tuple[list[Receipt], list[float], list[float]]
) -> None:
    handled, started, completed = receipts
    begins: collections.Counter[tuple[str, ...]] = collections.Counter()
    ends: collections.Counter[tuple[str, ...]] = collections.Counter()
    with AgentHost(HostConfig(storage_root=str(tmp_path / "root"), workers=1)) as host:
        thread_id = host.create_thread("paths")
        host.send(thread_id, "warm-up").wait(30)
        for turn in range(20):
            del handled[:], started[:], completed[:]
            sent = time.perf_counter()
            host.send(thread_id, f"turn {turn}").wait(30)
            returned = time.perf_counter()
            assert len(started) == 1 and len(completed) == 1
            begins[_wakes(handled, sent, started[0])] += 1
            woken = _wakes(handled, completed[0], returned)
            # the reader hands turn/completed to the worker: what the coordinator still did before is earlier output
            ends[(*woken[woken.index("worker") if "worker" in woken else 0 :], "caller")] += 1
    assert begins.most_common(1)[0][0] == _handoffs.BEGIN_PATH, begins
    assert ends.most_common(1)[0][0] == _handoffs.END_PATH, ends
    assert _handoffs.HANDOFFS == len(_handoffs.BEGIN_PATH) + len(_handoffs.END_PATH) == 9
