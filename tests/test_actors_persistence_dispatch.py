"""The persistence actor's dispatch beyond the durability contract (tests/test_actors_persistence.py): the size of a
group commit, what a rename writes, what its timings measure, the storage checks as the running host sees them, a
refused take-back, and what a stop leaves behind."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from persistencekit import CheckpointGate, Collector

from agenthost.actors import FakeClock
from agenthost.actors._persistence import MAX_BATCH, PersistenceActor
from agenthost.actors._refs import ask
from agenthost.actors._upkeep import CHECKPOINT_INTERVAL_S, CHECKPOINT_PAGES
from agenthost.protocol._messages import (
    BeginTurn,
    Checkpoint,
    CompleteTurn,
    CreateThread,
    GetThread,
    HealthCheck,
    ListThreads,
    SaveMapping,
    SetDispatchMode,
    TakeBack,
    TakenBegin,
    UpdateThread,
)
from agenthost.storage import AtomicFs, Database, StorageIOError, StorageRoot
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(60)


def _started(tmp_path: Path, **kwargs: Any) -> tuple[Any, StorageRoot, FakeClock]:
    clock, root = FakeClock(), StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=clock, wall=time.time, **kwargs)
    ask(ref, CreateThread(thread_id="t1", project_id="p", title="first title"), 10.0)
    return ref, root, clock


def test_the_defaults_are_256_completions_a_commit_and_the_upkeeps_checkpoints_for_the_host_too() -> None:
    from agenthost import HostConfig

    assert MAX_BATCH == 256  # D7
    defaults = inspect.signature(PersistenceActor.__init__).parameters
    assert [defaults[name].default for name in ("max_batch", "checkpoint_interval_s", "checkpoint_pages")] == [
        MAX_BATCH,
        CHECKPOINT_INTERVAL_S,
        CHECKPOINT_PAGES,
    ]
    assert HostConfig(storage_root="root").checkpoint_interval_s == CHECKPOINT_INTERVAL_S


def test_completions_waiting_past_max_batch_are_committed_max_batch_at_a_time(tmp_path: Path) -> None:
    """D7: up to 256 per transaction: 257 waiting together are two commits, of 256 and of 1."""
    gate = CheckpointGate()
    ref, _root, _clock = _started(tmp_path, fault_hook=gate)
    try:
        ids = [f"u{index}" for index in range(MAX_BATCH + 1)]
        for turn_id in ids:
            ask(ref, BeginTurn(turn_id=turn_id, thread_id="t1", user_text="q"), 10.0)
        replies = Collector()
        with capture_events("persistence.group_commit") as log:
            ref.tell(Checkpoint(mode="PASSIVE"))  # held: the completions wait together behind it
            for turn_id in ids:
                ref.tell(CompleteTurn(turn_id=turn_id, assistant_text="a", reply_to=replies))
            gate.release.set()
            for _ in ids:
                assert replies.replies.get(timeout=20).error is None
        assert [event["completions"] for event in log.events] == [MAX_BATCH, 1]
    finally:
        gate.release.set()
        ref.stop()


def test_a_new_title_reaches_the_transcript_and_new_settings_alone_write_none(tmp_path: Path) -> None:
    ref, root, _clock = _started(tmp_path)
    transcript = root.transcript_path("p", "t1")
    try:
        ask(ref, UpdateThread(thread_id="t1", title="second title"), 10.0)
        renamed = transcript.read_bytes()
        assert b"second title" in renamed
        ask(ref, UpdateThread(thread_id="t1", thread_settings={"model": "m"}), 10.0)
        ask(ref, SetDispatchMode(thread_id="t1", mode="manual"), 10.0)
        assert transcript.read_bytes() == renamed
    finally:
        ref.stop()


class _SlowAppends(AtomicFs):
    """Every transcript append takes `seconds` longer (a slow disk)."""

    seconds = 0.1

    def append(self, path: Any, data: bytes) -> None:
        time.sleep(self.seconds)
        super().append(path, data)


def test_a_writes_commit_time_leaves_its_transcript_time_out(tmp_path: Path) -> None:
    ref, _root, _clock = _started(tmp_path, transcript_fs=_SlowAppends())
    try:
        with capture_events("persistence.timed") as log:
            started = time.perf_counter()
            ask(ref, BeginTurn(turn_id="u1", thread_id="t1", user_text="q"), 10.0)
            elapsed = time.perf_counter() - started
        timed = {event["op"]: event["seconds"] for event in log.events}
        assert timed["transcript"] >= _SlowAppends.seconds
        assert 0.0 < timed["commit"] < _SlowAppends.seconds  # a commit takes some time, never its transcript's
        assert timed["commit"] + timed["transcript"] <= elapsed
    finally:
        ref.stop()


def test_the_running_hosts_health_check_does_not_count_turns_in_flight(tmp_path: Path) -> None:
    ref, _root, _clock = _started(tmp_path)
    try:
        ask(ref, BeginTurn(turn_id="u1", thread_id="t1", user_text="q"), 10.0)  # pending: the coordinator's
        findings = ask(ref, HealthCheck(), 10.0)
        assert findings and all(finding.status == "ok" for finding in findings)
        assert "pending-turn" not in {finding.kind for finding in findings}
    finally:
        ref.stop()


def test_a_take_back_the_storage_refuses_is_logged_and_the_actor_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Database, *args: Any) -> None:
        raise StorageIOError("injected: disk I/O error during the take-back")

    ref, _root, _clock = _started(tmp_path)
    try:
        monkeypatch.setattr(Database, "take_back", refuse)
        with capture_events("persistence.take_back_failed") as log:
            ref.tell(TakeBack(begun=(TakenBegin(turn_id="u1"),), enqueued=("f1",), error="late"))
            assert [thread.thread_id for thread in ask(ref, ListThreads(), 10.0)] == ["t1"]  # still answering
        assert [(event["turns"], event["followups"]) for event in log.events] == [(["u1"], ["f1"])]
    finally:
        ref.stop()


def test_a_stop_cancels_the_checkpoint_tick_and_says_it_checkpointed(tmp_path: Path) -> None:
    ref, _root, clock = _started(tmp_path)
    assert clock.pending_due_times()  # the first tick
    with capture_events("persistence.closed") as log:
        ref.stop()
    assert clock.pending_due_times() == []
    assert [event["checkpoint"] for event in log.events] == ["TRUNCATE"]


def test_a_crash_closes_without_a_checkpoint_and_says_nothing_of_one(tmp_path: Path) -> None:
    import msgspec

    class Stranger(msgspec.Struct, frozen=True):
        pass

    ref, _root, clock = _started(tmp_path)
    with capture_events("persistence.closed") as log:
        with pytest.raises(Exception, match="Stranger"):
            ref.ask(Stranger(), timeout=10)
        wait_until("the actor stopped", lambda: not ref.is_alive())
    assert log.events == [] and clock.pending_due_times() == []


def test_a_pin_told_first_after_a_start_waits_for_the_next_commit(tmp_path: Path) -> None:
    """D27: a pin alone does not make a commit, also as the actor's first told write (reads pass it)."""
    ref, root, _clock = _started(tmp_path)
    ref.stop()
    ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time)
    probe = Database.open(root.db_path)
    try:
        ref.tell(SaveMapping(thread_id="t1", worker_id=1, runtime_thread_id="rt-1"))
        for _ in range(2):
            assert ask(ref, GetThread(thread_id="t1"), 10.0).thread_id == "t1"
        assert probe.load_pins() == []
        ask(ref, BeginTurn(turn_id="u1", thread_id="t1", user_text="q"), 10.0)  # the next write commits it with it
        assert [(pin.thread_id, pin.worker_id) for pin in probe.load_pins()] == [("t1", 1)]
    finally:
        probe.close(checkpoint=False)
        ref.stop()


def test_completions_a_read_passed_are_committed_each_time_not_only_the_first(tmp_path: Path) -> None:
    """A read answered past waiting completions makes the actor commit them after the messages queued: every time."""
    gate = CheckpointGate()
    ref, _root, _clock = _started(tmp_path, fault_hook=gate)
    try:
        for round_ in range(3):
            ask(ref, BeginTurn(turn_id=f"u{round_}", thread_id="t1", user_text="q"), 10.0)
            replies, gate.release = Collector(), type(gate.release)()
            ref.tell(Checkpoint(mode="PASSIVE"))  # held: the completion and the read wait together behind it
            ref.tell(CompleteTurn(turn_id=f"u{round_}", assistant_text="a", reply_to=replies))
            read = ref.ask(GetThread(thread_id="t1"), block=False)
            gate.release.set()
            assert read.get(timeout=10).thread_id == "t1"
            assert replies.replies.get(timeout=10).error is None  # no other message came to commit it
    finally:
        gate.release.set()
        ref.stop()


def test_reads_passing_waiting_completions_tell_one_commit_however_many_they_are(tmp_path: Path) -> None:
    gate = CheckpointGate()
    ref, _root, _clock = _started(tmp_path, fault_hook=gate)
    try:
        ask(ref, BeginTurn(turn_id="u1", thread_id="t1", user_text="q"), 10.0)
        replies = Collector()
        ref.tell(Checkpoint(mode="PASSIVE"))  # held: the completion and three reads wait together behind it
        ref.tell(CompleteTurn(turn_id="u1", assistant_text="a", reply_to=replies))
        reads = [ref.ask(GetThread(thread_id="t1"), block=False) for _ in range(3)]
        gate.release.set()
        assert [read.get(timeout=10).thread_id for read in reads] == ["t1"] * 3
        assert replies.replies.get(timeout=10).error is None
        assert gate.seen.count("_CommitWaiting") == 1
    finally:
        gate.release.set()
        ref.stop()
