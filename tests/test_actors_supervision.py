"""Pool supervision on real runtime processes, driven by a FakeClock: exact schedules, caps, give-up."""

from __future__ import annotations

import pytest
from conftest import wait_until, worker

from actors import Backoff, FakeClock, RecoveryPolicy
from chaos import RuntimeFaults

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


def test_every_worker_given_up_fails_the_host_with_the_cause(make_host, clock: FakeClock, events) -> None:
    host = make_host(workers=1, worker_policy=RecoveryPolicy(max_attempts=1), worker_faults={1: CRASH})
    _decisions(events, "worker-1", 1)
    clock.advance(1.0)
    give_up = _decisions(events, "worker-1", 2)[1]
    assert give_up["decision"] == "give_up"
    status = wait_until("host failed", lambda: (s := host.status()).state == "failed" and s)
    assert "all 1 workers gave up" in (status.cause or "")
    host_decision = events.of(supervisor="host")
    assert host_decision and host_decision[0]["decision"] == "fail_host"


def test_runtime_hanging_on_initialize_is_killed_at_the_startup_deadline(tmp_path, clock: FakeClock, events) -> None:
    from actors import AgentHost, HostConfig

    config = HostConfig(
        storage_root=str(tmp_path / "root"), workers=1, startup_timeout_s=5.0, checkpoint_interval_s=3600.0,
        worker_faults={1: RuntimeFaults(hang_on="initialize")},
    )
    host = AgentHost(config, clock=clock).start(wait_ready=False)
    try:
        wait_until("startup deadline armed", lambda: clock.now() + 5.0 in clock.pending_due_times())
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
    from chaos import kill_process_group

    host = make_host(workers=1)
    first_pid = worker(host, 1).pid
    kill_process_group(first_pid)
    _decisions(events, "worker-1", 1)
    clock.advance(1.0)
    wait_until("generation 2 ready", lambda: worker(host, 1).state == "ready" and worker(host, 1).generation == 2)
    assert len(events.of(child="worker-1")) == 1
    assert worker(host, 1).pid != first_pid
