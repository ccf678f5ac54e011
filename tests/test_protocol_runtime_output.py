"""The reference runtime's output: bursts of lines in one write (protocol._runtime_io), reused turn threads
(protocol._runtime_threads), and how often it looks at its live faults file (protocol._live_faults)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from agenthost.protocol import _live_faults
from agenthost.protocol._faults import RuntimeFaults
from agenthost.protocol._jsonrpc import encode_response
from agenthost.protocol._live_faults import STAT_INTERVAL_S, LiveFaults
from agenthost.protocol._runtime_io import HOLD_MAX_BYTES, StdoutWriter
from agenthost.protocol._runtime_server import ReferenceRuntime
from agenthost.protocol._runtime_threads import ReusedThreads

pytestmark = pytest.mark.timeout(30)
WAIT_S = 10.0


class _Stream:
    """A stdout stand-in that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._written = threading.Condition()

    def write(self, data: bytes) -> int:
        with self._written:
            self.writes.append(bytes(data))
            self._written.notify_all()
        return len(data)

    def flush(self) -> None:
        return None

    def wait_for(self, needle: bytes) -> None:
        with self._written:
            found = self._written.wait_for(lambda: any(needle in data for data in self.writes), timeout=WAIT_S)
        assert found, f"{needle!r} never written; writes: {self.writes!r}"


def _methods(data: bytes) -> list[str]:
    return [msgspec.json.decode(line).get("method", "(answer)") for line in data.splitlines()]


def test_lines_of_a_burst_go_out_in_one_write_when_the_outermost_burst_ends() -> None:
    stream = _Stream()
    out = StdoutWriter(stream)  # type: ignore[arg-type]
    with out.burst():
        out.notify("a", {})
        with out.burst():
            out.notify("b", {})
        out.response(1, {})
        assert stream.writes == []
    assert [_methods(data) for data in stream.writes] == [["a", "b", "(answer)"]]


def test_a_line_outside_any_burst_goes_out_at_once_behind_the_lines_waiting() -> None:
    stream = _Stream()
    out = StdoutWriter(stream)  # type: ignore[arg-type]
    in_burst, release = threading.Event(), threading.Event()

    def bursting() -> None:
        with out.burst():
            out.notify("held", {})
            in_burst.set()
            release.wait(WAIT_S)

    thread = threading.Thread(target=bursting)
    thread.start()
    assert in_burst.wait(WAIT_S)
    out.notify("now", {})
    assert [_methods(data) for data in stream.writes] == [["held", "now"]]
    release.set()
    thread.join(WAIT_S)
    assert len(stream.writes) == 1  # the burst's end found nothing left to write


def test_a_burst_writes_what_waits_once_it_reaches_the_hold_limit_to_the_byte() -> None:
    overhead = len(encode_response(1, ""))
    just_short, exactly = "x" * (HOLD_MAX_BYTES - 1 - overhead), "x" * (HOLD_MAX_BYTES - overhead)
    stream = _Stream()
    out = StdoutWriter(stream)  # type: ignore[arg-type]
    with out.burst():
        out.response(1, just_short)  # one byte short of the limit: held
        assert stream.writes == []
        out.response(2, "")  # reaches it: both written at once, still inside the burst
        assert [len(data) for data in stream.writes] == [HOLD_MAX_BYTES - 1 + overhead]
        out.response(3, just_short)  # counted afresh after a write: held again
        assert len(stream.writes) == 1
    stream = _Stream()
    out = StdoutWriter(stream)  # type: ignore[arg-type]
    with out.burst():
        for request_id in (1, 2):
            out.response(request_id, exactly)  # exactly the limit, alone: written at once, the first and the next
            assert [len(data) for data in stream.writes] == [HOLD_MAX_BYTES] * request_id


@pytest.mark.parametrize("error", [BrokenPipeError, ValueError])
def test_once_stdout_is_broken_output_is_dropped_and_logged_once(
    error: type[Exception], capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(_Stream):
        def write(self, data: bytes) -> int:
            super().write(data)
            raise error("stdout went away")

    stream = Broken()
    out = StdoutWriter(stream)  # type: ignore[arg-type]
    out.notify("first", {})
    with out.burst():
        out.notify("second", {})
    out.response(1, {})
    assert len(stream.writes) == 1
    assert capsys.readouterr().err.count("stdout is broken") == 1


def test_notifications_are_stamped_with_the_wall_clock_in_milliseconds() -> None:
    stream = _Stream()
    before_ms = time.time_ns() // 1_000_000
    StdoutWriter(stream).notify("stamped", {})  # type: ignore[arg-type]
    after_ms = time.time_ns() // 1_000_000
    assert before_ms <= msgspec.json.decode(stream.writes[0])["emittedAtMs"] <= after_ms


@pytest.fixture
def runtime_over_a_pipe(tmp_path: Path) -> Iterator[tuple[_Stream, int]]:
    """An in-process reference runtime reading the pipe whose write end is yielded, writing to a `_Stream`."""
    stream = _Stream()
    runtime = ReferenceRuntime(state_dir=str(tmp_path), out=StdoutWriter(stream), faults=RuntimeFaults())  # type: ignore[arg-type]
    read_fd, write_fd = os.pipe()
    serving = threading.Thread(target=runtime.serve, args=(read_fd,), daemon=True)
    serving.start()
    try:
        yield stream, write_fd
    finally:
        os.close(write_fd)
        serving.join(WAIT_S)
        os.close(read_fd)


def _send(write_fd: int, request_id: int, method: str, params: object) -> None:
    os.write(write_fd, msgspec.json.encode({"id": request_id, "method": method, "params": params}) + b"\n")


def test_a_turn_reaches_the_client_in_two_writes_its_answer_then_its_stream(
    runtime_over_a_pipe: tuple[_Stream, int], tmp_path: Path
) -> None:
    stream, write_fd = runtime_over_a_pipe
    _send(write_fd, 1, "initialize", {"clientInfo": {"name": "test", "version": "1"}})
    _send(write_fd, 2, "thread/start", {"cwd": str(tmp_path)})
    stream.wait_for(b"thread/started")
    [thread_id] = [
        answer["result"]["thread"]["id"]
        for data in stream.writes
        for answer in map(msgspec.json.decode, data.splitlines())
        if answer.get("id") == 2
    ]
    before = len(stream.writes)
    _send(write_fd, 3, "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "hi"}]})
    stream.wait_for(b"turn/completed")
    answer, turn_stream = stream.writes[before:]
    assert _methods(answer) == ["(answer)", "turn/started"]
    assert _methods(turn_stream) == [
        "item/started",
        "item/completed",
        "item/started",
        *["item/agentMessage/delta"] * 4,
        "item/completed",
        "turn/completed",
    ]


def test_a_task_handed_over_while_a_thread_waits_runs_on_that_thread() -> None:
    threads = ReusedThreads(idle_s=WAIT_S)
    ran: list[tuple[int, str]] = []
    done = threading.Semaphore(0)

    def task() -> None:
        ran.append((threading.get_ident(), threading.current_thread().name))
        done.release()

    threads.run("first", task)
    assert done.acquire(timeout=WAIT_S) and threads.wait_idle(1, WAIT_S)
    threads.run("second", task)
    assert done.acquire(timeout=WAIT_S) and threads.wait_idle(1, WAIT_S)
    threads.run("third", task)
    assert done.acquire(timeout=WAIT_S)
    assert ran[0][0] == ran[1][0] == ran[2][0]
    assert [name for _, name in ran] == ["first", "second", "third"]


def test_no_task_waits_behind_another_that_is_waiting() -> None:
    threads = ReusedThreads(idle_s=WAIT_S)
    second_ran, first_done = threading.Event(), threading.Event()
    threads.run("first", lambda: first_done.set() if second_ran.wait(WAIT_S) else None)
    threads.run("second", second_ran.set)
    assert first_done.wait(WAIT_S)  # the first task saw the second run while it was still waiting
    assert threads.wait_idle(2, WAIT_S) and threads.wait_idle(1, 0.0)  # both threads wait for work: at least one


def test_a_thread_with_nothing_to_do_for_idle_s_exits() -> None:
    threads = ReusedThreads(idle_s=0.0)
    ran = threading.Event()
    threads.run("short-lived", ran.set)
    assert ran.wait(WAIT_S)
    [thread] = [t for t in threading.enumerate() if t.name == "short-lived"] or [None]
    if thread is not None:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    assert not threads.wait_idle(1, 0.0)


def test_live_faults_stat_the_file_at_most_every_interval_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(_live_faults.time, "monotonic", lambda: now[0])
    path = tmp_path / "faults.json"
    live = LiveFaults(RuntimeFaults(), str(path))  # no file yet: the base, version 0
    assert (live.faults, live.version) == (RuntimeFaults(), 0)
    path.write_text('{"stop_self": true}')
    now[0] = 100.0 + STAT_INTERVAL_S / 2
    assert live.refresh() == RuntimeFaults()  # within the interval: not looked at
    now[0] = 100.0 + STAT_INTERVAL_S
    assert live.refresh() == RuntimeFaults(stop_self=True)  # the interval is over: read
    assert live.version == 1
    path.write_text('{"eof_mid_line": true}')
    now[0] += STAT_INTERVAL_S / 2
    assert live.refresh() == RuntimeFaults(stop_self=True)
    assert live.refresh(force=True) == RuntimeFaults(eof_mid_line=True)  # forced: read at once
    assert live.version == 2
