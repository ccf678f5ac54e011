"""Deltas/s: the whole host against the raw pipe + decode floor, on the same reference runtime.

Both sides run `python -m agenthost.protocol.reference_runtime --deltas-per-reply N` without faults and send the
same user text, long enough (N characters) that the reply splits into exactly N non-empty `item/agentMessage/delta`s.

- `measure_floor`: spawns the runtime directly, does the handshake (initialize -> initialized) and thread/start,
  then per turn sends turn/start and reads stdout with `os.read(fd, 65536)` + `LineBuffer` + `decode_line` on every
  line, counting delta notifications until `turn/completed`. This is the least any host must do per delta.
- `measure_host`: `AgentHost(HostConfig(workers=1, deltas_per_reply=N))` on a fresh storage root, one thread, then
  per turn `send()` and every event of the `TurnHandle` consumed (counting `Delta`s) until `TurnFinished`. This
  includes the actor hops (reader thread -> worker -> coordinator -> handle queue) and the turn's durable begin and
  finish (SQLite commits + transcript rewrites), which N amortises.

Timed: per turn, from just before the turn is sent to the moment its end is seen; the clock is
`time.perf_counter()`. One untimed warm-up turn runs first on each side. Not timed: process spawn, handshake,
thread creation, host start and shutdown. Not measured: latency, several workers or threads in parallel, faults.

Limits: every read is bounded by `timeout_s` (default 120 s): the floor's watchdog kills the runtime, whose EOF
then raises `DeltaBenchError`; the host side's `TurnHandle.next_event` raises `TimeoutError`. A turn that does not
complete or yields a delta count other than N raises `DeltaBenchError` (the figures would be meaningless).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from agenthost import AgentHost, HostConfig
from agenthost.protocol import Delta, ErrorResponse, Notification, Response, TurnFinished
from agenthost.protocol._jsonrpc import Incoming, LineBuffer, decode_line, encode_notification, encode_request
from bench._rate import Run

__all__ = ["DeltaBenchError", "DeltaParams", "RawRuntime", "measure_floor", "measure_host", "turn_text"]

READ_CHUNK_BYTES = 65536
DELTA_METHOD = "item/agentMessage/delta"
COMPLETED_METHOD = "turn/completed"
CLIENT_INFO = {"clientInfo": {"name": "agenthost-bench", "version": "0.1"}}


class DeltaBenchError(RuntimeError):
    """A delta measurement could not run to a meaningful end (runtime died, turn failed, wrong delta count)."""


class DeltaParams(msgspec.Struct, frozen=True, kw_only=True):
    """One delta measurement: `turns` timed turns (after one warm-up) of `deltas_per_reply` deltas each."""

    deltas_per_reply: int
    turns: int
    timeout_s: float = 120.0


def turn_text(deltas_per_reply: int) -> str:
    """A user text of N characters, so the reply ("Reference reply to: " + text) has >= N characters."""
    return ("bench " * (deltas_per_reply // 6 + 1))[:deltas_per_reply]


def _check_count(side: str, turn: int, deltas: int, expected: int) -> None:
    if deltas != expected:
        raise DeltaBenchError(f"{side} turn {turn}: counted {deltas} deltas, expected deltas_per_reply={expected}")


# --- floor: the runtime's stdout read and decoded directly ----------------------------------------------------------
class RawRuntime:
    """A minimal direct client: one runtime process on pipes, no host. A watchdog kills it after `timeout_s`, so no
    read blocks forever. Used for the floors the host is compared with (reference runtime and codex)."""

    def __init__(
        self, argv: list[str], *, stderr_path: Path, timeout_s: float, env: dict[str, str] | None = None
    ) -> None:
        self._stderr_path = stderr_path
        with open(self._stderr_path, "wb") as stderr:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                env=None if env is None else {**os.environ, **env},
            )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin
        self._fd = self._proc.stdout.fileno()
        self._ids = itertools.count(1)
        self._messages = self._decoded_messages()
        self.runtime_s = 0.0  # the last `run_turn`'s time at the pipes (see there)
        self._watchdog = threading.Timer(timeout_s, self._proc.kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def close(self) -> None:
        self._watchdog.cancel()
        try:
            self._stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def _decoded_messages(self) -> Iterator[Incoming]:
        """Every stdout line, decoded, in order: the hot loop the floor measures."""
        lines = LineBuffer()
        fd = self._fd
        while True:
            chunk = os.read(fd, READ_CHUNK_BYTES)
            if not chunk:
                raise DeltaBenchError(f"reference runtime closed stdout (exit {self._proc.poll()}); {self._stderr()}")
            for line in lines.feed(chunk):
                yield decode_line(line)

    def _stderr(self) -> str:
        try:
            tail = self._stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            tail = ""
        return f"stderr tail: {tail.strip() or '(empty)'}"

    @property
    def stdout_fd(self) -> int:
        """The runtime's stdout, for a caller that polls several runtimes (`messages` then must not be used)."""
        return self._fd

    @property
    def messages(self) -> Iterator[Incoming]:
        """Every stdout message, decoded, in order (shared with `call` and `run_turn`)."""
        return self._messages

    def request(self, method: str, params: Any) -> int:
        request_id = next(self._ids)
        self._stdin.write(encode_request(request_id, method, params))
        self._stdin.flush()
        return request_id

    def notify(self, method: str) -> None:
        self._stdin.write(encode_notification(method))
        self._stdin.flush()

    def call(self, method: str, params: Any) -> Any:
        """Send a request and return its result, skipping notifications that come before the answer."""
        request_id = self.request(method, params)
        for message in self._messages:
            if isinstance(message, ErrorResponse):
                raise DeltaBenchError(f"{method} failed: {message.error.message}")
            if isinstance(message, Response) and message.id == request_id:
                return message.result
        raise AssertionError("unreachable: the message stream ends only by raising")

    def run_turn(self, thread_id: str, text: str) -> int:
        """Start a turn and count its deltas until `turn/completed`; return the count. `runtime_s` is then the
        turn's time from just before `turn/start` is written to just after `turn/completed` is decoded."""
        started = time.perf_counter()
        self.request("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": text}]})
        deltas = 0
        for message in self._messages:
            if type(message) is Notification:
                if message.method == DELTA_METHOD:
                    deltas += 1
                elif message.method == COMPLETED_METHOD:
                    self.runtime_s = time.perf_counter() - started
                    _check_completed(message.params)
                    return deltas
            elif isinstance(message, ErrorResponse):
                raise DeltaBenchError(f"turn/start failed: {message.error.message}")
        raise AssertionError("unreachable: the message stream ends only by raising")


def _check_completed(params: Any) -> None:
    status = params.get("turn", {}).get("status") if isinstance(params, dict) else None
    if status != "completed":
        raise DeltaBenchError(f"floor turn ended {status!r}, expected 'completed': {params!r}")


def measure_floor(params: DeltaParams, work_dir: Path) -> Run:
    """Deltas/s of the bare pipe + decode loop (see the module docstring)."""
    argv = [
        sys.executable,
        "-m",
        "agenthost.protocol.reference_runtime",
        "--state-dir",
        str(work_dir / "floor-state"),
        "--deltas-per-reply",
        str(params.deltas_per_reply),
    ]
    runtime = RawRuntime(argv, stderr_path=work_dir / "floor-runtime.stderr", timeout_s=params.timeout_s)
    try:
        runtime.call("initialize", CLIENT_INFO)
        runtime.notify("initialized")
        thread_id = runtime.call("thread/start", {"cwd": str(work_dir)})["thread"]["id"]
        text = turn_text(params.deltas_per_reply)
        _check_count("floor", 0, runtime.run_turn(thread_id, text), params.deltas_per_reply)
        deltas, seconds = 0, 0.0
        for turn in range(1, params.turns + 1):
            started = time.perf_counter()
            counted = runtime.run_turn(thread_id, text)
            seconds += time.perf_counter() - started
            _check_count("floor", turn, counted, params.deltas_per_reply)
            deltas += counted
    finally:
        runtime.close()
    return Run(count=deltas, seconds=seconds)


# --- host: the same turns through AgentHost ----------------------------------------------------------------------
def _host_turn(host: AgentHost, thread_id: str, text: str, timeout_s: float) -> int:
    """Send one message and consume every event of its handle; return the number of runtime deltas delivered."""
    handle = host.send(thread_id, text)
    deltas = 0
    while True:
        event = handle.next_event(timeout_s)
        if type(event) is Delta:
            deltas += event.count  # the host coalesces the deltas of one stdout read into one event
        elif type(event) is TurnFinished:
            if event.status != "completed":
                raise DeltaBenchError(f"host turn {event.turn_id} ended {event.status!r}: {event.error}")
            return deltas


def measure_host(params: DeltaParams, work_dir: Path) -> Run:
    """Deltas/s through AgentHost with one worker (see the module docstring)."""
    config = HostConfig(
        storage_root=str(work_dir / "host-root"),
        workers=1,
        deltas_per_reply=params.deltas_per_reply,
        startup_timeout_s=min(params.timeout_s, 30.0),
        turn_timeout_s=params.timeout_s,
    )
    text = turn_text(params.deltas_per_reply)
    with AgentHost(config) as host:
        thread_id = host.create_thread("bench deltas")
        _check_count("host", 0, _host_turn(host, thread_id, text, params.timeout_s), params.deltas_per_reply)
        deltas, seconds = 0, 0.0
        for turn in range(1, params.turns + 1):
            started = time.perf_counter()
            counted = _host_turn(host, thread_id, text, params.timeout_s)
            seconds += time.perf_counter() - started
            _check_count("host", turn, counted, params.deltas_per_reply)
            deltas += counted
    return Run(count=deltas, seconds=seconds)
