"""End to end on the built-in runtime: the host, its actors, real runtime processes, real storage."""

from __future__ import annotations

import pytest
from conftest import wait_until, worker

from agenthost.actors import FakeClock
from agenthost.chaos import RuntimeFaults, kill_process_group
from agenthost.protocol import ApprovalRequested, ApprovalReset, Delta
from agenthost.storage import InvalidIdError, UnknownThreadError, parse_checkpoints

pytestmark = pytest.mark.timeout(60)

SLOW = RuntimeFaults(delta_delay_s=0.05)


def _kill_mid_turn(host, thread_id: str, text: str = "a long answer please"):
    handle = host.send(thread_id, text)
    handle.wait_for(Delta, 20.0)
    victim = host.status().pins[thread_id]
    kill_process_group(worker(host, victim).pid)
    return victim, handle.wait(20.0)


def test_worker_killed_mid_turn_recovers_per_policy(make_host, clock: FakeClock, events) -> None:
    host = make_host(workers=2, deltas_per_reply=6, worker_faults={1: SLOW, 2: SLOW})
    thread_id = host.create_thread("victim")
    assert host.send(thread_id, "warm up").wait(20.0).status == "completed"

    victim, finished = _kill_mid_turn(host, thread_id)

    # the turn failed, and that is durable in the database and the transcript
    assert finished.status == "failed"
    assert f"runtime worker {victim} exited (killed by signal SIGKILL)" == finished.error
    last = host.turns(thread_id)[-1]
    assert (last.status, last.error) == ("failed", finished.error)
    assert parse_checkpoints(host.transcript(thread_id))[-1] == (last.turn_id, "failed")

    # the pool decided to restart after the policy's first delay, and did not restart early
    decision = wait_until("restart decision", lambda: events.of(child=f"worker-{victim}"))[0]
    assert (decision["supervisor"], decision["decision"], decision["attempt"], decision["delay_s"]) == (
        "pool",
        "restart",
        1,
        1.0,
    )
    assert worker(host, victim).state == "restarting"

    # pins moved to the healthy worker
    healthy = 3 - victim
    assert wait_until("pins moved", lambda: host.status().pins[thread_id] == healthy)

    # the next turn on the same thread succeeds there via thread/resume
    done = host.send(thread_id, "still there?").wait(20.0)
    assert done.status == "completed" and done.text == "Reference reply to: still there?"
    assert events.of("turns.resuming")

    clock.advance(0.99)
    assert worker(host, victim).state == "restarting"
    clock.advance(0.01)
    up = wait_until("victim ready", lambda: worker(host, victim).state == "ready" and worker(host, victim))
    assert (up.generation, up.restarts) == (2, 1)


def test_pending_approval_is_reset_with_a_transcript_card_when_the_worker_dies(make_host, events) -> None:
    host = make_host(workers=2)
    thread_id = host.create_thread("approvals")
    handle = host.send(thread_id, "Please RUN: rm -rf build")
    request = handle.wait_for(ApprovalRequested, 20.0)
    assert request.command == "rm -rf build"

    kill_process_group(worker(host, host.status().pins[thread_id]).pid)

    reset = handle.wait_for(ApprovalReset, 20.0)
    assert reset.approval_id == request.approval_id and "Nothing was executed" in reset.message
    assert handle.wait(20.0).status == "failed"
    transcript = host.transcript(thread_id)
    assert "approval reset" in transcript and "rm -rf build" in transcript
    with pytest.raises(KeyError, match=request.approval_id):
        host.answer_approval(request.approval_id, "accept")


@pytest.mark.parametrize(
    ("decision", "status", "text"),
    [
        ("accept", "completed", "Command finished: ls"),
        ("decline", "completed", "Command declined: ls"),
        ("cancel", "interrupted", ""),
    ],
)
def test_approval_decisions_reach_the_runtime(make_host, decision: str, status: str, text: str) -> None:
    host = make_host(workers=1)
    thread_id = host.create_thread()
    handle = host.send(thread_id, "RUN: ls")
    host.answer_approval(handle.wait_for(ApprovalRequested, 20.0).approval_id, decision)
    finished = handle.wait(20.0)
    assert (finished.status, finished.text) == (status, text)
    assert host.turns(thread_id)[-1].status == status


def test_bad_approval_decision_names_the_value(make_host) -> None:
    host = make_host(workers=1)
    handle = host.send(host.create_thread(), "RUN: ls")
    request = handle.wait_for(ApprovalRequested, 20.0)
    with pytest.raises(ValueError, match="'maybe'"):
        host.answer_approval(request.approval_id, "maybe")
    host.answer_approval(request.approval_id, "decline")
    assert handle.wait(20.0).status == "completed"


def test_messages_for_a_busy_thread_queue_and_run_in_order(make_host) -> None:
    host = make_host(workers=1, worker_faults={1: SLOW})
    thread_id = host.create_thread()
    first = host.send(thread_id, "one")
    second = host.send(thread_id, "two")
    third = host.send(thread_id, "three")
    assert (first.queued, second.queued, third.queued) == (False, True, True)
    assert [h.wait(30.0).text for h in (first, second, third)] == [
        "Reference reply to: one",
        "Reference reply to: two",
        "Reference reply to: three",
    ]
    turns = host.turns(thread_id)
    assert [(t.seq, t.user_text, t.status) for t in turns] == [
        (1, "one", "completed"),
        (2, "two", "completed"),
        (3, "three", "completed"),
    ]


def test_unknown_and_invalid_thread_ids_are_refused_by_name(make_host) -> None:
    host = make_host(workers=1)
    with pytest.raises(UnknownThreadError, match="nope"):
        host.send("nope", "hi")
    with pytest.raises(InvalidIdError, match=r"\.\./etc"):
        host.send("../etc", "hi")
    with pytest.raises(InvalidIdError, match="a b"):
        host.create_thread(thread_id="a b")


def test_restarted_host_resumes_threads_from_the_persisted_mapping(tmp_path, events) -> None:
    from agenthost import AgentHost, HostConfig

    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1)
    with AgentHost(config, clock=FakeClock()) as host:
        thread_id = host.create_thread("persistent")
        assert host.send(thread_id, "first").wait(20.0).status == "completed"
        pins = host.status().pins
    with AgentHost(config, clock=FakeClock()) as host:
        assert host.status().pins == pins  # hydrated from the database
        done = host.send(thread_id, "second").wait(20.0)
        assert done.status == "completed"
        assert events.of("turns.resuming")  # new process: the thread is not loaded there -> resume first
        assert [t.user_text for t in host.turns(thread_id)] == ["first", "second"]


def test_lost_runtime_thread_is_recreated_and_said_so(tmp_path) -> None:
    from agenthost import AgentHost, HostConfig
    from agenthost.storage import StorageRoot

    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1)
    with AgentHost(config, clock=FakeClock()) as host:
        thread_id = host.create_thread()
        assert host.send(thread_id, "first").wait(20.0).status == "completed"
    for state in (StorageRoot(config.storage_root).runtime_state_dir / "threads").iterdir():
        state.unlink()
    with AgentHost(config, clock=FakeClock()) as host:
        assert host.send(thread_id, "second").wait(20.0).status == "completed"
        assert "runtime thread recreated" in host.transcript(thread_id)


def test_interrupt_ends_the_turn_as_interrupted(make_host) -> None:
    host = make_host(workers=1, deltas_per_reply=20, worker_faults={1: SLOW})
    thread_id = host.create_thread()
    handle = host.send(thread_id, "long")
    handle.wait_for(Delta, 20.0)
    host.interrupt(handle.turn_id)
    assert handle.wait(20.0).status == "interrupted"
    assert host.turns(thread_id)[-1].status == "interrupted"


def test_garbage_on_stdout_is_logged_not_fatal(make_host, events) -> None:
    host = make_host(workers=1, worker_faults={1: RuntimeFaults(garbage_before_turn=True)})
    done = host.send(host.create_thread(), "hi").wait(20.0)
    assert done.status == "completed"
    assert events.of("worker.protocol_error")
    assert worker(host, 1).generation == 1


def test_pending_checkpoint_is_durable_before_the_runtime_answers_and_deadline_fails_the_turn(
    make_host, clock: FakeClock
) -> None:
    host = make_host(workers=1, turn_timeout_s=5.0, worker_faults={1: RuntimeFaults(hang_on="turn/start")})
    thread_id = host.create_thread()
    handle = host.send(thread_id, "hello")
    wait_until(
        "turn dispatched", lambda: host.status().active_turns and host.status().active_turns[0].phase == "turn_start"
    )
    # before the runtime answers anything, the user message and the pending checkpoint are durable
    assert parse_checkpoints(host.transcript(thread_id)) == [(handle.turn_id, "pending")]
    assert [(t.user_text, t.status) for t in host.turns(thread_id)] == [("hello", "pending")]
    clock.advance(5.0)
    finished = handle.wait(20.0)
    assert finished.status == "failed" and "deadline of 5 s" in (finished.error or "")
    assert host.turns(thread_id)[-1].status == "failed"


def test_shutdown_aborts_open_turns_and_persists_them(tmp_path) -> None:
    from agenthost import AgentHost, HostConfig
    from agenthost.storage import Database, StorageRoot

    config = HostConfig(
        storage_root=str(tmp_path / "root"), workers=1, worker_faults={1: RuntimeFaults(hang_on="turn/start")}
    )
    host = AgentHost(config, clock=FakeClock()).start()
    thread_id = host.create_thread()
    handle = host.send(thread_id, "never answered")
    host.shutdown(drain_timeout_s=0.2)
    assert handle.history == []  # the drain waited without consuming: every event is still the caller's
    finished = handle.wait(5.0)
    assert finished.status == "failed" and "shut down" in (finished.error or "")
    db = Database.open(StorageRoot(config.storage_root).db_path)
    try:
        assert db.list_turns(thread_id)[-1].status == "failed"
    finally:
        db.close()


class _DurabilityProbe:
    """A turn's event sink that, the moment TurnFinished arrives, reads the turn's row from the database with its
    own connection: what the caller is told must already be on disk."""

    def __init__(self, db_path: str) -> None:
        import queue

        self.db_path = db_path
        self.seen: list[tuple[str, str]] = []  # (told status, status on disk at that moment)
        self.events: queue.Queue[object] = queue.Queue()

    def put(self, event: object) -> None:
        from agenthost.protocol import TurnFinished
        from agenthost.storage import Database

        if isinstance(event, TurnFinished):
            db = Database.open(self.db_path)
            try:
                self.seen.append((event.status, db.get_turn(event.turn_id).status))
            finally:
                db.close(checkpoint=False)
        self.events.put(event)


@pytest.mark.parametrize("ending", ["completed", "failed", "interrupted"])
def test_the_caller_hears_a_turns_end_only_once_it_is_on_disk(make_host, clock: FakeClock, ending: str) -> None:
    from agenthost.protocol._messages import GetChildren, InterruptTurn, SendMessage

    faults = {"completed": None, "failed": RuntimeFaults(hang_on="turn/start"), "interrupted": None}[ending]
    host = make_host(workers=1, worker_faults={1: faults} if faults else {}, turn_timeout_s=5.0, deltas_per_reply=50)
    thread_id = host.create_thread()
    probe = _DurabilityProbe(str(host.root.db_path))
    turns = host._host.ask(GetChildren())["turns"]
    accepted = turns.ask(
        SendMessage(thread_id=thread_id, text="RUN: wait" if ending == "interrupted" else "hi", sink=probe)
    )
    if ending == "failed":
        wait_until("deadline armed", lambda: clock.pending_due_times("turn-deadline"))
        clock.advance(5.0)
    elif ending == "interrupted":
        while not isinstance(probe.events.get(timeout=20.0), ApprovalRequested):
            pass
        turns.ask(InterruptTurn(turn_id=accepted.turn_id))
    wait_until("told", lambda: probe.seen)
    assert probe.seen == [(ending, ending)]
