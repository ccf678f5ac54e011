"""The coordinator's side of the mapping (actors._routes.Router): a thread's route is asked once and remembered until
an update of that thread or a worker event; a turn always runs on the worker its thread is pinned to."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import wait_until, worker

from agenthost.actors import FakeClock
from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import NoHealthyWorkerError
from agenthost.actors._routes import Router
from agenthost.chaos import kill_process_group
from agenthost.protocol._messages import (
    BindRuntimeThread,
    ResolveThreads,
    ThreadRoute,
    WorkerDown,
    WorkerHealth,
    WorkerUp,
)
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(60)


class _Mapping:
    """Answers resolves from its pins (worker 1 unless set) and records every message it was asked."""

    def __init__(self) -> None:
        self.asked: list[Any] = []
        self.pins: dict[str, tuple[int, str | None]] = {}

    def __call__(self, message: Any) -> Any:
        self.asked.append(message)
        if not isinstance(message, ResolveThreads):
            return None
        for update in message.updates:
            if isinstance(update, BindRuntimeThread):
                self.pins[update.thread_id] = (update.worker_id, update.runtime_thread_id)
        return tuple(self._route(thread_id) for thread_id in message.thread_ids)

    def _route(self, thread_id: str) -> ThreadRoute | NoHealthyWorkerError:
        if thread_id.startswith("nowhere"):
            return NoHealthyWorkerError(f"no runtime worker is up to run thread {thread_id!r}")
        worker_id, runtime_thread_id = self.pins.setdefault(thread_id, (1, None))
        return ThreadRoute(thread_id=thread_id, worker_id=worker_id, runtime_thread_id=runtime_thread_id)

    def resolves(self) -> list[tuple[str, ...]]:
        return [m.thread_ids for m in self.asked if isinstance(m, ResolveThreads)]


def _resolve(turn: str, thread: str) -> ev.Resolve:
    return ev.Resolve(turn_id=turn, thread_id=thread)


def _routes(outcomes: list[ev.Event]) -> list[tuple[str, int, str | None]]:
    return [(o.turn_id, o.worker_id, o.runtime_thread_id) for o in outcomes if isinstance(o, ev.Resolved)]


def test_a_remembered_route_is_not_asked_again_and_answers_the_same() -> None:
    mapping = _Mapping()
    mapping.pins["t1"] = (2, "rt-1")
    router = Router(mapping)
    first = router.resolve([_resolve("a", "t1")], [])
    second = router.resolve([_resolve("b", "t1")], [])
    assert mapping.resolves() == [("t1",)]
    assert _routes(first) == [("a", 2, "rt-1")] and _routes(second) == [("b", 2, "rt-1")]


def test_an_update_of_a_thread_is_asked_first_and_its_route_asked_again() -> None:
    mapping = _Mapping()
    router = Router(mapping)
    router.resolve([_resolve("a", "t1"), _resolve("b", "t2")], [])
    bind = ev.MappingUpdate(thread_id="t1", worker_id=1, runtime_thread_id="rt-new")
    assert router.resolve([], [bind]) == []  # the update alone (send_updates)
    assert [m.updates for m in mapping.asked if isinstance(m, ResolveThreads)][-1] == (
        BindRuntimeThread(thread_id="t1", worker_id=1, runtime_thread_id="rt-new"),
    )
    outcomes = router.resolve([_resolve("c", "t1")], [])
    assert mapping.resolves()[-1] == ("t1",)  # forgotten with its update: asked again, and the new id answered
    assert _routes(outcomes) == [("c", 1, "rt-new")]
    router.resolve([_resolve("d", "t2")], [])
    assert len(mapping.resolves()) == 3  # t2's route was kept


@pytest.mark.parametrize(
    "event",
    [
        WorkerUp(worker_id=3, generation=1, ref=None),
        WorkerDown(worker_id=1, generation=1, reason="exited"),
        WorkerHealth(worker_id=1, generation=1, degraded=True),
    ],
)
def test_every_worker_event_is_asked_and_forgets_every_route(event: Any) -> None:
    mapping = _Mapping()
    router = Router(mapping)
    router.resolve([_resolve("a", "t1"), _resolve("b", "t2")], [])
    router.worker_event(event)
    assert mapping.asked[-1] is event and len(router) == 0
    mapping.pins["t1"] = (2, None)  # (the mapping moved the pin)
    assert _routes(router.resolve([_resolve("c", "t1")], [])) == [("c", 2, None)]
    assert mapping.resolves()[-1] == ("t1",)


def test_a_thread_without_a_worker_is_unresolved_and_not_remembered() -> None:
    mapping = _Mapping()
    router = Router(mapping)
    outcomes = router.resolve([_resolve("a", "nowhere-1"), _resolve("b", "t1")], [])
    assert isinstance(outcomes[0], ev.Unresolved) and "nowhere-1" in outcomes[0].reason
    assert _routes(outcomes) == [("b", 1, None)]
    router.resolve([_resolve("c", "nowhere-1")], [])
    assert len(mapping.resolves()) == 2


def test_at_most_4096_routes_are_remembered_the_oldest_resolved_going_first() -> None:
    mapping = _Mapping()
    router = Router(mapping)
    router.resolve([_resolve(f"a{i}", f"t{i}") for i in range(4096)], [])
    router.resolve([_resolve("again", "t0")], [])  # t0 resolved most recently now: t1 is the oldest
    router.resolve([_resolve("new", "t-new")], [])
    assert len(router) == 4096
    asked = len(mapping.resolves())
    router.resolve([_resolve("b", "t0")], [])
    assert len(mapping.resolves()) == asked
    router.resolve([_resolve("c", "t1")], [])
    assert len(mapping.resolves()) == asked + 1


def test_a_mapping_answer_that_does_not_match_the_threads_asked_is_an_error() -> None:
    router = Router(lambda message: (ThreadRoute(thread_id="t1", worker_id=1),))  # one route for two threads
    with pytest.raises(ValueError, match="zip"):
        router.resolve([_resolve("a", "t1"), _resolve("b", "t2")], [])


def test_a_turn_runs_on_the_worker_its_thread_is_pinned_to_after_the_pin_moved(make_host, clock: FakeClock) -> None:
    """The route a thread's turns used is forgotten when its worker goes down, also once that worker is back up:
    every turn is dispatched to the thread's pin (the status's `pins`)."""
    host = make_host(workers=2)
    thread_id = host.create_thread()
    with capture_events("turns.dispatched") as log:
        for text in ("one", "two", "three"):  # the route is remembered from the second turn on
            assert host.send(thread_id, text).wait(20.0).status == "completed"
        first = host.status().pins[thread_id]
        killed = worker(host, first)
        kill_process_group(killed.pid)
        wait_until("the pin moved", lambda: host.status().pins[thread_id] != first)
        clock.advance(1.0)  # the pool's restart backoff: the killed worker comes back (a new generation)
        wait_until(
            "the killed worker up again",
            lambda: worker(host, first).state == "ready" and worker(host, first).pid != killed.pid,
        )
        moved = host.status().pins[thread_id]
        assert host.send(thread_id, "four").wait(20.0).status == "completed"
    assert moved != first
    assert [event["worker"] for event in log.of("turns.dispatched")] == [first, first, first, moved]
