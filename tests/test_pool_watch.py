"""The pool's watch on its workers (actors/_pool_watch.py), driven alone: a stand-in pool whose worker refs record
what they are told, and a FakeClock (S15, S19). Which workers are probed, how answers count (past CPython's
small-int cache too), and what a wedge does: kill the group by its pid, stop the old actor without waiting, decide
the exit."""

from __future__ import annotations

from typing import Any

import pytest

from agenthost.actors import FakeClock, WorkerWatch
from agenthost.actors._pool_watch import Slot, WorkerWatching
from agenthost.protocol._messages import KillRuntime, Probe, ProbeReply, ProbeTick, WorkerExited

pytestmark = pytest.mark.timeout(30)


class _Ref:
    """A worker actor's ref that records what it is told and whether it was stopped."""

    def __init__(self) -> None:
        self.told: list[Any] = []
        self.stops: list[bool] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)

    def stop(self, block: bool = True) -> None:
        self.stops.append(block)

    def probes(self) -> list[int]:
        return [message.seq for message in self.told if isinstance(message, Probe)]


class _Kills:
    def __init__(self) -> None:
        self.groups: list[tuple[int, int | None]] = []

    def kill_group(self, worker_id: int, pid: int | None) -> None:
        self.groups.append((worker_id, pid))


class _Pool(WorkerWatching):
    """The state the pool gives its watch, one slot per worker; exits are recorded, not decided."""

    def __init__(self, clock: FakeClock, states: dict[int, str], missed_probes: int = 2) -> None:
        self.actor_ref = _Ref()
        self._clock = clock
        self._watch = WorkerWatch(probe_interval_s=10.0, missed_probes=missed_probes)
        self._stopping = False
        self._probe_timer = None
        self.kills = _Kills()
        self._process_host = self.kills  # type: ignore[assignment]
        self._slots = {
            wid: Slot(worker_id=wid, state=state, generation=1, ref=_Ref(), pid=4000 + wid)  # type: ignore[arg-type]
            for wid, state in states.items()
        }
        self.exits: list[WorkerExited] = []

    def _current(self, worker_id: int, generation: int) -> Slot | None:
        slot = self._slots.get(worker_id)
        return slot if slot is not None and slot.generation == generation else None

    def _notify(self, message: Any) -> None:
        pass

    def _on_exited(self, message: WorkerExited) -> None:
        self.exits.append(message)

    def ref(self, worker_id: int) -> _Ref:
        ref: _Ref = self._slots[worker_id].ref
        return ref

    def tick(self) -> None:
        """Run the probe tick the clock says is due (it tells the pool a ProbeTick)."""
        self._clock.advance(10.0)
        assert isinstance(self.actor_ref.told.pop(), ProbeTick)
        self._on_probe_tick()

    def answer(self, worker_id: int) -> None:
        seq = self.ref(worker_id).probes()[-1]
        self._on_probe_reply(ProbeReply(worker_id=worker_id, generation=1, seq=int(str(seq))))  # a new int object


def test_only_workers_that_are_starting_ready_or_degraded_are_probed() -> None:
    states = {1: "starting", 2: "ready", 3: "degraded", 4: "restarting", 5: "given_up", 6: "stopped"}
    pool = _Pool(FakeClock(), states)
    pool._schedule_probe()
    for _ in range(3):
        pool.tick()
    assert {wid: pool.ref(wid).probes() for wid in states} == {
        1: [1, 2],
        2: [1, 2],
        3: [1, 2],
        4: [],
        5: [],
        6: [],
    }  # 1-3 answered nothing: 2 missed at the third tick, so they are wedged and get no third probe
    assert [exit.worker_id for exit in pool.exits] == [1, 2, 3]
    assert pool.ref(4).stops == pool.ref(5).stops == pool.ref(6).stops == []


def test_a_worker_that_answers_every_probe_is_never_wedged_past_256_probes() -> None:
    pool = _Pool(FakeClock(), {1: "ready"})
    pool._schedule_probe()
    for _ in range(300):
        pool.tick()
        pool.answer(1)
    assert pool.ref(1).probes() == list(range(1, 301))
    assert pool.exits == [] and pool.kills.groups == []


def test_an_answer_to_an_older_probe_does_not_count() -> None:
    pool = _Pool(FakeClock(), {1: "ready"}, missed_probes=2)
    pool._schedule_probe()
    pool.tick()
    pool.answer(1)  # probe 1 answered
    pool.tick()  # probe 2 sent
    pool._on_probe_reply(ProbeReply(worker_id=1, generation=1, seq=1))  # late, for probe 1
    pool.tick()  # probe 2 missed: 1
    assert pool.exits == []
    pool.tick()  # probe 3 missed: 2 -> wedged
    assert [exit.worker_id for exit in pool.exits] == [1]


def test_a_wedged_worker_is_killed_by_its_pid_stopped_without_waiting_and_its_exit_decided() -> None:
    pool = _Pool(FakeClock(), {1: "ready", 2: "ready"}, missed_probes=2)
    pool._schedule_probe()
    for _ in range(3):
        pool.tick()
        pool.answer(2)
    old = pool.ref(1)
    reason = "worker actor did not answer 2 probes in a row (one every 10 s)"
    assert [message for message in old.told if isinstance(message, KillRuntime)] == [KillRuntime(reason=reason)]
    assert pool.kills.groups == [(1, 4001)]
    assert old.stops == [False]
    assert pool.exits == [WorkerExited(worker_id=1, generation=1, reason=reason)]
    assert pool.ref(2).stops == [] and pool.ref(2).probes() == [1, 2, 3]


def test_no_probe_goes_out_while_the_pool_stops() -> None:
    pool = _Pool(FakeClock(), {1: "ready"})
    pool._schedule_probe()
    pool._stopping = True
    pool.tick()
    assert pool.ref(1).probes() == [] and pool._clock.pending_due_times("probe") == []
