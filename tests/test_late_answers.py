"""An ask past its deadline and its late answer (actors._deadline_asks, `take_back` of actors._turnstore and of the
storage): a begin or enqueue the caller heard refused, but which the storage committed once a slow sync ended,
is taken back, so no turn stays pending and no refused message runs (contract row S24)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from conftest import wait_until

from agenthost import AgentHost, Delta, HostConfig, HostUnavailableError, RuntimeFaults
from agenthost.actors import FakeClock
from agenthost.actors._coordinator import LATE_ANSWER_POLL_S
from agenthost.actors._deadline_asks import DeadlineAsks
from agenthost.actors._turnstore import TAKEN_BACK_NOTE
from agenthost.storage import Database
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(60)


class _Slow(pykka.ThreadingActor):
    def __init__(self, gate: threading.Event, seen: list[Any]) -> None:
        super().__init__()
        self._gate, self._seen = gate, seen

    def on_receive(self, message: Any) -> Any:
        self._seen.append(message)
        if message.startswith("slow"):
            self._gate.wait(10.0)
        if message.endswith("fail"):
            raise ValueError("its own error")
        return f"answer to {message}"


def test_a_slow_actor_is_not_asked_again_and_its_late_answer_is_handed_over_once() -> None:
    gate, seen, late = threading.Event(), [], []
    ref = _Slow.start(gate, seen)
    asks = DeadlineAsks(0.05, lambda message, answer: late.append((message, answer)))
    try:
        with pytest.raises(pykka.Timeout):
            asks.ask(ref, "slow")
        assert asks.waiting
        with pytest.raises(pykka.Timeout, match="not asked: its str has not answered yet"):
            asks.ask(ref, "second")
        assert seen == ["slow"] and late == []
        gate.set()
        wait_until("answered", lambda: asks.poll() or not asks.waiting)
        assert late == [("slow", "answer to slow")]
        asks.poll()
        assert late == [("slow", "answer to slow")]  # once
        assert asks.ask(ref, "third") == "answer to third"
    finally:
        ref.stop()


def test_a_late_answer_is_handed_over_before_the_next_ask_is_sent() -> None:
    gate, seen = threading.Event(), []
    ref = _Slow.start(gate, seen)
    order: list[str] = []
    asks = DeadlineAsks(0.05, lambda message, answer: order.append(f"late {message}: {answer!r}"))
    try:
        with pytest.raises(pykka.Timeout):
            asks.ask(ref, "slow")
        gate.set()
        wait_until("the slow ask answered", lambda: len(seen) == 1 and ref.ask("ping", timeout=5))
        order.append(asks.ask(ref, "next"))
        assert order == ["late slow: 'answer to slow'", "answer to next"]
    finally:
        ref.stop()


def test_a_late_error_is_handed_over_as_the_answer() -> None:
    gate, late = threading.Event(), []
    ref = _Slow.start(gate, [])
    asks = DeadlineAsks(0.05, lambda message, answer: late.append((message, answer)))
    try:
        with pytest.raises(pykka.Timeout):
            asks.ask(ref, "slow-fail")
        gate.set()
        wait_until("answered", lambda: asks.poll() or not asks.waiting)
        assert [(message, repr(answer)) for message, answer in late] == [("slow-fail", "ValueError('its own error')")]
    finally:
        ref.stop()


def test_storage_take_back_ends_turns_requeues_their_followups_and_cancels_enqueued(tmp_path) -> None:
    db = Database.open(str(tmp_path / "agenthost.sqlite3"))
    try:
        db.ensure_project("p", "p", 1.0)
        db.create_thread("t", "p", "title", 1.0)
        db.begin_turn("direct", "t", "hello", 2.0)
        db.begin_turn("done", "t", "earlier", 2.0)
        db.finish_turn("done", "completed", "ok", None, 3.0)
        db.enqueue_followup("queued-1", "t", "run me", 3.0)
        db.begin_followup_turn("queued-1", 4.0, turn_id="turn-of-1")
        db.enqueue_followup("refused-2", "t", "never run me", 5.0)
        ended = db.take_back([("direct", None), ("turn-of-1", "queued-1"), ("done", None)], ["refused-2"], "why", 6.0)
        assert [row.turn_id for row in ended] == ["direct", "turn-of-1"]
        turns = {row.turn_id: row for row in db.list_turns("t")}
        assert (turns["direct"].status, turns["direct"].error) == ("failed", "why")
        assert (turns["turn-of-1"].status, turns["turn-of-1"].error) == ("failed", "why")
        assert turns["done"].status == "completed"  # already moved on: left as it is
        followups = {row.followup_id: row for row in db.list_followups("t")}
        assert followups["queued-1"].state == "queued" and followups["queued-1"].turn_id == "turn-of-1"
        assert followups["refused-2"].state == "cancelled"
        assert db.next_followup("t") == followups["queued-1"]  # back in its place, first in line
        assert db.take_back([("direct", None)], ["refused-2"], "again", 7.0) == []  # twice: nothing more
    finally:
        db.close()


@contextlib.contextmanager
def _slow_host(tmp_path, clock: FakeClock, slow_message: str, **faults: Any) -> Iterator[tuple[AgentHost, Any]]:
    """A host whose persistence is held (a slow sync) on its first `slow_message` until the gate is set."""
    gate, slowed = threading.Event(), []

    def slow_once(child: str, message: Any) -> None:
        if child == "persistence" and type(message).__name__ == slow_message and not slowed:
            slowed.append(slow_message)
            gate.wait(10.0)  # a slow sync: far past the coordinator's ask deadline

    config = HostConfig(
        storage_root=str(tmp_path / "root"), workers=1, ask_timeout_s=0.3, worker_faults={1: RuntimeFaults(**faults)}
    )
    host = AgentHost(config, clock=clock, fault_hook=slow_once).start()
    try:
        yield host, gate
    finally:
        gate.set()
        host.shutdown(drain_timeout_s=1.0)


def _busy_thread(host: AgentHost) -> tuple[str, Any]:
    """A thread whose first turn is streaming (slowly: the worker's delta delay): what is sent to it now queues."""
    thread = host.create_thread()
    first = host.send(thread, "one two")
    first.wait_for(Delta, 20.0)
    return thread, first


def _taken_back(host: AgentHost, clock: FakeClock, thread: str, turn_id: str) -> Any:
    def ended() -> Any:
        clock.advance(LATE_ANSWER_POLL_S)
        return next((t for t in host.turns(thread) if t.turn_id == turn_id and t.status != "pending"), None)

    return wait_until(f"turn {turn_id} taken back", ended)


def test_a_direct_send_refused_past_the_deadline_is_taken_back_when_its_begin_lands(tmp_path, clock) -> None:
    with _slow_host(tmp_path, clock, "BeginTurns") as (host, gate):
        thread = host.create_thread()
        with capture_events("turns.taken_back") as log:
            with pytest.raises(HostUnavailableError, match="storage cannot take this now"):
                host.send(thread, "refused: the begin is stuck behind a slow sync")
            clock.advance(LATE_ANSWER_POLL_S)  # a look before the answer came: it looks again later
            assert host.approvals() == []  # (the coordinator has handled that look)
            gate.set()
            turn = wait_until("the begin landed", lambda: host.turns(thread))[0]
            row = _taken_back(host, clock, thread, turn.turn_id)
        assert (row.status, row.error) == ("failed", TAKEN_BACK_NOTE)
        assert log.of("turns.taken_back", ask="BeginTurns", turns=[turn.turn_id], followups=[])
        assert host.send(thread, "the next send runs").wait(20.0).status == "completed"


def test_a_followup_started_past_the_deadline_runs_again_as_a_new_turn(tmp_path, clock) -> None:
    with _slow_host(tmp_path, clock, "StartNextFollowUps", delta_delay_s=0.2) as (host, gate):
        thread, first = _busy_thread(host)
        queued = host.send(thread, "queued behind the first")
        assert queued.queued
        with capture_events("turns.followup_start_failed", "turns.taken_back") as log:
            assert first.wait(20.0).status == "completed"
            wait_until("its start refused", lambda: log.of("turns.followup_start_failed"))
            gate.set()
            stuck = next(t for t in host.turns(thread) if t.user_text == "queued behind the first")
            assert _taken_back(host, clock, thread, stuck.turn_id).error == TAKEN_BACK_NOTE
        assert log.of("turns.taken_back", ask="StartNextFollowUps", turns=[stuck.turn_id], followups=[])
        clock.advance(1.0)  # the coordinator's retry starts the queue's head again
        end = queued.wait(20.0)
        assert end.status == "completed"
        runs = [t for t in host.turns(thread) if t.user_text == "queued behind the first"]
        assert [t.status for t in runs] == ["failed", "completed"] and runs[1].turn_id != stuck.turn_id
        assert [f.state for f in host.followups(thread)] == ["done"]


def test_an_enqueue_refused_past_the_deadline_is_cancelled_and_never_runs(tmp_path, clock) -> None:
    with _slow_host(tmp_path, clock, "EnqueueFollowUps", delta_delay_s=0.2) as (host, gate):
        thread, first = _busy_thread(host)
        with pytest.raises(HostUnavailableError):
            host.send(thread, "refused: never run me")
        gate.set()

        def cancelled() -> bool:
            clock.advance(LATE_ANSWER_POLL_S)
            return [f.state for f in host.followups(thread)] == ["cancelled"]

        wait_until("the late enqueue cancelled", cancelled)
        assert first.wait(20.0).status == "completed"
        clock.advance(1.0)
        assert host.send(thread, "after").wait(20.0).status == "completed"
        assert [t.user_text for t in host.turns(thread)] == ["one two", "after"]
