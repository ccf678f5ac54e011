"""Pool supervision on real runtime processes, driven by a FakeClock: exact schedules, caps, give-up."""

from __future__ import annotations

import pytest
from conftest import process_gone, wait_until, worker

from agenthost.actors import Backoff, FakeClock, RecoveryPolicy
from agenthost.chaos import RuntimeFaults

pytestmark = pytest.mark.timeout(60)

CRASH = RuntimeFaults(crash_on_start=True)


def _decisions(events, child: str, count: int):
    return wait_until(f"{count} decisions for {child}", lambda: (d := events.of(child=child)) and len(d) >= count and d)


def test_crash_on_start_follows_the_backoff_schedule_then_gives_up(make_host, clock: FakeClock, events) -> None:
    policy = RecoveryPolicy(backoff=Backoff(initial_s=1.0, multiplier=2.0, max_s=30.0), max_attempts=4)
    host = make_host(workers=2, worker_policy=policy, worker_faults={1: CRASH})
    expected = [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)]
    for index, (attempt, delay) in enumerate(expected):
        decision = _decisions(events, "worker-1", index + 1)[index]
        assert (decision["decision"], decision["attempt"], decision["delay_s"]) == ("restart", attempt, delay)
        assert "exited with code 3" in decision["reason"]
        clock.advance(delay - 0.001)
        assert worker(host, 1).state == "restarting"  # never before its scheduled delay
        clock.advance(0.001)
    final = _decisions(events, "worker-1", 5)[4]
    assert (final["decision"], final["attempt"]) == ("give_up", 5)
    assert "4 attempts exhausted" in final["reason"]
    status = wait_until("given up", lambda: worker(host, 1).state == "given_up" and host.status())
    assert status.state == "running"  # worker 2 still serves
    assert worker(host, 1).restarts == 4
    thread_id = host.create_thread()
    assert host.send(thread_id, "hi").wait(20.0).status == "completed"
    assert host.status().pins[thread_id] == 2  # a given-up worker gets no pins


def test_host_recovery_runs_exactly_1_2_4_8_then_reports_failed(make_host, clock: FakeClock, events) -> None:
    host = make_host(workers=1, worker_policy=RecoveryPolicy(max_attempts=1), worker_faults={1: CRASH})

    def restarts_and_give_ups() -> list[dict]:  # the host's policy decisions (quarantine is a side action)
        return [e for e in events.of(supervisor="host") if e["decision"] in ("restart", "give_up")]

    for cycle, host_delay in enumerate([1.0, 2.0, 4.0, 8.0], start=1):
        pool_restart = _decisions(events, "worker-1", 2 * cycle - 1)[-1]
        assert (pool_restart["decision"], pool_restart["delay_s"]) == ("restart", 1.0)
        clock.advance(1.0)
        give_up = _decisions(events, "worker-1", 2 * cycle)[-1]
        assert give_up["decision"] == "give_up"
        decision = wait_until(
            "host decision", lambda n=cycle: len(restarts_and_give_ups()) >= n and restarts_and_give_ups()
        )[-1]
        assert (decision["child"], decision["decision"], decision["attempt"], decision["delay_s"]) == (
            "pool",
            "restart",
            cycle,
            host_delay,
        )
        assert decision["restarts"] == ["pool"]  # rest_for_one: the pool is the last child
        assert "all 1 workers gave up" in decision["reason"]
        status = host.status()
        assert (status.state, status.restarting, status.workers) == ("recovering", ("pool",), ())
        clock.advance(host_delay - 0.001)
        assert host.status().restarting == ("pool",)  # never before its delay
        clock.advance(0.001)
    assert _decisions(events, "worker-1", 9)[-1]["decision"] == "restart"
    clock.advance(1.0)
    final = wait_until("host gives up", lambda: len(restarts_and_give_ups()) >= 5 and restarts_and_give_ups())[-1]
    assert (final["decision"], final["attempt"]) == ("give_up", 5)
    assert "4 attempts exhausted" in final["reason"]
    status = host.status()
    assert status.state == "failed" and "all 1 workers gave up" in (status.cause or "")
    clock.advance(100.0)  # the root never loops
    assert len(restarts_and_give_ups()) == 5


def test_runtime_state_is_quarantined_when_a_fresh_pool_fails_again(
    make_host, clock: FakeClock, events, tmp_path
) -> None:
    host = make_host(workers=1, worker_policy=RecoveryPolicy(max_attempts=1), worker_faults={1: CRASH})
    marker = host.root.runtime_state_dir / "stale-internals.json"
    marker.write_text("{}")
    for cycle in (1, 2):
        _decisions(events, "worker-1", 2 * cycle - 1)
        clock.advance(1.0)
        decision = wait_until(
            "host decision",
            lambda n=cycle: (
                len(events.of(supervisor="host", decision="restart")) >= n
                and events.of(supervisor="host", decision="restart")
            ),
        )[-1]
        if cycle == 1:
            assert marker.exists()  # the first fresh pool gets the state as it is
            clock.advance(decision["delay_s"])
    quarantined = wait_until("quarantine", lambda: events.of(decision="quarantine_runtime_state"))[0]
    assert quarantined["attempt"] == 2 and "system/runtime-state" in quarantined["reason"]
    assert not marker.exists() and host.root.runtime_state_dir.is_dir()
    moved = list((host.root.system_dir / "quarantine").rglob("stale-internals.json"))
    assert len(moved) == 1 and moved[0].read_text() == "{}"


def test_pool_intensity_exceeded_escalates_to_the_host(make_host, clock: FakeClock, events) -> None:
    from agenthost.actors import Intensity

    policy = RecoveryPolicy(intensity=Intensity(max_restarts=2, period_s=60.0))
    host = make_host(workers=1, worker_policy=policy, worker_faults={1: CRASH})
    for count, delay in ((1, 1.0), (2, 2.0)):
        assert _decisions(events, "worker-1", count)[-1]["decision"] == "restart"
        clock.advance(delay)
    escalation = _decisions(events, "worker-1", 3)[-1]
    assert escalation["decision"] == "escalate"
    assert "intensity exceeded: 3 restarts within 60.0 s (max 2)" in escalation["reason"]
    host_decision = wait_until("host decision", lambda: events.of(supervisor="host"))[0]
    assert (host_decision["child"], host_decision["decision"], host_decision["delay_s"]) == ("pool", "restart", 1.0)
    host.set_worker_faults(1, None)
    clock.advance(1.0)
    assert wait_until("new pool ready", lambda: host.status().workers and worker(host, 1).state == "ready")
    assert host.status().state == "running"
    assert host.send(host.create_thread(), "after escalation").wait(20.0).status == "completed"


def test_stable_worker_starts_counting_attempts_again(make_host, clock: FakeClock, events) -> None:
    from agenthost.chaos import kill_process_group

    host = make_host(workers=1)
    kill_process_group(worker(host, 1).pid)
    assert _decisions(events, "worker-1", 1)[0]["attempt"] == 1
    clock.advance(1.0)
    wait_until("ready", lambda: worker(host, 1).state == "ready")
    kill_process_group(worker(host, 1).pid)  # not stable yet: attempt 2, 2 s
    second = _decisions(events, "worker-1", 2)[1]
    assert (second["attempt"], second["delay_s"]) == (2, 2.0)
    clock.advance(2.0)
    wait_until("ready", lambda: worker(host, 1).state == "ready")
    clock.advance(30.0)  # stable_after_s of the default policy
    kill_process_group(worker(host, 1).pid)
    third = _decisions(events, "worker-1", 3)[2]
    assert (third["attempt"], third["delay_s"]) == (1, 1.0)


@pytest.mark.parametrize(
    ("strategy", "crashed", "restarted"),
    [
        ("rest_for_one", "persistence", ["persistence", "mapping", "turns", "pool"]),
        ("rest_for_one", "turns", ["turns", "pool"]),
        ("one_for_all", "pool", ["persistence", "mapping", "turns", "pool"]),
    ],
)
def test_host_strategy_restarts_the_right_children_and_keeps_the_data(
    make_host,
    clock: FakeClock,
    events,
    strategy: str,
    crashed: str,
    restarted: list[str],
) -> None:
    from agenthost.protocol._messages import GetChildren

    host = make_host(workers=1, host_strategy=strategy)
    thread_id = host.create_thread("survivor")
    assert host.send(thread_id, "before").wait(20.0).status == "completed"
    before = host._host.ask(GetChildren())
    before[crashed].tell(object())  # an unknown message crashes the actor: a real child failure
    decision = wait_until("host decision", lambda: events.of(supervisor="host"))[0]
    assert (decision["child"], decision["decision"], decision["restarts"]) == (crashed, "restart", restarted)
    clock.advance(1.0)
    wait_until(
        "host running", lambda: (s := host.status()).state == "running" and s.workers and s.workers[0].state == "ready"
    )
    after = host._host.ask(GetChildren())
    assert sorted(name for name in after if after[name] is not before[name]) == sorted(restarted)
    assert host.send(thread_id, "after").wait(20.0).status == "completed"
    assert [t.user_text for t in host.turns(thread_id)] == ["before", "after"]


def test_runtime_hanging_on_initialize_is_killed_at_the_startup_deadline(tmp_path, clock: FakeClock, events) -> None:
    from agenthost import AgentHost, HostConfig

    config = HostConfig(
        storage_root=str(tmp_path / "root"),
        workers=1,
        startup_timeout_s=5.0,
        checkpoint_interval_s=3600.0,
        worker_faults={1: RuntimeFaults(hang_on="initialize")},
    )
    host = AgentHost(config, clock=clock).start(wait_ready=False)
    try:
        wait_until("startup deadline armed", lambda: clock.now() + 5.0 in clock.pending_due_times("call-deadline"))
        clock.advance(4.999)
        assert worker(host, 1).state == "starting"  # not ready: initialize never answered
        clock.advance(0.001)
        decision = _decisions(events, "worker-1", 1)[0]
        assert decision["decision"] == "restart"
        assert "initialize timed out after 5 s" in decision["reason"]
        host.set_worker_faults(1, None)  # the next generation starts cleanly
        clock.advance(decision["delay_s"])
        assert wait_until("ready", lambda: worker(host, 1).state == "ready")
        assert worker(host, 1).generation == 2
    finally:
        host.shutdown(drain_timeout_s=0.5)


def test_stale_generation_exit_cannot_restart_a_newer_worker(make_host, clock: FakeClock, events) -> None:
    from agenthost.chaos import kill_process_group
    from agenthost.protocol._messages import GetChildren, WorkerExited, WorkerHealth

    host = make_host(workers=1)
    first_pid = worker(host, 1).pid
    kill_process_group(first_pid)
    _decisions(events, "worker-1", 1)
    clock.advance(1.0)
    wait_until("generation 2 ready", lambda: worker(host, 1).state == "ready" and worker(host, 1).generation == 2)
    second_pid = worker(host, 1).pid
    assert second_pid != first_pid
    pool = host._host.ask(GetChildren())["pool"]
    pool.tell(WorkerExited(worker_id=1, generation=1, reason="a late exit of generation 1", returncode=-9))
    pool.tell(WorkerHealth(worker_id=1, generation=1, degraded=True, reason="late", stalled=True))
    status = host.status()  # the pool handled the stale messages before this read
    assert (status.workers[0].state, status.workers[0].generation, status.workers[0].pid) == ("ready", 2, second_pid)
    assert len(events.of(child="worker-1")) == 1  # no decision at all on the stale generation's account
    assert not process_gone(second_pid)
