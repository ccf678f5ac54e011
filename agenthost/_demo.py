"""`agenthost demo`: the main job, end to end, on the built-in runtime (or real codex). Self-checking.

What it does (a host with 2 workers, 3 threads): one turn per thread; one command approval, accepted; a turn on
worker W killed mid-stream with SIGKILL of W's process group; then it shows the recovery: the turn failed and
persisted, W's threads re-pinned to the healthy worker, W restarted by the pool after the policy's first backoff
(1 s), and the next turn on the same thread completing through `thread/resume` on the other worker. It prints the
transcripts and a status table. Every step is checked; the exit code is 0 only if all checks held.

With `runtime="codex"` the same job runs on real `codex app-server` workers against the local mock model server
(protocol/mock_model.py, loopback only); the model streams slowly enough for the kill to land mid-turn. Each codex
worker has its own CODEX_HOME, so the thread moved to the other worker is recreated there (an action card says so)
while the transcript keeps the whole history.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from agenthost._api import AgentHost, HostConfig, TurnHandle
from agenthost._cli import format_table
from agenthost.protocol._faults import RuntimeFaults, kill_process_group
from agenthost.protocol._messages import ApprovalRequested, Delta, HostStatus, TurnFinished

__all__ = ["run_demo", "status_table"]


class DemoCheckFailed(AssertionError):
    """A demo step did not behave as the runtime contract says."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoCheckFailed(what)
    print(f"  ok: {what}")


def status_table(status: HostStatus) -> str:
    pins: dict[int, list[str]] = {}
    for thread_id, worker_id in sorted(status.pins.items()):
        pins.setdefault(worker_id, []).append(thread_id)
    rows = [("WORKER", "STATE", "GEN", "PID", "RESTARTS", "ATTEMPT", "LAST EXIT", "PINNED THREADS")]
    for w in status.workers:
        rows.append(
            (
                str(w.worker_id),
                w.state,
                str(w.generation),
                str(w.pid or "-"),
                str(w.restarts),
                str(w.attempt),
                w.last_exit or "-",
                ", ".join(pins.get(w.worker_id, [])) or "-",
            )
        )
    return f"host: {status.state}" + (f" ({status.cause})" if status.cause else "") + "\n" + format_table(rows)


def _finish(handle: TurnHandle, timeout_s: float = 30.0) -> TurnFinished:
    done = handle.wait(timeout_s)
    print(f"  turn {done.turn_id}: {done.status} {done.text!r}" + (f" error={done.error!r}" if done.error else ""))
    return done


def _wait_until(host: AgentHost, what: str, predicate: Any, timeout_s: float = 15.0) -> HostStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = host.status()
        if predicate(status):
            return status
        if time.monotonic() > deadline:
            raise DemoCheckFailed(f"timed out after {timeout_s:g} s waiting for: {what}")
        time.sleep(0.05)


def run_demo(
    root: str | None,
    *,
    runtime: str = "builtin",
    codex_bin: str | None = None,
    codex_config: Sequence[str] = (),
) -> int:
    root = root or tempfile.mkdtemp(prefix="agenthost-demo-")
    print(f"agenthost demo ({runtime} runtime) — storage root {root}")
    try:
        with contextlib.ExitStack() as stack:
            if runtime == "codex":
                from agenthost.protocol.mock_model import MockModelServer

                model = stack.enter_context(MockModelServer(deltas=8, delta_delay_s=0.05))
                print(f"mock model server on {model.base_url}; codex binary {codex_bin}")
                config = HostConfig(
                    storage_root=root,
                    workers=2,
                    runtime="codex",
                    codex_bin=codex_bin,
                    codex_config=(*model.codex_overrides(), *codex_config),
                )
            else:
                slow = RuntimeFaults(delta_delay_s=0.05)
                config = HostConfig(storage_root=root, workers=2, deltas_per_reply=8, worker_faults={1: slow, 2: slow})
            _run(stack.enter_context(AgentHost(config)))
    except (DemoCheckFailed, TimeoutError) as exc:
        print(f"DEMO FAILED: {exc}")
        return 1
    print("\ndemo finished: every check held")
    return 0


def _run(host: AgentHost) -> None:
    print("\n1. three threads, one turn each")
    threads = [host.create_thread(title) for title in ("Release notes", "Build failure", "Refactor plan")]
    for thread_id in threads:
        done = _finish(host.send(thread_id, f"Hello from {thread_id}"))
        _check(done.status == "completed", f"{thread_id} turn completed")
    print(status_table(host.status()))

    print("\n2. a command approval, accepted")
    handle = host.send(threads[1], "Please RUN: echo agenthost-demo")
    request = handle.wait_for(ApprovalRequested, 30.0)
    print(f"  approval {request.approval_id} asks to run {request.command!r}; answering accept")
    host.answer_approval(request.approval_id, "accept")
    _check(_finish(handle).status == "completed", "approved turn completed")

    print("\n3. kill the worker running a turn, mid-stream")
    victim_thread = threads[0]
    handle = host.send(victim_thread, "Write a long answer that will be cut off")
    handle.wait_for(Delta, 30.0)
    status = host.status()
    victim = status.pins[victim_thread]
    pid = next(w.pid for w in status.workers if w.worker_id == victim)
    _check(pid is not None, f"worker {victim} has a pid (pid {pid})")
    assert pid is not None
    print(f"  first delta arrived; SIGKILL to worker {victim} (pid {pid}) and its process group")
    kill_process_group(pid)
    done = _finish(handle)
    _check(done.status == "failed" and "exited" in (done.error or ""), "killed turn ended as failed")
    persisted = host.turns(victim_thread)[-1]
    _check(persisted.status == "failed", "the failure is persisted in the database")
    status = _wait_until(host, "pins moved off the dead worker", lambda s: s.pins.get(victim_thread) != victim)
    print(status_table(status))
    _check(all(w != victim for w in status.pins.values()), f"no thread pinned to worker {victim}")

    print("\n4. the same thread continues on the healthy worker via thread/resume")
    done = _finish(host.send(victim_thread, "Are you still there?"))
    _check(done.status == "completed", "next turn on the same thread completed")

    print(f"\n5. the pool restarts worker {victim} after the policy's backoff")
    status = _wait_until(
        host,
        f"worker {victim} ready again",
        lambda s: any(w.worker_id == victim and w.state == "ready" and w.restarts == 1 for w in s.workers),
    )
    print(status_table(status))
    restarted = next(w for w in status.workers if w.worker_id == victim)
    _check(restarted.generation == 2 and restarted.pid != pid, f"worker {victim} restarted once, generation 2")

    print("\n6. transcripts")
    for thread_id in threads:
        print(f"----- {thread_id} -----")
        print(host.transcript(thread_id))
