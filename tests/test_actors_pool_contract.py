"""The pool supervisor's contract (actors._pool), one guard at a time: each test hands the pool the message its guard
is there for (a health report, a stray restart, a clean exit, a stop) on a host driven by a FakeClock."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import process_gone, wait_until, worker

from agenthost.actors import WORKER_POLICY, FakeClock, Intensity, RecoveryPolicy, WorkerWatch
from agenthost.actors._errors import UnknownWorkerError
from agenthost.actors._pool import PoolSupervisor
from agenthost.chaos import RuntimeFaults, kill_process_group
from agenthost.protocol import ApprovalRequested
from agenthost.protocol._messages import (
    GetChildren,
    GetPoolStatus,
    Probe,
    ProbeReply,
    RestartDue,
    RestartWorker,
    StopPool,
    WorkerHealth,
    WorkerReady,
    WorkerSpawned,
)

pytestmark = pytest.mark.timeout(60)

CRASH = RuntimeFaults(crash_on_start=True)


def _pool(host: Any) -> Any:
    return host._host.ask(GetChildren())["pool"]


def _states(pool: Any) -> dict[int, str]:
    """The pool's mailbox is FIFO: this answer comes after every message told to it before."""
    return {status.worker_id: status.state for status in pool.ask(GetPoolStatus())}


def _degrade(pool: Any, host: Any, worker_id: int, consecutive_timeouts: int) -> None:
    generation = worker(host, worker_id).generation
    pool.tell(
        WorkerHealth(
            worker_id=worker_id,
            generation=generation,
            degraded=True,
            consecutive_timeouts=consecutive_timeouts,
            reason="calls time out",
        )
    )


@pytest.mark.parametrize("count", [2, 3])
def test_the_pool_runs_exactly_the_configured_workers(make_host, count: int) -> None:
    host = make_host(workers=count)
    workers = host.status().workers
    assert [(w.worker_id, w.state, w.generation) for w in workers] == [(n, "ready", 1) for n in range(1, count + 1)]
    assert len({w.pid for w in workers}) == count


def test_health_reports_degrade_once_then_kill_at_the_limit(make_host, clock: FakeClock, events) -> None:
    host = make_host(workers=1)  # WORKER_WATCH: kill at 3 consecutive timeouts
    pool = _pool(host)
    pid = worker(host, 1).pid
    for count in (1, 2):
        _degrade(pool, host, 1, count)
    assert _states(pool) == {1: "degraded"}
    degrades = events.of(child="worker-1", decision="degrade")
    assert [(d["attempt"], d["delay_s"], d["reason"]) for d in degrades] == [(0, 0.0, "calls time out")]
    assert not events.of(child="worker-1", decision="kill")
    _degrade(pool, host, 1, 3)
    kill = wait_until("kill", lambda: events.of(child="worker-1", decision="kill"))[0]
    assert (kill["attempt"], kill["delay_s"]) == (0, 0.0)
    assert kill["reason"] == "3 calls in a row timed out (max 3): calls time out"
    restart = wait_until("restart", lambda: events.of(child="worker-1", decision="restart"))[0]
    assert restart["reason"] == f"{kill['reason']}; attempt 1 of 8, backoff 1.0 s"  # the kill's exit, decided
    wait_until("old runtime gone", lambda: process_gone(pid))


def test_a_recovered_worker_is_ready_again(make_host) -> None:
    host = make_host(workers=1)
    pool = _pool(host)
    _degrade(pool, host, 1, 1)
    assert _states(pool) == {1: "degraded"}
    pool.tell(WorkerHealth(worker_id=1, generation=worker(host, 1).generation, degraded=False))
    assert _states(pool) == {1: "ready"}


def test_a_starting_worker_has_its_pid_and_no_health_until_it_is_ready(tmp_path, clock: FakeClock, events) -> None:
    from agenthost import AgentHost, HostConfig

    hanging = {1: RuntimeFaults(hang_on="initialize")}  # never ready: the startup deadline is on the FakeClock
    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1, worker_faults=hanging)
    host = AgentHost(config, clock=clock).start(wait_ready=False)
    try:
        pid = wait_until("the runtime's pid", lambda: worker(host, 1).pid)  # told at spawn, before any answer
        assert not process_gone(pid)
        pool = _pool(host)
        pool.tell(WorkerHealth(worker_id=1, generation=1, degraded=False))
        pool.tell(WorkerHealth(worker_id=1, generation=1, degraded=True, consecutive_timeouts=5, reason="r"))
        assert _states(pool) == {1: "starting"}
        assert not events.of(child="worker-1")
    finally:
        host.shutdown(drain_timeout_s=0.5)


def test_health_of_a_worker_that_is_not_up_is_ignored(make_host, events) -> None:
    host = make_host(workers=1)
    kill_process_group(worker(host, 1).pid)
    wait_until("restarting", lambda: worker(host, 1).state == "restarting")
    pool = _pool(host)
    generation = worker(host, 1).generation
    pool.tell(WorkerHealth(worker_id=1, generation=generation, degraded=False))
    pool.tell(WorkerHealth(worker_id=1, generation=generation, degraded=True, consecutive_timeouts=5, reason="r"))
    assert _states(pool) == {1: "restarting"}
    assert [d["decision"] for d in events.of(child="worker-1")] == ["restart"]


@pytest.mark.parametrize("timeout_s", [2.0, 5.0])  # 5.0 is the default shutdown_timeout_s
def test_stop_pool_reports_codes_keeps_given_up_and_ignores_late_messages(
    make_host, clock: FakeClock, events, timeout_s: float
) -> None:
    host = make_host(workers=2, worker_policy=RecoveryPolicy(max_attempts=1), worker_faults={1: CRASH})
    wait_until("first restart", lambda: events.of(child="worker-1", decision="restart"))
    clock.advance(1.0)
    wait_until("worker 1 gave up", lambda: worker(host, 1).state == "given_up")
    pool = _pool(host)
    generation, pid = worker(host, 2).generation, worker(host, 2).pid
    _degrade(pool, host, 2, 1)
    assert _states(pool) == {1: "given_up", 2: "degraded"}
    assert clock.pending_due_times("probe")
    codes = pool.ask(StopPool(timeout_s=timeout_s))
    assert set(codes) == {2} and isinstance(codes[2], int)  # only a running runtime is stopped, and it answered
    assert process_gone(pid)
    assert not clock.pending_due_times("probe")  # no more probes
    assert _states(pool) == {1: "given_up", 2: "stopped"}
    pool.tell(WorkerReady(worker_id=2, generation=generation, pid=pid))  # a late message from the stopped worker
    assert _states(pool) == {1: "given_up", 2: "stopped"}
    assert [d["decision"] for d in events.of(child="worker-2")] == ["degrade"]  # its exit was not decided


def test_stop_pool_waits_for_a_runtime_that_ignores_the_stop_until_it_is_killed(make_host) -> None:
    host = make_host(workers=1)
    pid = worker(host, 1).pid
    kill_process_group(pid, signal.SIGSTOP)  # it cannot see its stdin close: only the SIGKILL at timeout_s ends it
    assert _pool(host).ask(StopPool(timeout_s=1.0)) == {1: -signal.SIGKILL}
    assert process_gone(pid)


def test_restarting_worker_reports_when_it_restarts(make_host, clock: FakeClock, events) -> None:
    clock.advance(100.0)
    host = make_host(workers=1)
    kill_process_group(worker(host, 1).pid)
    wait_until("restarting", lambda: worker(host, 1).state == "restarting")
    status = worker(host, 1)
    assert (status.attempt, status.next_restart_at) == (1, clock.now() + 1.0)
    [decision] = events.of(child="worker-1", decision="restart")  # its delay counts from the pool's clock reading
    assert decision["decided_at"] + decision["delay_s"] == status.next_restart_at


def test_transient_worker_exiting_cleanly_is_not_restarted(make_host, events) -> None:
    # eof_mid_line: the runtime writes half a line and exits with code 0 at its first turn
    host = make_host(workers=1, worker_restart="transient", worker_faults={1: RuntimeFaults(eof_mid_line=True)})
    thread_id = host.create_thread()
    assert host.send(thread_id, "hi").wait(20.0).status == "failed"
    decision = wait_until("decision", lambda: events.of(child="worker-1"))[0]
    assert (decision["decision"], worker(host, 1).state) == ("no_restart", "stopped")
    assert "exited with code 0" in decision["reason"]


def test_transient_worker_killed_by_a_signal_is_restarted(make_host, events) -> None:
    host = make_host(workers=1, worker_restart="transient")
    kill_process_group(worker(host, 1).pid)
    decision = wait_until("decision", lambda: events.of(child="worker-1"))[0]
    assert (decision["decision"], decision["attempt"]) == ("restart", 1)


def test_stray_restart_due_is_ignored(make_host, events) -> None:
    host = make_host(workers=2, worker_restart="temporary")
    pool = _pool(host)
    kill_process_group(worker(host, 2).pid)
    wait_until("stopped", lambda: worker(host, 2).state == "stopped")
    for worker_id in (1, 2):
        pool.tell(RestartDue(worker_id=worker_id, generation=worker(host, worker_id).generation))
    assert _states(pool) == {1: "ready", 2: "stopped"}
    assert [(w.state, w.generation, w.restarts) for w in host.status().workers] == [("ready", 1, 0), ("stopped", 1, 0)]


def test_give_up_next_to_a_degraded_worker_does_not_fail_the_pool(make_host, clock: FakeClock, events) -> None:
    host = make_host(workers=2, worker_policy=RecoveryPolicy(max_attempts=1), worker_faults={1: CRASH})
    wait_until("first restart", lambda: events.of(child="worker-1", decision="restart"))
    pool = _pool(host)
    _degrade(pool, host, 2, 1)
    assert _states(pool)[2] == "degraded"
    clock.advance(1.0)
    wait_until("worker 1 gave up", lambda: events.of(child="worker-1", decision="give_up"))
    assert _states(pool) == {1: "given_up", 2: "degraded"}  # the pool handled the give-up without failing
    assert host.status().state == "running" and not events.of(supervisor="host")


def test_repeated_intensity_escalations_do_not_quarantine_runtime_state(make_host, clock: FakeClock, events) -> None:
    # An intensity escalation is not "every worker gave up": a 2nd one must not move the runtimes' state aside.
    policy = RecoveryPolicy(intensity=Intensity(max_restarts=1, period_s=60.0))
    host = make_host(workers=1, worker_policy=policy, worker_faults={1: CRASH})
    for cycle in (1, 2):
        wait_until("pool restart", lambda n=cycle: len(events.of(child="worker-1", decision="restart")) >= n)
        clock.advance(1.0)
        wait_until("host decision", lambda n=cycle: len(events.of(supervisor="host", decision="restart")) >= n)
        clock.advance(events.of(supervisor="host", decision="restart")[-1]["delay_s"])
    escalations = events.of(child="worker-1", decision="escalate")
    assert len(escalations) == 2 and "intensity exceeded" in escalations[1]["reason"]
    # the third pool's first decision comes after the host's restart step, where a quarantine would have happened
    wait_until("third pool", lambda: len(events.of(child="worker-1", decision="restart")) >= 3)
    assert not events.of(decision="quarantine_runtime_state")
    assert host.status().state != "failed"


def test_pool_refuses_zero_workers() -> None:
    # HostConfig refuses workers=0 first, so only a direct construction reaches the pool's own guard
    with pytest.raises(ValueError, match="worker_count must be >= 1, got 0"):
        PoolSupervisor(
            worker_count=0,
            spec_factory=lambda worker_id, generation: None,  # type: ignore[arg-type,return-value]
            policy=WORKER_POLICY,
            clock=FakeClock(),
            output_ref=None,  # type: ignore[arg-type]
            listeners=[],
        )


class _Probes:
    """A fault hook: records the probe replies the pool receives, and blocks the `wedged` worker's actor on every
    probe while `wedge` is set (as a bug or a blocking call would), each until its event in `blocked` is set."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, int]] = []  # (worker_id, seq)
        self.wedge = False
        self.wedged = "worker-1"
        self.blocked: list[threading.Event] = []  # one per probe the wedged actor is stuck on
        self.done = threading.Event()

    def __call__(self, child: str, message: object) -> None:
        if child == "pool" and isinstance(message, ProbeReply):
            self.replies.append((message.worker_id, message.seq))
        elif child == self.wedged and self.wedge and isinstance(message, Probe):
            stuck = threading.Event()
            self.blocked.append(stuck)
            while not (stuck.is_set() or self.done.is_set()):
                stuck.wait(0.05)


@pytest.fixture
def probed_host(tmp_path, clock: FakeClock) -> Iterator[Any]:
    """`probed_host(**config)`: a host whose workers are probed every 10 s; 2 probes in a row unanswered -> kill."""
    from agenthost import AgentHost, HostConfig

    probes = _Probes()
    hosts = []

    def make(**overrides: Any) -> tuple[Any, _Probes]:
        watch = WorkerWatch(probe_interval_s=10.0, missed_probes=2)
        config = HostConfig(storage_root=str(tmp_path / "root"), worker_watch=watch, **overrides)
        hosts.append(AgentHost(config, clock=clock, fault_hook=probes).start())
        return hosts[-1], probes

    try:
        yield make
    finally:
        probes.done.set()
        for host in hosts:
            host.shutdown(drain_timeout_s=1.0)


def _tick(host: Any, clock: FakeClock) -> None:
    """One probe interval; returns once the pool has handled the tick (and any kill it decided)."""
    wait_until("probe armed", lambda: clock.pending_due_times("probe"))
    clock.advance(10.0)
    _states(_pool(host))


def test_answered_probes_reset_the_count_and_missed_probes_in_a_row_kill(probed_host, clock: FakeClock, events):
    host, probes = probed_host(workers=1)
    for seq in (1, 2):
        _tick(host, clock)
        wait_until(f"reply to probe {seq}", lambda n=seq: (1, n) in probes.replies)
        _states(_pool(host))  # the reply is handled
    probes.wedge = True
    for _ in range(2):  # probe 3 wedges the actor; probe 2 was answered, so only the next tick counts 1 missed
        _tick(host, clock)
        assert not events.of(child="worker-1", decision="kill")
    _tick(host, clock)  # 2 missed in a row: the pool decided the kill while it handled the tick
    (kill,) = events.of(child="worker-1", decision="kill")
    assert "did not answer 2 probes in a row (one every 10 s)" in kill["reason"]


def test_a_late_reply_to_an_older_probe_does_not_count(probed_host, clock: FakeClock, events) -> None:
    host, probes = probed_host(workers=1)
    probes.wedge = True  # from its start: the actor gets stuck on probe 1
    _tick(host, clock)
    _tick(host, clock)  # probe 1 missed (1 in a row); probe 2 sent
    assert not events.of(child="worker-1", decision="kill")
    wait_until("probe 1 reached the actor", lambda: len(probes.blocked) == 1)  # (a loaded machine may lag)
    probes.blocked[0].set()  # the actor answers probe 1, late, then gets stuck on probe 2
    wait_until("the late reply", lambda: probes.replies == [(1, 1)] and len(probes.blocked) == 2)
    _states(_pool(host))  # the late reply is handled
    _tick(host, clock)  # probe 2 missed too: 2 in a row
    (kill,) = events.of(child="worker-1", decision="kill")
    assert "did not answer 2 probes in a row" in kill["reason"]


def test_every_live_worker_is_probed_on_every_tick(probed_host, clock: FakeClock, events) -> None:
    host, probes = probed_host(workers=2)
    probes.wedge = True  # worker 1's actor gets stuck on probe 1
    for tick in (1, 2, 3):  # at tick 3 worker 1 has missed 2 probes: killed, and worker 2 is still probed
        _tick(host, clock)
        wait_until(f"worker 2's reply {tick}", lambda n=tick: len([r for r in probes.replies if r[0] == 2]) == n)
    assert len(events.of(child="worker-1", decision="kill")) == 1
    assert not events.of(child="worker-2")


def test_operator_restart_of_a_worker_that_is_not_there_is_refused(make_host) -> None:
    host = make_host(workers=1)
    pool = _pool(host)
    with pytest.raises(UnknownWorkerError, match=r"no worker 2; workers are 1\.\.1"):
        pool.ask(RestartWorker(worker_id=2, reason="r"))
    assert _states(pool) == {1: "ready"}  # an expected error: the pool lives on
    pool.ask(StopPool(timeout_s=2.0))
    with pytest.raises(UnknownWorkerError):  # a stopping pool restarts nothing
        pool.ask(RestartWorker(worker_id=1, reason="r"))
    assert _states(pool) == {1: "stopped"}


def test_operator_restarts_name_the_generation_to_come(make_host) -> None:
    host = make_host(workers=1)
    pool = _pool(host)
    for generation in (2, 3):
        assert pool.ask(RestartWorker(worker_id=1, reason="r")).generation == generation
        wait_until(f"generation {generation}", lambda n=generation: worker(host, 1).generation == n)
        wait_until("ready", lambda: worker(host, 1).state == "ready")


def test_operator_restart_mid_turn_fails_the_turn_at_once(make_host) -> None:
    host = make_host(workers=1)
    thread_id = host.create_thread()
    handle = host.send(thread_id, "RUN: ls")  # waits for an approval: no runtime call is pending
    handle.wait_for(ApprovalRequested, 20.0)
    _pool(host).ask(RestartWorker(worker_id=1, reason="new settings"))
    finished = handle.wait(20.0)  # the listeners heard WorkerDown: the turn fails now, not at its deadline
    assert finished.status == "failed" and "runtime worker 1" in (finished.error or "")
    assert host.send(thread_id, "after").wait(20.0).status == "completed"


def test_a_worker_that_is_down_does_not_keep_the_next_one_from_being_probed(probed_host, clock, events) -> None:
    host, probes = probed_host(workers=2, worker_restart="temporary")
    kill_process_group(worker(host, 1).pid)
    wait_until("worker 1 stopped", lambda: worker(host, 1).state == "stopped")
    probes.wedged, probes.wedge = "worker-2", True
    for _ in range(3):  # probe 1 wedges worker 2's actor, then 2 missed in a row
        _tick(host, clock)
    (kill,) = events.of(child="worker-2", decision="kill")
    assert "did not answer 2 probes in a row" in kill["reason"]


@pytest.mark.parametrize("error", [ProcessLookupError, PermissionError])
def test_a_kill_whose_process_group_is_gone_or_not_ours_does_not_crash_the_pool(
    make_host, events, monkeypatch: pytest.MonkeyPatch, error: type[OSError]
) -> None:
    host = make_host(workers=1)
    pool = _pool(host)
    stale_pid = 4_000_000_007  # the pool's idea of the runtime's pid, which os.killpg refuses
    real_killpg = os.killpg

    def killpg(pid: int, sig: int) -> None:
        if pid == stale_pid:
            raise error(f"injected: {pid}")
        real_killpg(pid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    generation = worker(host, 1).generation
    pool.tell(WorkerSpawned(worker_id=1, generation=generation, pid=stale_pid))
    pool.tell(WorkerHealth(worker_id=1, generation=generation, degraded=True, reason="stopped reading", stalled=True))
    wait_until("a decision", lambda: events.of(child="worker-1", decision="restart") or events.of(supervisor="host"))
    assert [d["decision"] for d in events.of(child="worker-1")] == ["kill", "restart"]  # the worker killed itself
    assert not events.of(supervisor="host")  # the pool did not crash
