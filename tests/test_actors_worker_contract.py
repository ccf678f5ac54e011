"""The worker actor's contract (actors/_worker.py) against a scripted runtime (tests/workerkit.py) on a FakeClock:
calls refused before `initialize` answered and behind a stop, a spawn that fails, the initialize params, timeouts
in a row and the answer that clears them, a runtime that stopped reading, a deadline that judges the pipe and not
the worker's holding, answers to server requests, what bad and unfinished lines are logged with, stderr error lines
forwarded once per interval, and no runtime outliving its actor (W1, W2, S10, S15, S18)."""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import process_gone, wait_until
from persistencekit import Collector
from workerkit import Harness, call, next_of, scripted_runtime

from agenthost.actors import FakeClock, WorkerWatch
from agenthost.actors._pipes import WorkerSpec
from agenthost.actors._worker import STDERR_FORWARD_INTERVAL_S, WorkerActor
from agenthost.protocol import kill_process_group
from agenthost.protocol._messages import (
    HOST_CALL_TIMEOUT,
    HOST_WORKER_EXITED,
    AnswerServerRequest,
    CallResult,
    Probe,
    ProbeReply,
    RuntimeOutput,
    RuntimeStderr,
    StopRuntime,
    WorkerExited,
    WorkerHealth,
    WorkerReady,
    WorkerSpawned,
)
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def kit(tmp_path: Path) -> Any:
    harness = Harness(scripted_runtime(tmp_path)[0])
    yield harness
    harness.close()


def _received(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_call_before_initialize_answered_is_refused_as_not_ready(kit: Harness, tmp_path: Path) -> None:
    argv, received = scripted_runtime(tmp_path, "hang-initialize")
    ref = kit.start(argv)
    wait_until("initialize read", lambda: any(m.get("method") == "initialize" for m in _received(received)))
    call(ref, kit.recorder, 1, "echo", {})
    reply = next_of(kit.inbox, CallResult)
    assert (reply.call_id, reply.error.code, reply.error.message) == (1, HOST_WORKER_EXITED, "worker-7 is not ready")
    assert [m.get("method") for m in _received(received)] == ["initialize"]  # nothing but the handshake went in


class _Gate:
    """A fault hook that holds the worker actor on the first message `key_of` gives each of `keys`, until that
    key's `release` is set (at most 20 s); `holding[key]` is set while it holds."""

    def __init__(self, keys: list[Any], key_of: Callable[[Any], Any]) -> None:
        self.holding = {key: threading.Event() for key in keys}
        self.release = {key: threading.Event() for key in keys}
        self._key_of = key_of

    def __call__(self, child: str, message: Any) -> None:
        key = self._key_of(message)
        if key in self.holding and not self.holding[key].is_set():
            self.holding[key].set()
            self.release[key].wait(20.0)


def test_a_call_queued_behind_a_stop_is_refused_as_stopping_and_no_exit_is_reported(kit: Harness) -> None:
    hold = _Gate(["stop"], lambda message: "stop" if isinstance(message, StopRuntime) else None)
    ref = kit.start(fault_hook=hold)
    next_of(kit.inbox, WorkerReady)
    stopped = ref.ask(StopRuntime(timeout_s=1.0), block=False)
    assert hold.holding["stop"].wait(10.0)
    call(ref, kit.recorder, 2, "echo", {})
    hold.release["stop"].set()
    assert stopped.get(timeout=10.0) is not None
    wait_until("the actor stopped", lambda: not ref.is_alive())
    told = kit.everything_told()
    (reply,) = [m for m in told if isinstance(m, CallResult)]
    assert (reply.error.code, reply.error.message) == (HOST_WORKER_EXITED, "worker-7 is stopping")
    assert not [m for m in told if isinstance(m, WorkerExited)]  # a requested stop is no exit to decide


def test_a_spawn_that_fails_is_reported_once_as_an_exit_and_the_actor_stops(kit: Harness, tmp_path: Path) -> None:
    ref = kit.start([str(tmp_path / "no-such-runtime")])
    wait_until("the actor stopped", lambda: not ref.is_alive())
    (exited,) = kit.everything_told()  # no WorkerSpawned, and no second exit from the stop that follows
    assert isinstance(exited, WorkerExited)
    assert exited.reason.startswith("spawn failed: ") and "no-such-runtime" in exited.reason
    assert (exited.worker_id, exited.generation, exited.returncode) == (7, 3, None)


@pytest.mark.parametrize("opt_out", [(), ("item/agentMessage/delta",)])
def test_initialize_names_the_client_and_opts_out_only_when_asked(
    kit: Harness, tmp_path: Path, opt_out: tuple[str, ...]
) -> None:
    argv, received = scripted_runtime(tmp_path)
    kit.start(argv, opt_out=opt_out)
    told = [kit.inbox.get(timeout=10.0)]
    while not isinstance(told[-1], WorkerReady):
        told.append(kit.inbox.get(timeout=10.0))
    spawned, ready = told  # nothing else reaches the pool on the way to ready
    assert isinstance(spawned, WorkerSpawned) and spawned.pid == ready.pid > 0
    wait_until("initialized", lambda: len(_received(received)) == 2)
    initialize, initialized = _received(received)
    expected: dict[str, Any] = {"clientInfo": {"name": "agenthost", "version": "0.1.0"}}
    if opt_out:
        expected["capabilities"] = {"optOutNotificationMethods": list(opt_out)}
    assert (initialize["method"], initialize["params"]) == ("initialize", expected)
    assert initialized == {"method": "initialized"}


def test_timeouts_in_a_row_degrade_the_worker_and_its_next_answer_clears_them(kit: Harness) -> None:
    ref = kit.start()
    next_of(kit.inbox, WorkerReady)
    for count in (1, 2):
        call(ref, kit.recorder, count, "hang", {}, timeout_s=5.0)
        wait_until("the call's deadline armed", lambda: kit.clock.pending_due_times("call-deadline"))
        kit.clock.advance(5.0)
        health = next_of(kit.inbox, WorkerHealth)  # the pool hears first, then the caller
        reply = next_of(kit.inbox, CallResult)
        assert (reply.error.code, reply.error.message) == (HOST_CALL_TIMEOUT, "hang timed out after 5 s")
        assert (health.degraded, health.stalled, health.consecutive_timeouts) == (True, False, count)
        assert health.reason == "hang timed out after 5 s"
    call(ref, kit.recorder, 3, "echo", {"x": 1})
    health = next_of(kit.inbox, WorkerHealth)
    assert next_of(kit.inbox, CallResult).result == {"x": 1}
    assert (health.degraded, health.stalled, health.consecutive_timeouts) == (False, False, 0)
    assert health.reason == "runtime answers again"
    call(ref, kit.recorder, 4, "echo", {})
    next_of(kit.inbox, CallResult)
    assert not [m for m in kit.everything_told() if isinstance(m, WorkerHealth)]  # only a recovery reports


def test_a_call_the_stopped_runtime_never_read_is_stalled_with_the_bytes_waiting(kit: Harness) -> None:
    ref = kit.start()
    ready = next_of(kit.inbox, WorkerReady)
    kill_process_group(ready.pid, signal.SIGSTOP)
    try:
        call(ref, kit.recorder, 1, "echo", {"blob": "x" * 1_000_000}, timeout_s=5.0)  # more than a pipe holds
        wait_until("the call's deadline armed", lambda: kit.clock.pending_due_times("call-deadline"))
        kit.clock.advance(5.0)
        health = next_of(kit.inbox, WorkerHealth)
        reply = next_of(kit.inbox, CallResult)
    finally:
        kill_process_group(ready.pid, signal.SIGKILL)
    match = re.fullmatch(
        r"runtime stopped reading its stdin: echo still unread after 5 s \((\d+) bytes waiting\)", health.reason
    )
    assert match is not None and int(match.group(1)) > 0
    assert (health.degraded, health.stalled) == (True, True)
    assert (reply.error.code, reply.error.message) == (HOST_CALL_TIMEOUT, health.reason)


def test_an_outbox_past_its_limit_stalls_the_worker_and_refuses_the_call(kit: Harness) -> None:
    ref = kit.start(watch=WorkerWatch(outbox_limit_bytes=256 * 1024))
    ready = next_of(kit.inbox, WorkerReady)
    kill_process_group(ready.pid, signal.SIGSTOP)
    try:
        call(ref, kit.recorder, 1, "echo", {"blob": "x" * 1_000_000})  # taken: nothing waited before it
        call(ref, kit.recorder, 2, "echo", {})  # refused: what waits would pass the limit
        health = next_of(kit.inbox, WorkerHealth)
        reply = next_of(kit.inbox, CallResult)
    finally:
        kill_process_group(ready.pid, signal.SIGKILL)
    assert reply.call_id == 2
    assert (reply.error.code, reply.error.message) == (HOST_WORKER_EXITED, "runtime stdin is not accepting")
    assert (health.degraded, health.stalled) == (True, True)
    assert health.reason.startswith("runtime stopped reading its stdin: ")


def test_a_deadline_judges_the_pipe_not_what_the_worker_was_holding(kit: Harness, tmp_path: Path) -> None:
    """The call's request is still held by the worker (messages kept waiting behind it, up to its deadline's) when
    its deadline comes: the deadline releases it first, so a healthy runtime that reads it is timed out, not
    called stalled (S18)."""
    argv, received = scripted_runtime(tmp_path)
    hold = _Gate([1, 2], lambda message: message.seq if isinstance(message, Probe) else None)
    ref = kit.start(argv, fault_hook=hold)
    next_of(kit.inbox, WorkerReady)
    ref.tell(Probe(seq=1))
    assert hold.holding[1].wait(10.0)  # the actor is held: what follows queues up
    call(ref, kit.recorder, 1, "hang", {}, timeout_s=5.0)
    ref.tell(Probe(seq=2))  # behind the call: the call's request is held, not written, when it is handled
    hold.release[1].set()
    assert hold.holding[2].wait(10.0)
    assert kit.clock.pending_due_times("call-deadline")  # armed when the call was handled
    kit.clock.advance(5.0)  # the deadline queues up behind probe 2, so the holding goes on until it is handled
    hold.release[2].set()
    told = [kit.inbox.get(timeout=10.0)]
    while not isinstance(told[-1], CallResult):
        told.append(kit.inbox.get(timeout=10.0))
    assert (told[-1].error.code, told[-1].error.message) == (HOST_CALL_TIMEOUT, "hang timed out after 5 s")
    assert [m.seq for m in told if isinstance(m, ProbeReply)] == [1, 2]
    assert not [m for m in told if isinstance(m, WorkerHealth) and m.stalled]
    methods = ["initialize", "initialized", "hang"]  # the runtime logs a line after it read it from the pipe
    wait_until("the runtime logged the call", lambda: [m.get("method") for m in _received(received)] == methods)


def test_an_answer_to_a_server_request_reaches_the_runtime_and_is_not_reported_lost(
    kit: Harness, tmp_path: Path
) -> None:
    argv, received = scripted_runtime(tmp_path)
    with capture_events("worker.answer_lost") as lost:
        ref = kit.start(argv)
        next_of(kit.inbox, WorkerReady)
        call(ref, kit.recorder, 1, "ask-client", {})
        output = next_of(kit.inbox, RuntimeOutput)
        (request,) = output.messages
        assert (request.id, request.method) == ("srv-1", "item/tool/requestApproval")
        ref.tell(AnswerServerRequest(request_id="srv-1", result={"decision": "accept"}))
        wait_until("the answer read", lambda: any(m.get("id") == "srv-1" for m in _received(received)))
        assert [m for m in _received(received) if m.get("id") == "srv-1"] == [
            {"id": "srv-1", "result": {"decision": "accept"}}
        ]
        assert lost.of("worker.answer_lost") == []


def test_bad_and_unfinished_lines_are_logged_with_their_first_200_characters(kit: Harness) -> None:
    with capture_events("worker.protocol_error", "worker.eof_mid_line") as events:
        ref = kit.start()
        next_of(kit.inbox, WorkerReady)
        call(ref, kit.recorder, 1, "garbage", {})
        assert next_of(kit.inbox, CallResult).error is None
        (bad,) = events.of("worker.protocol_error")
        assert bad["line"] == "g" * 200
        assert events.of("worker.eof_mid_line") == []
        call(ref, kit.recorder, 2, "exit-mid-line", {})
        exited = next_of(kit.inbox, WorkerExited)
        assert exited.returncode == 0
        (unfinished,) = events.of("worker.eof_mid_line")
        assert unfinished["line"] == "h" * 200


def test_stderr_error_lines_are_forwarded_the_first_then_once_per_interval() -> None:
    clock, told = FakeClock(start=0.0), Collector()
    spec = WorkerSpec(worker_id=7, generation=3, argv=("unused",))
    worker = WorkerActor(spec, pool_ref=told, output_ref=told, clock=clock)  # type: ignore[arg-type]
    for line in ("first", "dropped"):
        worker._stderr_error(line)
    clock.advance(STDERR_FORWARD_INTERVAL_S - 0.001)
    worker._stderr_error("still dropped")
    clock.advance(0.001)
    worker._stderr_error("next")
    worker._stderr_error("dropped again")
    clock.advance(5 * STDERR_FORWARD_INTERVAL_S)
    worker._stderr_error("much later")
    assert told.told() == [
        RuntimeStderr(worker_id=7, generation=3, line="first"),
        RuntimeStderr(worker_id=7, generation=3, line="next"),
        RuntimeStderr(worker_id=7, generation=3, line="much later"),
    ]
    assert STDERR_FORWARD_INTERVAL_S == 1.0


def test_a_worker_actor_without_a_runtime_stops_without_an_error() -> None:
    """What a failed spawn leaves: pykka's stop runs on_stop after the actor is gone, so an error there would only
    be logged, never seen by the pool."""
    told = Collector()
    spec = WorkerSpec(worker_id=7, generation=3, argv=("unused",))
    worker = WorkerActor(spec, pool_ref=told, output_ref=told, clock=FakeClock())  # type: ignore[arg-type]
    worker.on_stop()
    assert told.told() == []


def test_a_worker_actor_stopped_any_way_takes_its_runtime_with_it(kit: Harness) -> None:
    ref = kit.start()
    pid = next_of(kit.inbox, WorkerReady).pid
    ref.stop()  # not StopRuntime: the actor alone is stopped
    wait_until("the runtime gone", lambda: process_gone(pid))
