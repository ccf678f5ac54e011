"""Runtimes placed on a Ray cluster (HostConfig.placement="ray"), on a real local cluster: a head and a second node,
bound to 127.0.0.1 (tests/raykit.py). Every restart is still decided by the pool from the one recovery policy.

One cluster serves the whole module (starting one costs seconds); each test starts its own host on its own root,
so its actors live in their own namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until, worker
from raykit import SLOT, LoopbackCluster, is_loopback, ray_or_skip, wait_gone
from servicekit import ServiceProcess

from agenthost import AgentHost, Delta, HostConfig, HostStartError, RuntimeFaults
from agenthost.actors import FakeClock
from agenthost.actors._pipes import WorkerSpec
from agenthost.actors._placement import RayResources
from agenthost.actors._ray_runtime import RuntimeHost, RuntimeStarted
from agenthost.testing import capture_events

ray = ray_or_skip()
from agenthost.actors._ray_placement import namespace_for  # noqa: E402 - needs ray

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    running = LoopbackCluster()
    try:
        ray.init(address=running.address, logging_level="ERROR", log_to_driver=False)  # the tests look at actors too
        yield running
    finally:
        running.shutdown()


@pytest.fixture
def ray_host(cluster: LoopbackCluster, tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., AgentHost]]:
    hosts: list[AgentHost] = []

    def make(root: Path | None = None, **overrides: Any) -> AgentHost:
        config = HostConfig(
            storage_root=str(root or tmp_path / "root"),
            placement="ray",
            ray_address=cluster.address,
            resources=RayResources(num_cpus=0, custom={SLOT: 1}),
            startup_timeout_s=60.0,
            **overrides,
        )
        host = AgentHost(config, clock=clock).start()
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.shutdown(drain_timeout_s=1.0)


def where(host: AgentHost, worker_id: int) -> RuntimeStarted:
    """Where a worker's runtime runs, asked of its Ray actor (named per root and worker)."""
    actor = ray.get_actor(f"worker-{worker_id}", namespace=namespace_for(host.root.root))
    started: RuntimeStarted = ray.get(actor.info.options(concurrency_group="ctl").remote(), timeout=30)
    return started


def named(host: AgentHost, worker_id: int) -> bool:
    try:
        ray.get_actor(f"worker-{worker_id}", namespace=namespace_for(host.root.root))
    except ValueError:
        return False
    return True


def test_turns_run_on_both_nodes(cluster: LoopbackCluster, ray_host: Callable[..., AgentHost]) -> None:
    host = ray_host(workers=2)
    nodes = {worker_id: where(host, worker_id) for worker_id in (1, 2)}
    assert {w.node_id for w in nodes.values()} == {cluster.head_id, str(cluster.second.node_id)}  # spread
    assert all(worker(host, worker_id).pid == nodes[worker_id].pid for worker_id in (1, 2))

    threads = [host.create_thread(f"thread {n}") for n in range(2)]
    for thread_id in threads:
        finished = host.send(thread_id, f"hello from {thread_id}").wait(60.0)
        assert (finished.status, finished.text) == ("completed", f"Reference reply to: hello from {thread_id}")
    pins = host.status().pins
    assert {pins[thread_id] for thread_id in threads} == {1, 2}  # one turn ran on each node


def test_a_killed_ray_actor_is_restarted_by_our_policy_with_the_exact_backoff(
    ray_host: Callable[..., AgentHost], clock: FakeClock, events: Any
) -> None:
    host = ray_host(workers=2)
    for attempt, delay in ((1, 1.0), (2, 2.0)):
        victim = where(host, 1)
        actor = ray.get_actor("worker-1", namespace=namespace_for(host.root.root))
        ray.kill(actor, no_restart=False)  # Ray may restart it if it wants to: max_restarts=0 says it never does

        decisions = wait_until(
            "a restart decision",
            lambda n=attempt: len(events.of(child="worker-1")) >= n and events.of(child="worker-1"),
        )
        decision = decisions[attempt - 1]
        assert (decision["supervisor"], decision["decision"], decision["attempt"], decision["delay_s"]) == (
            "pool",
            "restart",
            attempt,
            delay,
        )
        assert "Ray actor" in decision["reason"] and "died" in decision["reason"], decision["reason"]
        assert wait_gone(victim.pid), "the runtime outlived its Ray actor"
        assert worker(host, 1).state == "restarting"

        clock.advance(delay - 0.01)
        time.sleep(0.2)
        assert worker(host, 1).state == "restarting" and not named(host, 1)  # nobody restarted it early
        clock.advance(0.01)
        up = wait_until("worker-1 back", lambda: worker(host, 1).state == "ready" and worker(host, 1), 60.0)
        assert (up.generation, up.restarts) == (attempt + 1, attempt)
        assert where(host, 1).pid != victim.pid

    thread_id = host.create_thread("after the restarts")
    assert host.send(thread_id, "still there?").wait(60.0).status == "completed"


def test_when_the_node_of_a_worker_dies_its_threads_continue_on_the_other_node_with_their_history(
    cluster: LoopbackCluster, ray_host: Callable[..., AgentHost], events: Any
) -> None:
    host = ray_host(workers=2, deltas_per_reply=6)
    second = str(cluster.second.node_id)
    victim = next(worker_id for worker_id in (1, 2) if where(host, worker_id).node_id == second)
    survivor = 3 - victim
    threads = [host.create_thread(f"thread {n}") for n in range(2)]
    for turn in [host.send(thread_id, "first") for thread_id in threads]:
        assert turn.wait(60.0).status == "completed"
    thread_id = next(t for t in threads if host.status().pins[t] == victim)
    runtime_pid = worker(host, victim).pid
    host.set_worker_faults(victim, RuntimeFaults(delta_delay_s=1.0))  # live: the next turn streams slowly

    try:
        turn = host.send(thread_id, "second")
        turn.wait_for(Delta, 30.0)  # streaming from the second node
        assert cluster.kill_second() == second
        finished = turn.wait(60.0)
        assert finished.status == "failed"
        assert "Ray actor" in (finished.error or "") and "node" in (finished.error or ""), finished.error

        decision = wait_until("the pool's decision", lambda: events.of(child=f"worker-{victim}"))[0]
        assert (decision["decision"], decision["attempt"], decision["delay_s"]) == ("restart", 1, 1.0)
        assert "node" in decision["reason"], decision["reason"]
        assert wait_until("pins moved", lambda: host.status().pins[thread_id] == survivor)

        third = host.send(thread_id, "third").wait(60.0)
        assert (third.status, third.text) == ("completed", "Reference reply to: third")
        assert where(host, survivor).node_id == cluster.head_id
        assert events.of("turns.resuming")  # resumed on the survivor, not recreated
        assert [t.status for t in host.turns(thread_id)] == ["completed", "failed", "completed"]
        transcript = host.transcript(thread_id)
        assert all(text in transcript for text in ("first", "second", "third"))
        assert wait_gone(runtime_pid), "a runtime outlived its node"
    finally:
        cluster.replace_second()


def test_a_restarted_head_kills_the_orphans_of_its_previous_life(
    ray_host: Callable[..., AgentHost], tmp_path: Path
) -> None:
    root = tmp_path / "orphaned"
    orphan_class = ray.remote(RuntimeHost)
    spec = WorkerSpec(worker_id=1, generation=7, argv=("sleep", "300"))
    orphan = orphan_class.options(
        name="worker-1", namespace=namespace_for(root), lifetime="detached", num_cpus=0
    ).remote(spec)
    orphan_pid = ray.get(orphan.start.remote(), timeout=60).pid

    with capture_events("placement.orphan_killed") as log:
        host = ray_host(root, workers=1)
    assert [e["actor"] for e in log.of("placement.orphan_killed")] == ["worker-1"]
    assert wait_gone(orphan_pid), "the orphan's runtime survived"
    assert where(host, 1).pid != orphan_pid
    thread_id = host.create_thread("after the sweep")
    assert host.send(thread_id, "hello").wait(60.0).status == "completed"


def test_a_host_pointed_at_another_cluster_fails_to_start_naming_both(cluster: LoopbackCluster, tmp_path: Path) -> None:
    config = HostConfig(storage_root=str(tmp_path / "root"), placement="ray", ray_address="127.0.0.1:1")
    with pytest.raises(HostStartError, match=r"already connected to the Ray cluster at \S+, not 127\.0\.0\.1:1"):
        AgentHost(config).start()


def test_a_ray_actor_the_head_loses_is_killed_and_decided_like_a_crash(
    ray_host: Callable[..., AgentHost], events: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agenthost.actors._ray_placement as placement

    monkeypatch.setattr(placement, "LOST_AFTER_S", 1.0)  # instead of 10 s: the test waits for it
    host = ray_host(workers=1)
    runtime_pid = where(host, 1).pid
    actor_process = int(Path(f"/proc/{runtime_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its ppid
    os.kill(actor_process, signal.SIGSTOP)  # alive to Ray, silent to the head
    try:
        decision = wait_until("the pool's decision", lambda: events.of(child="worker-1"), 30.0)[0]
        assert (decision["decision"], decision["attempt"], decision["delay_s"]) == ("restart", 1, 1.0)
        assert "lost: did not answer within 1.5 s" in decision["reason"], decision["reason"]
        assert wait_gone(runtime_pid), "the runtime outlived its lost actor"
    finally:
        try:
            os.kill(actor_process, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_placed_runtime_that_stops_reading_is_killed_through_its_actor_and_replaced(
    ray_host: Callable[..., AgentHost], clock: FakeClock, events: Any
) -> None:
    host = ray_host(workers=1, request_timeout_s=5.0)
    thread_id = host.create_thread("stalls")
    assert host.send(thread_id, "warm up").wait(60.0).status == "completed"
    stopped = where(host, 1).pid
    os.killpg(stopped, signal.SIGSTOP)  # the cluster is this machine: it reads nothing any more
    handle = host.send(thread_id, "x" * 1_000_000)  # cannot fit in its pipe: the actor's write blocks
    wait_until("the request's deadline armed", lambda: clock.pending_due_times("call-deadline"))
    clock.advance(5.0)
    finished = handle.wait(60.0)
    assert finished.status == "failed" and "runtime stopped reading its stdin" in (finished.error or "")
    kill = wait_until("kill", lambda: events.of(child="worker-1", decision="kill"))[0]
    assert "runtime stopped reading its stdin" in kill["reason"]
    restart = wait_until("restart", lambda: events.of(child="worker-1", decision="restart"))[0]
    assert restart["delay_s"] == 1.0 and restart["reason"].startswith("runtime stopped reading its stdin")
    assert wait_gone(stopped)
    clock.advance(1.0)
    wait_until("a new runtime", lambda: worker(host, 1).state == "ready" and worker(host, 1).generation == 2, 60.0)
    assert host.send(thread_id, "and after").wait(60.0).status == "completed"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agenthost", *args], capture_output=True, text=True, timeout=90, check=False
    )


def test_serve_on_the_cluster_and_a_head_crash_replaces_its_runtimes_keeping_the_threads(
    cluster: LoopbackCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # the service sets it itself for a loopback address
    args = ("--ray-address", cluster.address, "--workers", "1")
    config = "resources = {num_cpus = 0, custom = {agenthost = 1}}\n"
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = ServiceProcess(tmp_path / "root", tmp_path / "first", config, args).start()
    second: ServiceProcess | None = None
    try:
        second = _crash_and_restart(first, tmp_path, config, args)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def _crash_and_restart(first: ServiceProcess, tmp_path: Path, config: str, args: tuple[str, ...]) -> ServiceProcess:
    root = str(first.root)
    sent = _cli("send", "--root", root, "--new-thread", "on the cluster", "--json", "hello")
    assert sent.returncode == 0, sent.stderr
    thread_id = json.loads(sent.stdout)["thread_id"]
    runtime = where(AgentHostStub(first.root), 1)

    first.process.kill()  # the head crashes: Ray kills the actors it owned, and their runtimes die with them
    first.process.wait(30)
    assert wait_gone(runtime.pid, 30.0), "a runtime outlived its head"

    second = ServiceProcess(tmp_path / "root", tmp_path / "second", config, args).start()
    again = _cli("send", "--root", root, "--thread", thread_id, "--json", "still there?")
    assert again.returncode == 0, again.stderr + second.stderr_path.read_text()[-2000:]
    assert json.loads(again.stdout)["text"] == "Reference reply to: still there?"
    assert where(AgentHostStub(second.root), 1).pid != runtime.pid
    transcript = _cli("transcript", "--root", root, thread_id).stdout
    assert "hello" in transcript and "still there?" in transcript
    return second


class AgentHostStub:
    """What `where` needs of a host: its storage root (the service's root, resolved)."""

    def __init__(self, root: Path) -> None:
        self.root = type("Root", (), {"root": Path(root).resolve()})()


def test_the_test_cluster_listens_on_loopback_only(
    cluster: LoopbackCluster, ray_host: Callable[..., AgentHost]
) -> None:
    ray_host(workers=2)  # actors (and their worker processes) running on both nodes
    listening = cluster.listening()
    assert listening, "found no listening socket of the cluster"
    assert {(address, port) for address, port in listening if not is_loopback(address)} == set()


class _Told:
    """Stands in for a worker actor's ref: keeps what the pump tells it."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def tell(self, message: Any) -> None:
        self.messages.append(message)


def test_a_runtime_that_cannot_be_spawned_or_placed_ends_with_a_cause_naming_the_actor(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    from agenthost.actors._pipes import StdoutInbox
    from agenthost.actors._ray_placement import RayProcessHost
    from agenthost.protocol._messages import StdoutClosed

    def start(resources: RayResources, spec: WorkerSpec) -> tuple[Any, _Told]:
        host = RayProcessHost.connect(cluster.address, resources, tmp_path / f"root-{spec.worker_id}")
        told = _Told()
        runtime = host.start(spec, outbox_limit_bytes=1 << 20, inbox=StdoutInbox(), actor_ref=told, on_error_line=print)
        assert runtime.pid == 0  # start() never waits for Ray: the worker actor keeps answering its probes
        wait_until("the end of its output", lambda: any(isinstance(m, StdoutClosed) for m in told.messages), 60.0)
        return runtime, told

    missing = WorkerSpec(worker_id=1, generation=1, argv=("/nonexistent/runtime",), startup_timeout_s=60.0)
    runtime, _ = start(RayResources(num_cpus=0, custom={SLOT: 1}), missing)
    cause = runtime.exit_cause(None)
    assert cause.startswith("Ray actor agenthost-") and "could not start the runtime: its creation failed: " in cause
    assert cause.endswith("No such file or directory: '/nonexistent/runtime'"), cause

    nowhere = WorkerSpec(worker_id=2, generation=1, argv=("sleep", "30"), startup_timeout_s=1.0)
    runtime, _ = start(RayResources(num_cpus=0, custom={"no_such_node": 1}), nowhere)
    assert runtime.exit_cause(None).endswith(
        "was not placed within 1 s (it asks for num_cpus=0, no_such_node=1; does a node have that free?)"
    )


def test_the_ray_bench_measures_both_placements_on_the_cluster(cluster: LoopbackCluster, tmp_path: Path) -> None:
    out = tmp_path / "ray-bench.json"
    repo = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-m", "bench._ray", "--quick", "--address", cluster.address, "--json", str(out)],
        cwd=repo,
        env={k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["cluster"] == cluster.address and figures["ray_version"] == ray.__version__
    assert figures["local_deltas_per_s"] > 0 and figures["ray_deltas_per_s"] > 0
    assert figures["deltas_ratio_pct"] == pytest.approx(
        100 * figures["ray_deltas_per_s"] / figures["local_deltas_per_s"]
    )
    assert 0 < figures["ray_p50_ms"] <= figures["ray_p90_ms"] and 0 < figures["local_p50_ms"] <= figures["local_p90_ms"]
    assert f"ray/local {figures['deltas_ratio_pct']:5.1f} %" in run.stdout
    assert run.stderr == ""  # nothing from Ray on stderr
