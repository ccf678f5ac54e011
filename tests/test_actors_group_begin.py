"""Group commit of turn begins: the begins of sends that arrive together are one storage round and one
transaction, one bad begin never refuses the others, and a caller always hears (begun, refused, or crashed)."""

from __future__ import annotations

import threading
import time
from typing import Any

import apsw
import pytest

from agenthost import AgentHost, HostConfig, HostUnavailableError
from agenthost.actors import FakeClock
from agenthost.actors._persistence import PersistenceActor
from agenthost.protocol._messages import (
    BeginTurn,
    BeginTurns,
    CreateThread,
    EnqueueFollowUps,
    ListTurns,
    StartNextFollowUps,
    TurnBegun,
)
from agenthost.storage import Database, StorageError, StorageRoot, UnknownThreadError, parse_checkpoints

pytestmark = pytest.mark.timeout(60)


def test_a_batch_is_all_or_nothing_in_the_database(tmp_path) -> None:
    db = Database.open(tmp_path / "db.sqlite")
    try:
        db.ensure_project("p", "p", 1.0)
        db.create_thread("t1", "p", "t1", 1.0)
        with db.batch("two begins"):
            rows = [db.begin_turn("u1", "t1", "one", 2.0), db.begin_turn("u2", "t1", "two", 2.0)]
        assert [(r.turn_id, r.seq, r.status) for r in rows] == [("u1", 1, "pending"), ("u2", 2, "pending")]
        with pytest.raises(UnknownThreadError), db.batch("a begin and a bad one"):
            db.begin_turn("u3", "t1", "three", 3.0)
            db.begin_turn("u4", "nope", "four", 3.0)
        assert [t.turn_id for t in db.list_turns("t1")] == ["u1", "u2"]  # u3 rolled back with the batch
    finally:
        db.close()


def test_the_begins_of_a_round_are_one_transaction_and_a_single_begin_its_own(tmp_path, monkeypatch) -> None:
    """D25: the begins asked together are committed in one batch (one transaction); one alone needs none."""
    batches: list[str] = []
    batch = Database.batch

    def recorded(db: Database, action: str) -> Any:
        batches.append(action)
        return batch(db, action)

    monkeypatch.setattr(Database, "batch", recorded)
    root = StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time)
    try:
        ref.ask(CreateThread(thread_id="t1", project_id="p", title="t1"))
        for count in (1, 2, 3):
            begins = tuple(BeginTurn(turn_id=f"u{count}-{i}", thread_id="t1", user_text="q") for i in range(count))
            outcomes = ref.ask(BeginTurns(begins=begins))
            assert all(isinstance(outcome, TurnBegun) for outcome in outcomes)
    finally:
        ref.stop()
    assert [action for action in batches if action.startswith("beginning turns")] == [
        "beginning turns (2 at once)",
        "beginning turns (3 at once)",
    ]


def test_a_bad_begin_in_a_batch_refuses_only_itself(tmp_path) -> None:
    root = StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=FakeClock(), wall=time.time)
    try:
        for thread in ("t1", "t2"):
            ref.ask(CreateThread(thread_id=thread, project_id="p", title=thread))
        begins = (
            BeginTurn(turn_id="u1", thread_id="t1", user_text="one"),
            BeginTurn(turn_id="u2", thread_id="missing", user_text="lost"),
            BeginTurn(turn_id="u3", thread_id="t2", user_text="three"),
            BeginTurn(turn_id="u1", thread_id="t2", user_text="same id again"),
        )
        outcomes = ref.ask(BeginTurns(begins=begins))
        assert [type(o).__name__ for o in outcomes] == ["TurnBegun", "UnknownThreadError", "TurnBegun", "StorageError"]
        assert isinstance(outcomes[3], StorageError) and "u1" in str(outcomes[3])
        assert all(o.turn.status == "pending" for o in outcomes if isinstance(o, TurnBegun))
        assert [t.turn_id for t in ref.ask(ListTurns(thread_id="t1"))] == ["u1"]
        assert [t.turn_id for t in ref.ask(ListTurns(thread_id="t2"))] == ["u3"]
        for thread, turn in (("t1", "u1"), ("t2", "u3")):  # each begin is in its transcript when the reply comes
            text = root.transcript_path("p", thread).read_text()
            assert parse_checkpoints(text) == [(turn, "pending")]
    finally:
        ref.stop()


class _Gate:
    """A fault hook that holds the turn coordinator on its first SendMessage until released (so the sends behind it
    queue up in its mailbox) and records every message the persistence actor gets."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held = threading.Event()
        self.persistence: list[Any] = []

    def __call__(self, child: str, message: Any) -> None:
        if child == "persistence":
            self.persistence.append(message)
        if child == "turns" and type(message).__name__ == "SendMessage" and not self.held.is_set():
            self.held.set()
            assert self.release.wait(30.0)


def _together(host: AgentHost, gate: _Gate, senders: list[threading.Thread]) -> float:
    """Run the senders so that all their sends reach the coordinator's mailbox together: the first is held by the
    gate until the others are queued behind it. Returns when every sender is done; the value is the release time."""
    senders[0].start()
    assert gate.held.wait(10.0)  # the coordinator holds the first send
    for sender in senders[1:]:
        sender.start()
    deadline = time.monotonic() + 10.0
    while host._children.get("turns").actor_inbox.qsize() < len(senders) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    released = time.monotonic()
    gate.release.set()
    for sender in senders:
        sender.join(20.0)
    return released


def test_sends_that_arrive_together_are_begun_in_one_storage_round(tmp_path) -> None:
    gate = _Gate()
    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1, max_active_turns=64)
    with AgentHost(config, clock=FakeClock(), fault_hook=gate) as host:
        threads = [host.create_thread() for _ in range(20)]
        handles: dict[str, Any] = {}

        def send(thread: str) -> None:
            handles[thread] = host.send(thread, "hello")

        senders = [threading.Thread(target=send, args=(thread,)) for thread in threads]
        _together(host, gate, senders)
        rounds = [m for m in gate.persistence if isinstance(m, (BeginTurns, BeginTurn))]
        assert [type(m).__name__ for m in rounds] == ["BeginTurns"]  # one round for all 20 begins
        assert len(rounds[0].begins) == 20
        assert all(handles[thread].wait(20.0).status == "completed" for thread in threads)
        # each thread's pin was told, group-committed, and is durable since before its turn's end was told
        reader = apsw.Connection(str(host.root.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        pinned = {row[0] for row in reader.execute("SELECT thread_id FROM runtime_thread_mappings")}
        reader.close()
        assert pinned == set(threads)


def test_a_crash_answers_the_send_it_crashed_on_and_the_sends_queued_behind_it(tmp_path) -> None:
    gate = _Gate()

    def hook(child: str, message: Any) -> None:
        gate(child, message)
        if child == "turns" and type(message).__name__ == "SendMessage":
            raise RuntimeError("injected crash in the turn coordinator")

    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1)
    with AgentHost(config, clock=FakeClock(), fault_hook=hook) as host:
        threads = [host.create_thread() for _ in range(5)]
        errors: list[BaseException] = []

        def send(thread: str) -> None:
            try:
                host.send(thread, "hello")
            except HostUnavailableError as exc:
                errors.append(exc)

        senders = [threading.Thread(target=send, args=(thread,)) for thread in threads]
        started = _together(host, gate, senders)
        assert time.monotonic() - started < 5.0  # at once, not after request_timeout_s (30 s)
        assert len(errors) == 5
        assert sum("crashed handling SendMessage" in str(e) for e in errors) == 1
        assert sum("stopped (crashed) before handling SendMessage" in str(e) for e in errors) == 4


def test_send_from_many_threads_at_once(tmp_path) -> None:
    """Embedding applications send from their own threads: every send gets its handle and its turn completes."""
    config = HostConfig(storage_root=str(tmp_path / "root"), workers=2, max_active_turns=64)
    with AgentHost(config) as host:
        threads = [host.create_thread() for _ in range(300)]
        handles: list[Any] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def send(chunk: list[str]) -> None:
            for thread in chunk:
                try:
                    handle = host.send(thread, "hello")
                except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(exc)
                    continue
                with lock:
                    handles.append(handle)

        senders = [threading.Thread(target=send, args=(threads[i::16],)) for i in range(16)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(60.0)
        assert errors == []
        assert sorted(h.wait(60.0).status for h in handles) == ["completed"] * 300


def test_queued_sends_and_their_dispatch_share_storage_rounds(tmp_path) -> None:
    """Sends over the cap are enqueued together (one transaction), and the follow-ups that turn ends let run are
    started (read, dispatched and begun: one round trip, one transaction) in rounds; a follow-up's final state is
    told and group-committed with the completions."""
    gate = _Gate()
    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1, max_active_turns=2)
    with AgentHost(config, clock=FakeClock(), fault_hook=gate) as host:
        threads = [host.create_thread() for _ in range(20)]
        handles: dict[str, Any] = {}
        senders = [threading.Thread(target=lambda t=t: handles.__setitem__(t, host.send(t, "hi"))) for t in threads]
        _together(host, gate, senders)
        assert sorted(handles[t].wait(20.0).status for t in threads) == ["completed"] * 20
        kinds = [type(m).__name__ for m in gate.persistence]
        assert "EnqueueFollowUp" not in kinds
        enqueues = [m for m in gate.persistence if isinstance(m, EnqueueFollowUps)]
        assert [len(m.enqueues) for m in enqueues] == [18]  # 2 began at once, the 18 others queued together
        started = [r.thread_id for m in gate.persistence if isinstance(m, StartNextFollowUps) for r in m.starts]
        assert sorted(started) == sorted(e.thread_id for e in enqueues[0].enqueues)  # once: none behind it (T19)
        ran = [(host.followups(e.thread_id)[0].turn_id, e.followup_id) for e in enqueues[0].enqueues]
        assert all(turn_id == followup_id for turn_id, followup_id in ran)  # each ran once, as its own turn
        assert all(f.state == "done" for t in threads for f in host.followups(t))  # (an ask: after the settles)
        kinds = [type(m).__name__ for m in gate.persistence]
        assert "SetFollowUpState" not in kinds and kinds.count("SettleFollowUp") == 18


def test_a_queued_send_the_storage_refuses_is_refused_to_its_caller_alone(tmp_path) -> None:
    gate = _Gate()
    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1, max_active_turns=1)
    with AgentHost(config, clock=FakeClock(), fault_hook=gate) as host:
        first, second = host.create_thread(), host.create_thread()
        outcomes: dict[str, Any] = {}

        def send(name: str, thread: str) -> None:
            try:
                outcomes[name] = host.send(thread, "hi")
            except Exception as exc:  # noqa: BLE001 - asserted below
                outcomes[name] = exc

        senders = [
            threading.Thread(target=send, args=("first", first)),
            threading.Thread(target=send, args=("unknown", "th-unknown")),
            threading.Thread(target=send, args=("second", second)),
        ]
        _together(host, gate, senders)
        enqueues = [m for m in gate.persistence if isinstance(m, EnqueueFollowUps)]
        assert [len(m.enqueues) for m in enqueues] == [2]  # both queued in one round; the storage refused one
        assert isinstance(outcomes["unknown"], UnknownThreadError) and "th-unknown" in str(outcomes["unknown"])
        assert outcomes["first"].wait(20.0).status == "completed"
        assert outcomes["second"].queued and outcomes["second"].wait(20.0).status == "completed"
