"""The worker actor alone, against real runtime processes: handshake, calls, deadlines, exits, stop."""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Any

import pytest
from conftest import process_gone, wait_until
from workerkit import Harness, call, next_of

from agenthost.actors._refs import ask
from agenthost.actors._worker import WorkerActor
from agenthost.chaos import RuntimeFaults, encode_faults, kill_process_group
from agenthost.protocol._messages import (
    HOST_CALL_TIMEOUT,
    HOST_WORKER_EXITED,
    CallDeadline,
    CallResult,
    RuntimeCall,
    RuntimeOutput,
    StopRuntime,
    WorkerExited,
    WorkerReady,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def harness(tmp_path):
    """(start(argv=None, faults=None), inbox, clock, recorder): workers on the built-in runtime by default."""
    kit = Harness(
        [sys.executable, "-m", "agenthost.protocol.reference_runtime", "--state-dir", str(tmp_path / "state")]
    )

    def start(argv: list[str] | None = None, faults: RuntimeFaults | None = None) -> Any:
        if faults is not None:
            argv = [*(argv or kit.default_argv), "--faults", encode_faults(faults)]
        return kit.start(argv)

    yield start, kit.inbox, kit.clock, kit.recorder
    kit.close()


def test_ready_only_after_initialize_then_calls_and_output_flow(harness) -> None:
    start, inbox, _, recorder = harness
    ref = start()
    ready = next_of(inbox, WorkerReady)
    assert (ready.worker_id, ready.generation) == (7, 3) and ready.pid > 0
    call(ref, recorder, 1, "thread/start", {})
    reply = next_of(inbox, CallResult)
    assert reply.call_id == 1 and reply.error is None and reply.result["thread"]["id"]
    output = next_of(inbox, RuntimeOutput)
    assert (output.worker_id, output.generation) == (7, 3)
    assert output.messages[0].method == "thread/started"


def test_runtime_error_is_passed_through_verbatim(harness) -> None:
    start, inbox, _, recorder = harness
    ref = start()
    next_of(inbox, WorkerReady)
    call(ref, recorder, 2, "turn/start", {"threadId": "00000000-0000-0000-0000-000000000000", "input": []})
    reply = next_of(inbox, CallResult)
    assert reply.error.code == -32600
    assert reply.error.message == "thread not found: 00000000-0000-0000-0000-000000000000"


def test_call_deadline_answers_with_a_host_timeout(harness) -> None:
    start, inbox, clock, recorder = harness
    ref = start(faults=RuntimeFaults(hang_on="thread/start"))
    next_of(inbox, WorkerReady)
    call(ref, recorder, 3, "thread/start", {}, timeout_s=2.0)
    ask(ref, CallDeadline(wire_id=-1), 10.0)  # a no-op round trip: the call before it is registered
    clock.advance(2.0)
    reply = next_of(inbox, CallResult)
    assert reply.error.code == HOST_CALL_TIMEOUT and reply.error.message == "thread/start timed out after 2 s"


def test_exit_fails_pending_calls_and_reports_the_signal(harness) -> None:
    start, inbox, _, recorder = harness
    ref = start(faults=RuntimeFaults(hang_on="thread/start"))
    ready = next_of(inbox, WorkerReady)
    call(ref, recorder, 4, "thread/start", {})
    ask(ref, CallDeadline(wire_id=-1), 10.0)
    kill_process_group(ready.pid)
    reply = next_of(inbox, CallResult)
    assert reply.error.code == HOST_WORKER_EXITED and "killed by signal SIGKILL" in reply.error.message
    exited = next_of(inbox, WorkerExited)
    assert (exited.worker_id, exited.generation, exited.returncode) == (7, 3, -9)
    assert exited.reason == "killed by signal SIGKILL"


def test_stop_kills_a_runtime_that_ignores_stdin_close(harness, tmp_path) -> None:
    script = tmp_path / "stubborn.py"
    pid_file = tmp_path / "grandchild.pid"
    script.write_text(
        textwrap.dedent(f"""
        import json, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a tool it started
        open({str(pid_file)!r}, "w").write(str(child.pid))
        line = sys.stdin.readline()
        sys.stdout.write(json.dumps({{"id": json.loads(line)["id"], "result": {{}}}}) + "\\n")
        sys.stdout.flush()
        sys.stdin.read()          # EOF arrives ...
        time.sleep(60)            # ... and is ignored
    """)
    )
    start, inbox, _, _ = harness
    ref = start(argv=[sys.executable, str(script)])
    ready = next_of(inbox, WorkerReady)
    grandchild = int(pid_file.read_text())
    assert os.getpgid(grandchild) == ready.pid  # the runtime leads its own process group
    returncode = ref.ask(StopRuntime(timeout_s=0.3))
    assert returncode == -9
    assert not ref.is_alive()
    # the SIGKILL reached the whole group, the tool the runtime started included
    wait_until("the grandchild gone", lambda: process_gone(grandchild))


def test_calls_that_arrive_together_reach_the_runtime_in_one_write(harness, monkeypatch) -> None:
    """S18: what the handling of one message writes is held while more messages wait, then written as one."""
    import threading

    from agenthost.actors._pipes import StdinOutbox

    start, inbox, _, recorder = harness
    ref = start()
    next_of(inbox, WorkerReady)
    gives: list[int] = []
    real_give = StdinOutbox._give
    monkeypatch.setattr(StdinOutbox, "_give", lambda self: gives.append(len(self._held)) or real_give(self))
    told, real_on_call = threading.Event(), WorkerActor._on_call

    def on_call(self: WorkerActor, runtime_call: RuntimeCall) -> None:
        told.wait(10.0)  # the worker is busy while the test tells every call
        real_on_call(self, runtime_call)

    monkeypatch.setattr(WorkerActor, "_on_call", on_call)
    for call_id in range(3):
        call(ref, recorder, call_id, "thread/start", {})
    told.set()
    results = [next_of(inbox, CallResult) for _ in range(3)]
    assert sorted(result.call_id for result in results) == [0, 1, 2]
    assert all(result.error is None for result in results)
    assert len(gives) == 1 and gives[0] > 0  # the three requests, in one write


def test_a_line_over_the_limit_is_dropped_and_the_lines_around_it_are_kept(harness, tmp_path) -> None:
    """A runtime writes a notification, a 16 MiB + 1 line, another notification and its answer in one burst: the
    long line is one `worker.line_too_long` warning; the rest arrives, in order, and the worker stays up (W3)."""
    from agenthost.protocol._jsonrpc import DEFAULT_MAX_LINE_BYTES
    from agenthost.testing import capture_events

    script = tmp_path / "long_line_runtime.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys
        def answer(line):
            return json.dumps({{"id": json.loads(line)["id"], "result": {{}}}}) + "\\n"
        sys.stdout.write(answer(sys.stdin.readline()))  # initialize
        sys.stdout.flush()
        line = sys.stdin.readline()
        while "id" not in json.loads(line):  # the "initialized" notification
            line = sys.stdin.readline()
        long_line = "x" * {DEFAULT_MAX_LINE_BYTES + 1}
        sys.stdout.write('{{"method":"before"}}\\n' + long_line + '\\n{{"method":"after"}}\\n' + answer(line))
        sys.stdout.flush()
        sys.stdin.read()
    """)
    )
    start, inbox, _, recorder = harness
    with capture_events("worker.line_too_long") as events:
        ref = start(argv=[sys.executable, str(script)])
        next_of(inbox, WorkerReady)
        call(ref, recorder, 1, "thread/start", {})
        methods: list[str] = []
        reply = None
        while reply is None or methods != ["before", "after"]:
            message = inbox.get(timeout=20.0)
            if isinstance(message, RuntimeOutput):
                methods += [notice.method for notice in message.messages]
            elif isinstance(message, CallResult):
                reply = message
            assert not isinstance(message, WorkerExited)
        assert reply.call_id == 1 and reply.error is None
        (warning,) = events.of("worker.line_too_long")  # its size is what was read when it passed the limit
        assert warning["error"].endswith(f"bytes exceeds max_line_bytes={DEFAULT_MAX_LINE_BYTES}; the line was dropped")
    assert ref.is_alive()
