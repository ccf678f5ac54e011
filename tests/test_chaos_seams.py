"""The chaos seams the new fault kinds use: slow syncs of FaultyVFS (SlowDisk) and the armable fault hook
(ActorCrash)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from agenthost.actors import InjectedFault
from agenthost.chaos import ArmableHook, FaultPlan, FaultyVFS, StdoutGarbage
from agenthost.chaos._worker_faults import WorkerFaults

pytestmark = pytest.mark.timeout(30)


def _connect(path: Path, vfs: FaultyVFS) -> apsw.Connection:
    conn = apsw.Connection(str(path), vfs=vfs.vfs_name)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
    return conn


def _commit_s(conn: apsw.Connection, value: int) -> float:
    began = time.monotonic()
    conn.execute("INSERT INTO t VALUES (?)", (value,))
    return time.monotonic() - began


def test_slow_syncs_delay_the_next_n_syncs_then_the_disk_is_fast_again(tmp_path: Path) -> None:
    with FaultyVFS(None) as vfs:
        conn = _connect(tmp_path / "db", vfs)
        try:
            assert _commit_s(conn, 0) < 0.25
            vfs.slow_syncs(0.3, 1)
            assert _commit_s(conn, 1) >= 0.3  # a WAL commit syncs once (synchronous=FULL)
            assert vfs.delayed_syncs == 1
            assert _commit_s(conn, 2) < 0.25  # only the next sync was slow
            assert [row[0] for row in conn.execute("SELECT x FROM t")] == [0, 1, 2]  # slow, never lost
        finally:
            conn.close()


def test_slow_syncs_until_healed_and_heal_wakes_a_sleeping_sync(tmp_path: Path) -> None:
    with FaultyVFS(None) as vfs:
        conn = _connect(tmp_path / "db", vfs)
        try:
            vfs.slow_syncs(30.0)  # every sync, until healed
            took: list[float] = []
            writer = threading.Thread(target=lambda: took.append(_commit_s(conn, 1)))
            writer.start()
            deadline = time.monotonic() + 5.0
            while not vfs.delayed_syncs and time.monotonic() < deadline:
                time.sleep(0.01)
            assert vfs.delayed_syncs == 1
            vfs.plan = FaultPlan(op="write", nth=1, persistent=True)
            vfs.heal()  # drops the plan and the delay, and wakes the sync that sleeps
            writer.join(5.0)
            assert not writer.is_alive() and took[0] < 5.0
            assert vfs.plan is None and _commit_s(conn, 2) < 0.25
        finally:
            conn.close()


def test_slow_syncs_arguments_are_validated_by_name() -> None:
    with FaultyVFS(None) as vfs:
        with pytest.raises(ValueError, match="sync delay_s -1 is invalid"):
            vfs.slow_syncs(-1)
        with pytest.raises(ValueError, match="slow sync count 0 is invalid"):
            vfs.slow_syncs(1.0, 0)


def test_armable_hook_crashes_the_armed_child_once_on_the_armed_message_type() -> None:
    class BeginTurn:
        pass

    class GetThread:
        pass

    hook = ArmableHook()
    hook("persistence", BeginTurn())  # disarmed: nothing happens
    hook.arm("persistence", "BeginTurn")
    hook("persistence", GetThread())  # another message type
    hook("mapping", BeginTurn())  # another child
    hook("persistence", "start")  # the start-up call of an actor
    with pytest.raises(InjectedFault, match="persistence handling BeginTurn"):
        hook("persistence", BeginTurn())
    hook("persistence", BeginTurn())  # once
    assert hook.disarm() == 1
    hook.arm("turns", "SendMessage")
    assert hook.disarm() == 0  # disarmed before it fired


class _KnobLoop:
    """The parts of a CampaignLoop the knob faults use: the host's set_faults requests, watchers, timed undos."""

    class _Settings:
        runtime = "builtin"

    def __init__(self) -> None:
        self.settings = self._Settings()
        self.requests: list[Any] = []
        self.host = self
        self.watchers: list[Any] = []
        self.timed: list[tuple[int, Any]] = []

    def request(self, op: str, **fields: Any) -> None:
        self.requests.append(fields["faults"])

    def expire(self, op_index: int) -> None:
        due = [undo for until, undo in self.timed if until <= op_index]
        self.timed = [(until, undo) for until, undo in self.timed if until > op_index]
        for undo in due:
            undo()

    def event(self, event: dict[str, Any]) -> None:
        self.watchers = [w for w in self.watchers if not w(event)]


@pytest.mark.parametrize("seen_at", [None, 1, 5], ids=["never seen", "seen before its ops", "seen after its ops"])
def test_stdout_garbage_stays_until_its_line_was_seen_at_most_ten_ops_more(seen_at: int | None) -> None:
    loop = _KnobLoop()
    faults = WorkerFaults(loop)  # type: ignore[arg-type]
    assert faults.inject(StdoutGarbage(ops=2), "worker:1", 10) == "garbage_before_turn for 2 ops"
    assert loop.requests == [{"garbage_before_turn": True}]
    cleared_at = None
    for op in range(11, 30):
        if op == 13:
            loop.event({"event": "worker.protocol_error", "worker": 2})  # another worker's line does not count
        if seen_at is not None and op == 10 + seen_at:
            loop.event({"event": "worker.protocol_error", "worker": 1})
        loop.expire(op)
        if cleared_at is None and loop.requests[-1] is None:
            cleared_at = op
    expected = {None: 22, 1: 12, 5: 15}[seen_at]  # its 2 ops end at op 12; the grace at op 22
    assert cleared_at == expected and loop.requests[-1] is None and len(loop.requests) == 2
