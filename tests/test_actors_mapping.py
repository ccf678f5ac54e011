"""Thread-mapping actor over a real persistence actor: hydration, least-loaded pinning, pin moves."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agenthost.actors import FakeClock
from agenthost.actors._mapping import MappingActor, NoHealthyWorkerError
from agenthost.actors._persistence import PersistenceActor
from agenthost.protocol._messages import (
    BindRuntimeThread,
    CreateThread,
    GetPins,
    InvalidateRuntimeThread,
    LoadMappings,
    ReadTranscript,
    ResolveThreads,
    WorkerDown,
    WorkerHealth,
    WorkerUp,
)
from agenthost.storage import StorageRoot

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def actors(tmp_path):
    started = []

    def start():
        persistence = PersistenceActor.start(root=StorageRoot(tmp_path / "root"), clock=FakeClock(), wall=time.time)
        mapping = MappingActor.start(persistence_ref=persistence)
        started.extend([mapping, persistence])
        return persistence, mapping

    yield start
    for ref in started:
        if ref.is_alive():
            ref.stop()


def _threads(persistence, count: int) -> list[str]:
    ids = [f"t{i}" for i in range(count)]
    for thread_id in ids:
        persistence.ask(CreateThread(thread_id=thread_id, project_id="p", title=thread_id))
    return ids


def _up(mapping, *worker_ids: int) -> None:
    for worker_id in worker_ids:
        mapping.ask(WorkerUp(worker_id=worker_id, generation=1, ref=None))


def test_resolve_pins_least_loaded_and_keeps_pins(actors) -> None:
    persistence, mapping = actors()
    threads = _threads(persistence, 4)
    _up(mapping, 2, 1)
    routes = mapping.ask(ResolveThreads(thread_ids=tuple(threads)))  # in order, one message
    assert [route.worker_id for route in routes] == [1, 2, 1, 2]
    assert _route(mapping, threads[0]).worker_id == 1


def test_no_worker_up_is_an_error_naming_the_thread(actors) -> None:
    persistence, mapping = actors()
    _threads(persistence, 1)
    (refusal,) = mapping.ask(ResolveThreads(thread_ids=("t0",)))
    assert isinstance(refusal, NoHealthyWorkerError) and "'t0'" in str(refusal)


def test_worker_down_moves_its_pins_and_keeps_runtime_thread_ids(actors) -> None:
    persistence, mapping = actors()
    threads = _threads(persistence, 3)
    _up(mapping, 1, 2, 3)
    for thread_id in threads:
        route = _route(mapping, thread_id)
        bind = BindRuntimeThread(thread_id=thread_id, worker_id=route.worker_id, runtime_thread_id=f"rt-{thread_id}")
        assert mapping.ask(ResolveThreads(thread_ids=(), updates=(bind,))) == ()
    mapping.ask(WorkerDown(worker_id=1, generation=1, reason="killed"))
    pins = mapping.ask(GetPins())
    assert 1 not in pins.values() and set(pins) == set(threads)
    moved = _route(mapping, "t0")
    assert moved.worker_id in (2, 3) and moved.runtime_thread_id == "rt-t0"


def test_mappings_are_durable_and_hydrated(actors) -> None:
    persistence, mapping = actors()
    _threads(persistence, 2)
    _up(mapping, 1)
    updates = (
        BindRuntimeThread(thread_id="t0", worker_id=1, runtime_thread_id="rt-0"),
        BindRuntimeThread(thread_id="t1", worker_id=1, runtime_thread_id="rt-1"),
        InvalidateRuntimeThread(thread_id="t1"),
    )
    routes = mapping.ask(ResolveThreads(thread_ids=("t1", "t0"), updates=updates))  # the updates go first, in order
    assert [(route.thread_id, route.runtime_thread_id) for route in routes] == [("t1", None), ("t0", "rt-0")]
    mapping.stop()
    persistence.stop()
    persistence, mapping = actors()
    _up(mapping, 1)
    assert mapping.ask(GetPins()) == {"t0": 1, "t1": 1}
    assert _route(mapping, "t0").runtime_thread_id == "rt-0"
    assert _route(mapping, "t1").runtime_thread_id is None


def test_a_first_pin_is_saved_with_its_runtime_thread_and_a_moved_pin_at_once(actors) -> None:
    persistence, mapping = actors()
    _threads(persistence, 2)
    _up(mapping, 1, 2)
    assert [_route(mapping, t).worker_id for t in ("t0", "t1")] == [1, 2]
    assert persistence.ask(LoadMappings()) == []  # first pins: no runtime holds these threads yet
    bind = BindRuntimeThread(thread_id="t0", worker_id=1, runtime_thread_id="rt-0")
    mapping.ask(ResolveThreads(thread_ids=(), updates=(bind,)))
    mapping.ask(WorkerDown(worker_id=2, generation=1, reason="killed"))  # t1's pin moves to worker 1: saved
    saved = {(row.thread_id, row.worker_id, row.runtime_thread_id) for row in persistence.ask(LoadMappings())}
    assert saved == {("t0", 1, "rt-0"), ("t1", 1, None)}
    mapping.stop()
    persistence.stop()
    persistence, mapping = actors()
    assert mapping.ask(GetPins()) == {"t0": 1, "t1": 1}


def test_hydrated_pins_count_toward_each_workers_load(actors) -> None:
    persistence, mapping = actors()
    threads = _threads(persistence, 7)
    _up(mapping, 1)
    for thread_id in threads[:3]:  # three threads bound on worker 1, saved
        bind = BindRuntimeThread(
            thread_id=thread_id, worker_id=_route(mapping, thread_id).worker_id, runtime_thread_id="rt"
        )
        mapping.ask(ResolveThreads(thread_ids=(), updates=(bind,)))
    mapping.stop()
    persistence.stop()
    persistence, mapping = actors()
    _up(mapping, 1, 2)  # worker 1 holds three threads after the restart, worker 2 none: new threads go to 2 first,
    assert [_route(mapping, thread_id).worker_id for thread_id in threads[3:]] == [2, 2, 2, 1]  # one each: 3 and 3


def test_a_thread_bound_again_on_its_worker_counts_once(actors) -> None:
    persistence, mapping = actors()
    threads = _threads(persistence, 4)
    _up(mapping, 1, 2)
    assert [_route(mapping, thread_id).worker_id for thread_id in threads[:3]] == [1, 2, 1]
    for runtime_thread_id in ("rt-a", "rt-b"):  # t0 bound twice on worker 1: still one thread there
        bind = BindRuntimeThread(thread_id="t0", worker_id=1, runtime_thread_id=runtime_thread_id)
        mapping.ask(ResolveThreads(thread_ids=(), updates=(bind,)))
    assert _route(mapping, threads[3]).worker_id == 2  # loads 2 and 1


def test_a_degraded_worker_keeps_its_threads_and_gets_new_ones_only_when_alone(actors) -> None:
    persistence, mapping = actors()
    threads = _threads(persistence, 6)
    _up(mapping, 1, 2)
    assert [_route(mapping, thread_id).worker_id for thread_id in threads[:2]] == [1, 2]
    mapping.ask(WorkerHealth(worker_id=1, generation=1, degraded=True))
    assert [_route(mapping, thread_id).worker_id for thread_id in threads[:4]] == [1, 2, 2, 2]  # t0 stays on 1
    mapping.ask(WorkerDown(worker_id=2, generation=1, reason="killed"))  # worker 1 is all there is, degraded or not
    assert _route(mapping, threads[4]).worker_id == 1
    mapping.ask(WorkerHealth(worker_id=1, generation=1, degraded=False))
    _up(mapping, 2)
    assert _route(mapping, threads[5]).worker_id == 2  # a fresh worker 2 holds none, worker 1 all five


def test_a_health_report_never_makes_a_worker_that_is_not_up_a_candidate(actors) -> None:
    persistence, mapping = actors()
    threads = _threads(persistence, 3)
    _up(mapping, 1, 2)
    assert [_route(mapping, thread_id).worker_id for thread_id in threads[:2]] == [1, 2]
    mapping.ask(WorkerHealth(worker_id=3, generation=1, degraded=True))  # worker 3 never came up
    assert _route(mapping, threads[2]).worker_id == 1


def test_worker_down_moves_only_its_own_pins_and_says_how_many_stayed_unpinned(actors, events) -> None:
    persistence, mapping = actors()
    threads = _threads(persistence, 4)
    _up(mapping, 1, 2, 3)
    assert [_route(mapping, thread_id).worker_id for thread_id in threads[:3]] == [1, 2, 3]
    mapping.ask(WorkerDown(worker_id=3, generation=1, reason="killed"))
    assert mapping.ask(GetPins()) == {"t0": 1, "t1": 2, "t2": 1}  # only worker 3's thread moved
    assert _route(mapping, threads[3]).worker_id == 2
    mapping.ask(WorkerDown(worker_id=1, generation=1, reason="killed"))  # t0, t2 -> 2
    mapping.ask(WorkerDown(worker_id=2, generation=1, reason="killed"))  # nowhere to go: all four stay
    moved = [(e["from_worker"], e["moves"], e["left_unpinned"]) for e in events.of("mapping.pins_moved")]
    assert moved == [(3, {"t2": 1}, 0), (1, {"t0": 2, "t2": 2}, 0), (2, {}, 4)]
    assert mapping.ask(GetPins()) == {"t0": 2, "t1": 2, "t2": 2, "t3": 2}


def test_persistence_writes_the_transcript_with_each_change(actors) -> None:
    persistence, _ = actors()
    _threads(persistence, 1)
    assert persistence.ask(ReadTranscript(thread_id="t0")).startswith("# t0")


def test_a_worker_whose_pins_moved_away_is_least_loaded_again(actors) -> None:
    persistence, mapping = actors()
    threads = _threads(persistence, 9)
    _up(mapping, 1, 2, 3)
    assert [_route(mapping, t).worker_id for t in threads[:6]] == [1, 2, 3, 1, 2, 3]
    mapping.ask(WorkerDown(worker_id=1, generation=1, reason="killed"))  # t0 -> 2, t3 -> 3
    _up(mapping, 1)  # back, with nothing pinned to it: it takes the next three new threads
    assert mapping.ask(GetPins()) == {"t0": 2, "t1": 2, "t2": 3, "t3": 3, "t4": 2, "t5": 3}
    assert [_route(mapping, t).worker_id for t in threads[6:]] == [1, 1, 1]


def _route(mapping: Any, thread_id: str) -> Any:
    (route,) = mapping.ask(ResolveThreads(thread_ids=(thread_id,)))
    assert not isinstance(route, Exception), route
    return route
