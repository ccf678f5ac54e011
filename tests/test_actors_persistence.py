"""The persistence actor's durability contract: what is durable when a caller hears back."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import wait_until
from persistencekit import CheckpointGate, Collector

from agenthost.actors import FakeClock
from agenthost.actors._persistence import PersistenceActor
from agenthost.protocol._messages import (
    BeginTurn,
    CompleteTurn,
    CreateThread,
    FinishTurn,
    GetThread,
    ListThreads,
    ListTurns,
    TurnBegun,
    TurnPersisted,
)
from agenthost.storage import AtomicFs, Database, StorageFullError, StorageRoot, UnknownThreadError, parse_checkpoints
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def persistence(tmp_path):
    root = StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time, checkpoint_pages=20)
    yield ref, root
    if ref.is_alive():
        ref.stop()


def _turns(ref, count: int, thread_id: str = "t1") -> list[str]:
    ref.ask(CreateThread(thread_id=thread_id, project_id="p", title=thread_id))
    ids = [f"{thread_id}-turn{i}" for i in range(count)]
    for turn_id in ids:
        ref.ask(BeginTurn(turn_id=turn_id, thread_id=thread_id, user_text=f"q {turn_id}"))
    return ids


def _hold_completions(ref: Any, ids: list[str], collector: Collector) -> None:
    """A checkpoint the gate holds, then a completion of each turn: they wait in the mailbox together behind it
    (with whatever the test sends next) until the gate is released."""
    from agenthost.protocol._messages import Checkpoint

    ref.tell(Checkpoint(mode="PASSIVE"))
    for turn_id in ids:
        ref.tell(CompleteTurn(turn_id=turn_id, assistant_text="a", reply_to=collector))


def test_a_completion_is_in_the_db_and_transcript_when_its_reply_arrives(persistence) -> None:
    ref, root = persistence
    ids = _turns(ref, 40)
    collector = Collector()
    for turn_id in ids:
        ref.tell(CompleteTurn(turn_id=turn_id, assistant_text=f"a {turn_id}", worker_id=1, reply_to=collector))
    probe = Database.open(root.db_path)  # a second connection sees only committed data
    try:
        for _ in ids:
            reply = collector.replies.get(timeout=10)
            assert isinstance(reply, TurnPersisted) and reply.error is None
            committed = probe.get_turn(reply.turn_id)
            assert (committed.status, committed.assistant_text, committed.worker_id) == (
                "completed",
                f"a {reply.turn_id}",
                1,
            )
            phases = dict(parse_checkpoints(root.transcript_path("p", "t1").read_text()))
            assert phases[reply.turn_id] == "completed"
    finally:
        probe.close(checkpoint=False)


@pytest.fixture
def gated(tmp_path):
    gate = CheckpointGate()
    root = StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time, fault_hook=gate)
    yield ref, root, gate
    gate.release.set()
    if ref.is_alive():
        ref.stop()


def _told_while_held(ref: Any, gate: CheckpointGate, completions: list[CompleteTurn]) -> list[dict[str, Any]]:
    """Tell `completions` while the actor is held; return the group commits it then made."""
    from agenthost.protocol._messages import Checkpoint

    with capture_events("persistence.group_commit") as log:
        ref.tell(Checkpoint(mode="PASSIVE"))
        for completion in completions:
            ref.tell(completion)
        gate.release.set()
        ref.ask(ListThreads())  # any ask is handled after the waiting completions are flushed
    return log.events


def test_completions_that_wait_together_are_committed_in_one_transaction(gated) -> None:
    ref, _root, gate = gated
    ids = _turns(ref, 40)
    collector = Collector()
    commits = _told_while_held(
        ref, gate, [CompleteTurn(turn_id=turn_id, assistant_text="a", reply_to=collector) for turn_id in ids]
    )
    assert [commit["completions"] for commit in commits] == [40]  # one group commit, not 40
    assert {collector.replies.get(timeout=10).turn_id for _ in ids} == set(ids)


def test_one_bad_completion_does_not_fail_its_batch(gated) -> None:
    ref, _, gate = gated
    ids = _turns(ref, 5)
    ref.ask(FinishTurn(turn_id=ids[2], status="failed", error="already over"))
    collector = Collector()
    commits = _told_while_held(
        ref, gate, [CompleteTurn(turn_id=turn_id, assistant_text="x", reply_to=collector) for turn_id in ids]
    )
    assert [commit["completions"] for commit in commits] == [5]  # the bad one was in the same batch
    replies = {r.turn_id: r for r in (collector.replies.get(timeout=10) for _ in ids)}
    assert [turn_id for turn_id, r in replies.items() if r.error] == [ids[2]]
    assert "terminal states are final" in replies[ids[2]].error


def test_an_asked_write_flushes_earlier_completions_first(persistence) -> None:
    ref, root = persistence
    ids = _turns(ref, 10)
    collector = Collector()
    for turn_id in ids[:-1]:
        ref.tell(CompleteTurn(turn_id=turn_id, assistant_text="done", reply_to=collector))
    ref.ask(FinishTurn(turn_id=ids[-1], status="failed", error="boom"))  # bypasses the batch, ordered after it
    probe = Database.open(root.db_path)
    try:
        assert [t.status for t in probe.list_turns("t1")] == ["completed"] * 9 + ["failed"]
    finally:
        probe.close(checkpoint=False)


def test_wal_growth_triggers_a_passive_checkpoint_without_the_timer(persistence) -> None:
    ref, _ = persistence
    with capture_events("persistence.checkpoint") as log:
        _turns(ref, 60)  # FakeClock never advances: only the WAL hook can trigger these
    assert [e["mode"] for e in log.events] and all(e["mode"] == "PASSIVE" for e in log.events)


def test_a_database_that_fails_quick_check_is_quarantined_and_rebuilt(tmp_path) -> None:
    root = StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time)
    ids = _turns(ref, 3)
    ref.stop()
    db = Database.open(root.db_path)
    db.ensure_project("filler", "filler", 1.0)
    for i in range(300):  # pages beyond the first few, so garbage can hit a b-tree page
        db.create_thread(f"f{i}", "filler", "x" * 200, 1.0)
    db.close()
    data = bytearray(root.db_path.read_bytes())
    data[4096 * 2 : 4096 * 2 + 512] = b"\xff" * 512
    root.db_path.write_bytes(bytes(data))
    with capture_events("storage.quarantined") as log:
        ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time)
        ref.ask(ListThreads())  # answered after the actor's start-up work: the open, quarantine and rebuild
    try:
        event = log.events[0]
        assert "corrupt" in event["reason"] and any(path.endswith("agenthost.db") for path in event["moved"])
        rebuilt = ref.ask(ListTurns(thread_id="t1"))
        assert [t.turn_id for t in rebuilt] == ids  # rebuilt from the transcript
    finally:
        ref.stop()


def test_followup_dispatch_is_one_transaction_and_runs_once(tmp_path) -> None:
    from agenthost.storage import StorageError

    root = StorageRoot(tmp_path / "root")
    root.ensure()
    db = Database.open(root.db_path)
    try:
        db.ensure_project("p", "p", 1.0)
        db.create_thread("t", "p", "t", 1.0)
        db.enqueue_followup("f1", "t", "later", 1.0)
        turn = db.begin_followup_turn("f1", 2.0)
        assert (turn.turn_id, turn.user_text, turn.status) == ("f1", "later", "pending")
        assert db.list_followups("t")[0].state == "dispatched"
        with pytest.raises(StorageError, match="runs only once"):
            db.begin_followup_turn("f1", 3.0)
    finally:
        db.close()


def test_a_close_the_disk_refuses_still_releases_the_root(tmp_path, monkeypatch) -> None:
    """Found by chaos (seed 7): a full disk failed SQLite's checkpoint at close, the lock stayed held, and every
    restarted persistence actor failed with RootLockedError."""
    root = StorageRoot(tmp_path / "root")
    first = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time)
    assert first.ask(ListThreads(), timeout=10) == []

    def refuse(self: Database, *, checkpoint: bool = True) -> None:
        raise StorageFullError("disk is full")

    monkeypatch.setattr(Database, "close", refuse)
    with capture_events("persistence.close_failed") as events:
        first.stop()
    monkeypatch.undo()
    [failed] = events.of("persistence.close_failed")
    assert failed["checkpoint"] is True and "disk is full" in failed["error"]
    second = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time)
    try:
        assert second.ask(ListThreads(), timeout=10) == []  # it took the root: the lock was released
    finally:
        second.stop()


class _HeldSyncs(AtomicFs):
    """Once `armed`, records appends and fsyncs of transcripts, holds each fsync until `release` is set, and fails
    the fsync of the transcripts named in `failing`."""

    def __init__(self) -> None:
        import threading

        self.calls: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.failing: set[str] = set()
        self.armed = False

    def append(self, path: Any, data: bytes) -> None:
        if self.armed:
            self.calls.append(("append", path.stem))
        super().append(path, data)

    def fsync_file(self, path: Any) -> None:
        if self.armed:
            self.calls.append(("fsync", path.stem))
            self.release.wait(10.0)
            if path.stem in self.failing:
                raise OSError(5, "injected fsync failure")
        super().fsync_file(path)


def test_transcript_appends_are_fsynced_after_the_answers_once_per_thread_and_unmarked_only_then(tmp_path) -> None:
    """D4/D12: appends do not wait for their fsync: every begin is answered (its record readable) while the fsyncs
    are held; once `sync_threads` transcripts wait, one fsync per thread, however many records it got, on a thread
    of their own: the actor goes on answering (and appending) while they are held; fewer wait for the checkpoint
    tick; a thread is unmarked in the database only once its transcript was fsynced after its last append (a
    failing fsync keeps it marked)."""
    from agenthost.protocol._messages import Checkpoint

    gate, fs, clock = CheckpointGate(), _HeldSyncs(), FakeClock()
    root = StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(
        root=root, clock=clock, wall=time.time, fault_hook=gate, transcript_fs=fs, sync_threads=3
    )
    try:
        for thread_id in ("t1", "t2", "t3"):
            ref.ask(CreateThread(thread_id=thread_id, project_id="p", title=thread_id))
        fs.armed = True
        ref.tell(Checkpoint(mode="PASSIVE"))  # held: the begins wait together behind it
        begins = [("t1", "a"), ("t1", "b"), ("t2", "a"), ("t3", "a")]
        futures = [
            ref.ask(BeginTurn(turn_id=f"{t}-{n}", thread_id=t, user_text=f"q {t}-{n}"), block=False) for t, n in begins
        ]
        gate.release.set()
        for future in futures:
            assert future.get(timeout=10).turn.status == "pending"  # answered while every fsync is still held
        for thread_id in ("t1", "t2", "t3"):
            assert "q " + thread_id + "-a" in root.transcript_path("p", thread_id).read_text()
        wait_until("the fsync of t1 is held", lambda: ("fsync", "t1") in fs.calls)
        begun = ref.ask(BeginTurn(turn_id="t1-c", thread_id="t1", user_text="q t1-c"), timeout=5)  # meanwhile
        assert begun.turn.status == "pending" and not fs.release.is_set()
        assert fs.calls == [("append", t) for t, _ in begins] + [("fsync", "t1"), ("append", "t1")]
        with capture_events("persistence.transcript_failed") as failed:
            fs.failing.add("t2")
            fs.release.set()
            wait_until("the failed fsync of t2 is taken", lambda: failed.of("persistence.transcript_failed"))
        assert fs.calls[-2:] == [("fsync", "t2"), ("fsync", "t3")]
        fs.calls.clear()
        ref.ask(ListThreads())
        assert fs.calls == []  # t1 got an append since its fsync: one waits, not fsynced before the tick
        clock.advance(5.0)  # checkpoint tick: fsync what waits (t1 again), repair t2, unmark the synced threads
        ref.ask(ListThreads())
        assert ("fsync", "t1") in fs.calls
        probe = Database.open(root.db_path)
        try:
            assert [thread.thread_id for thread in probe.dirty_transcripts()] == ["t2"]
        finally:
            probe.close(checkpoint=False)
    finally:
        gate.release.set()
        fs.release.set()
        ref.stop()


def _completions_pin_then_begin(ref: Any, gate: Any, ids: list[str], collector: Any, *, worker_id: int) -> Any:
    """Hold the actor behind a checkpoint, tell it the completions of `ids` and a pin of t1, ask a begin on t1
    behind them, release it: the begin's answer (its completions' replies go to `collector`)."""
    from agenthost.protocol._messages import SaveMapping

    _hold_completions(ref, ids, collector)
    ref.tell(SaveMapping(thread_id="t1", worker_id=worker_id, runtime_thread_id="rt-1"))
    begun = ref.ask(BeginTurn(turn_id="t1-next", thread_id="t1", user_text="next"), block=False)
    gate.release.set()
    return begun.get(timeout=10)


def _count_commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every commit of a persistence actor started from now on appends to the returned list (its WAL hook runs once
    per commit)."""
    commits: list[int] = []
    original = PersistenceActor._on_wal_commit

    def counted(self: PersistenceActor, pages: int) -> None:
        commits.append(pages)
        original(self, pages)

    monkeypatch.setattr(PersistenceActor, "_on_wal_commit", counted)
    return commits


def test_an_asked_begin_joins_the_waiting_completions_in_one_transaction(tmp_path, monkeypatch) -> None:
    """D27: completions and a pin waiting in the batch and the begin asked behind them are ONE commit; the begin is
    answered and every completion's caller told only after it."""
    commits = _count_commits(monkeypatch)
    gate, root = CheckpointGate(), StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time, fault_hook=gate)
    try:
        _joined_begin(ref, root, gate, commits)
    finally:
        gate.release.set()
        ref.stop()


def _joined_begin(ref: Any, root: StorageRoot, gate: CheckpointGate, commits: list[int]) -> None:

    ids = _turns(ref, 5)
    collector = Collector()
    commits.clear()
    assert _completions_pin_then_begin(ref, gate, ids, collector, worker_id=2).turn.status == "pending"
    assert {collector.replies.get(timeout=10).turn_id for _ in ids} == set(ids)
    assert len(commits) == 1, commits  # the completions, the pin and the begin: one transaction
    probe = Database.open(root.db_path)
    try:
        assert [t.status for t in probe.list_turns("t1")] == ["completed"] * 5 + ["pending"]
        assert [(m.thread_id, m.worker_id, m.runtime_thread_id) for m in probe.load_mappings()] == [("t1", 2, "rt-1")]
    finally:
        probe.close(checkpoint=False)


def test_a_refused_joining_begin_fails_alone_and_the_completions_still_commit(gated) -> None:

    ref, root, gate = gated
    ids = _turns(ref, 3)
    collector = Collector()
    _hold_completions(ref, ids, collector)
    refused = ref.ask(BeginTurn(turn_id="x-1", thread_id="no-such-thread", user_text="q"), block=False)
    gate.release.set()
    with pytest.raises(UnknownThreadError):
        refused.get(timeout=10)
    replies = [collector.replies.get(timeout=10) for _ in ids]
    assert all(reply.error is None for reply in replies)
    probe = Database.open(root.db_path)
    try:
        assert [t.status for t in probe.list_turns("t1")] == ["completed"] * 3
    finally:
        probe.close(checkpoint=False)


def test_a_joining_batch_one_item_of_which_is_refused_answers_each_item_its_own_outcome(gated) -> None:
    """D27/D25: the joining round's refusal undoes the round in the group, then its items run again alone: only the
    bad one is refused, the others stand, and the completions commit either way."""
    from agenthost.protocol._messages import BeginTurns

    ref, root, gate = gated
    ids = _turns(ref, 2)
    collector = Collector()
    _hold_completions(ref, ids, collector)
    begins = (
        BeginTurn(turn_id="x-good", thread_id="t1", user_text="q"),
        BeginTurn(turn_id="x-bad", thread_id="no-such-thread", user_text="q"),
    )
    round_answer = ref.ask(BeginTurns(begins=begins), block=False)
    gate.release.set()
    good, bad = round_answer.get(timeout=10)
    assert isinstance(good, TurnBegun) and good.turn.turn_id == "x-good"
    assert isinstance(bad, UnknownThreadError) and "no-such-thread" in str(bad)
    assert all(collector.replies.get(timeout=10).error is None for _ in ids)
    probe = Database.open(root.db_path)
    try:
        assert [(t.turn_id, t.status) for t in probe.list_turns("t1")][-3:] == [
            (ids[0], "completed"),
            (ids[1], "completed"),
            ("x-good", "pending"),
        ]
    finally:
        probe.close(checkpoint=False)


def test_a_pin_waits_for_the_next_commit_and_is_durable_before_the_turn_end_after_it(tmp_path) -> None:
    """D27: a told pin alone is not a commit of its own: it waits for the next completion (committed with it, before
    that caller hears back) or, at the latest, the next checkpoint tick."""
    from agenthost.protocol._messages import SaveMapping

    clock = FakeClock()
    root = StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=clock, wall=time.time)
    probe = None
    try:
        (turn_id,) = _turns(ref, 1)
        ref.tell(SaveMapping(thread_id="t1", worker_id=1, runtime_thread_id="rt-1"))
        ref.ask(GetThread(thread_id="t1"))  # handled after the pin, which still waits (a GetThread reads no pin)
        probe = Database.open(root.db_path)
        assert probe.load_mappings() == []
        collector = Collector()
        ref.tell(CompleteTurn(turn_id=turn_id, assistant_text="a", reply_to=collector))
        assert collector.replies.get(timeout=10).error is None
        assert [m.runtime_thread_id for m in probe.load_mappings()] == ["rt-1"]
        ref.tell(SaveMapping(thread_id="t1", worker_id=1, runtime_thread_id="rt-2"))
        clock.advance(5.0)  # the checkpoint tick commits what waits
        ref.ask(ListThreads())
        assert [m.runtime_thread_id for m in probe.load_mappings()] == ["rt-2"]
    finally:
        if probe is not None:
            probe.close(checkpoint=False)
        ref.stop()


def test_a_joining_begin_refused_after_its_rows_were_written_leaves_no_record_in_the_transcript(
    gated, monkeypatch
) -> None:
    """D27: a joining message whose savepoint is rolled back (here reading the thread's settings fails after its
    begins were written) takes back the transcript appends it asked for: the transcript never holds a turn the
    database does not."""
    from agenthost.protocol._messages import BeginTurns, Checkpoint
    from agenthost.storage import StorageIOError, ThreadRow

    ref, root, gate = gated
    ids = _turns(ref, 2)
    collector = Collector()

    def thread_settings(self: ThreadRow) -> Any:
        raise StorageIOError("injected read failure after the begin")

    ref.tell(Checkpoint(mode="PASSIVE"))  # held: the completion and the begin wait together
    ref.tell(CompleteTurn(turn_id=ids[0], assistant_text="the answer kept", reply_to=collector))
    begin = BeginTurn(turn_id="t1-refused", thread_id="t1", user_text="never stored")
    asked = ref.ask(BeginTurns(begins=(begin,)), block=False)
    monkeypatch.setattr(ThreadRow, "thread_settings", thread_settings)
    gate.release.set()
    with pytest.raises(StorageIOError):
        asked.get(timeout=10)
    monkeypatch.undo()
    assert collector.replies.get(timeout=10).error is None
    probe = Database.open(root.db_path)
    try:
        assert [t.turn_id for t in probe.list_turns("t1")] == ids
        assert probe.get_turn(ids[0]).status == "completed"
    finally:
        probe.close(checkpoint=False)
    text = root.transcript_path("p", "t1").read_text()
    assert "t1-refused" not in text and "never stored" not in text
    assert "the answer kept" in text  # what the completions before it asked for is not taken back with it


def test_a_group_commit_that_fails_is_split_and_every_part_still_lands(gated, monkeypatch) -> None:
    """D27: when the one transaction of a group fails, nothing of it stood; the same writes run again, each part in
    its own transaction, and the split is one "persistence.group_commit_split" event."""
    import contextlib

    from agenthost.storage import StorageIOError

    ref, root, gate = gated
    ids = _turns(ref, 3)
    collector = Collector()
    original = Database.batch
    failed: list[str] = []

    @contextlib.contextmanager
    def batch(self: Database, action: str) -> Any:
        with original(self, action):
            yield
            if action.startswith("group commit") and not failed:
                failed.append(action)
                raise StorageIOError("injected failure of the group's commit")

    monkeypatch.setattr(Database, "batch", batch)
    with capture_events("persistence.group_commit_split") as log:
        assert _completions_pin_then_begin(ref, gate, ids, collector, worker_id=1).turn.status == "pending"
        assert all(collector.replies.get(timeout=10).error is None for _ in ids)
    assert failed == ["group commit of 4 told writes with BeginTurn"]
    assert [(event["writes"], event["asked"]) for event in log.events] == [(4, "BeginTurn")]
    probe = Database.open(root.db_path)
    try:
        assert [t.status for t in probe.list_turns("t1")] == ["completed"] * 3 + ["pending"]
        assert [m.runtime_thread_id for m in probe.load_mappings()] == ["rt-1"]
    finally:
        probe.close(checkpoint=False)
    assert root.transcript_path("p", "t1").read_text().count("t1-next") >= 1


def test_a_stop_waits_for_the_background_fsync_and_unmarks_what_it_synced(tmp_path) -> None:
    """D12: transcripts handed to the background fsync when the actor stops are waited for (up to
    FSYNC_STOP_WAIT_S) and count as synced: a clean stop leaves no thread marked."""
    fs = _HeldSyncs()

    class ReleasingAtStop(PersistenceActor):
        def on_stop(self) -> None:
            fs.release.set()  # the held fsync goes on only now: the stop must wait for it
            super().on_stop()

    root = StorageRoot(tmp_path / "root")
    ref = ReleasingAtStop.start(root=root, clock=FakeClock(), wall=time.time, transcript_fs=fs, sync_threads=1)
    try:
        ref.ask(CreateThread(thread_id="t1", project_id="p", title="t1"))
        fs.armed = True
        ref.ask(BeginTurn(turn_id="u1", thread_id="t1", user_text="q"))
        wait_until("the fsync of t1 is held", lambda: ("fsync", "t1") in fs.calls)
    finally:
        ref.stop()
    assert fs.calls == [("append", "t1"), ("fsync", "t1")]  # fsynced once: in the background, not again at stop
    probe = Database.open(root.db_path)
    try:
        assert probe.dirty_transcripts() == []
    finally:
        probe.close(checkpoint=False)


def test_a_thread_read_is_answered_before_the_waiting_completions_commit_and_they_still_commit(
    tmp_path, monkeypatch
) -> None:
    """D29: `GetThread` reads nothing a told write changes, so it does not wait for their commit; the completions it
    passed are committed right after (together), with no further message to the actor."""

    commits = _count_commits(monkeypatch)
    commits_when_read: list[int] = []
    original = Database.get_thread

    def counted_read(self: Database, thread_id: str) -> Any:
        commits_when_read.append(len(commits))
        return original(self, thread_id)

    gate, root = CheckpointGate(), StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time, fault_hook=gate)
    try:
        ids = _turns(ref, 3)
        collector = Collector()
        commits.clear()
        monkeypatch.setattr(Database, "get_thread", counted_read)
        _hold_completions(ref, ids, collector)
        read = ref.ask(GetThread(thread_id="t1"), block=False)
        gate.release.set()
        assert read.get(timeout=10).thread_id == "t1"
        assert commits_when_read[0] == 0  # read while the completions still waited
        assert {collector.replies.get(timeout=10).turn_id for _ in ids} == set(ids)  # nothing else was sent
        assert len(commits) == 1, commits
    finally:
        gate.release.set()
        ref.stop()


def test_told_pins_and_follow_up_states_the_storage_refuses_are_logged_each_and_the_rest_commit(persistence) -> None:
    """Told writes have no caller to hear a refusal: each refused one is one error event naming it; the others in
    the same group commit land. A refused told write refuses its group (it opens no savepoint), which is split."""
    from agenthost.protocol._messages import EnqueueFollowUp, SaveMapping, SettleFollowUp

    ref, root = persistence
    (turn_id,) = _turns(ref, 1)
    ref.ask(EnqueueFollowUp(followup_id="f1", thread_id="t1", text="later"))
    names = ("persistence.group_commit_split", "persistence.mapping_save_failed", "persistence.followup_settle_failed")
    with capture_events(*names) as log:
        ref.tell(SaveMapping(thread_id="ghost", worker_id=1, runtime_thread_id="rt-x"))
        ref.tell(SaveMapping(thread_id="t1", worker_id=2, runtime_thread_id="rt-1"))
        ref.tell(SettleFollowUp(followup_id="no-such-followup", state="cancelled"))
        ref.tell(SettleFollowUp(followup_id="f1", state="cancelled"))
        collector = Collector()
        ref.tell(CompleteTurn(turn_id=turn_id, assistant_text="a", reply_to=collector))
        assert collector.replies.get(timeout=10).error is None
    assert [(e["event"], e.get("thread") or e.get("followup") or e.get("writes")) for e in log.events] == [
        ("persistence.group_commit_split", 5),
        ("persistence.mapping_save_failed", "ghost"),
        ("persistence.followup_settle_failed", "no-such-followup"),
    ]
    probe = Database.open(root.db_path)
    try:
        assert [(m.thread_id, m.runtime_thread_id) for m in probe.load_mappings()] == [("t1", "rt-1")]
        assert [f.state for f in probe.list_followups("t1")] == ["cancelled"]
    finally:
        probe.close(checkpoint=False)


def test_a_group_commit_reports_its_own_time(persistence) -> None:
    ref, _ = persistence
    (turn_id,) = _turns(ref, 1)
    collector = Collector()
    with capture_events("persistence.timed") as log:
        started = time.perf_counter()
        ref.tell(CompleteTurn(turn_id=turn_id, assistant_text="a", reply_to=collector))
        assert collector.replies.get(timeout=10).error is None
        elapsed = time.perf_counter() - started
    commits = [e["seconds"] for e in log.of("persistence.timed", op="commit")]
    assert commits and all(0.0 <= seconds <= elapsed for seconds in commits)
