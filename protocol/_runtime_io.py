"""Stdout/stderr of the reference runtime.

Contract:
- Every stdout line goes through one lock, whole, in the order written, so lines from the reader loop and the turn
  threads never interleave. Notifications carry an extra top-level "emittedAtMs" (wall clock, ms), as codex writes
  them; nothing carries "jsonrpc".
- Bursts: lines a thread writes inside `burst()` wait, and reach stdout together in one write when its outermost
  burst ends, at `flush()`, or once HOLD_MAX_BYTES (64 KiB) wait, whichever comes first; a line written outside any
  burst is written at once, with every line waiting before it. The waiting lines are one list for all threads, so
  any write or flush keeps the order in which they were written. (Each pipe write costs this process a syscall and
  wakes the host's reader; a turn's ten lines made ten of each.) A thread that is about to wait (for time, or for
  the client) must `flush()` first: nothing else writes its lines.
- `delta` counts agentMessage deltas process-wide; with `crash_after_deltas=N` the process SIGKILLs itself right
  after writing and flushing delta N, with every line before it (nothing more reaches stdout).
- Once stdout is broken (the host closed the pipe), further writes are dropped; the failure is logged once.
- `log` writes one line to stderr, prefixed with "reference-runtime[<pid>]".
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import msgspec

from agenthost.protocol._errors import INVALID_REQUEST
from agenthost.protocol._jsonrpc import RequestId, encode_error, encode_request, encode_response

__all__ = ["GARBAGE_LINE", "HOLD_MAX_BYTES", "StdoutWriter", "log", "now_ms"]

HOLD_MAX_BYTES = 64 * 1024  # lines waiting in bursts are written at once when they reach this size

GARBAGE_LINE = b"### reference runtime fault: garbage_before_turn (this line is not JSON) ###\n"


class _NotificationLine(msgspec.Struct, rename="camel"):
    method: str
    params: Any
    emitted_at_ms: int


_encoder = msgspec.json.Encoder()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def log(message: str) -> None:
    sys.stderr.write(f"reference-runtime[{os.getpid()}]: {message}\n")
    sys.stderr.flush()


class StdoutWriter:
    def __init__(self, stream: BinaryIO, crash_after_deltas: int | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._crash_after_deltas = crash_after_deltas
        self._deltas_written = 0
        self._broken = False
        self._waiting: list[bytes] = []  # lines written in bursts, not on stdout yet (every thread's, in order)
        self._waiting_bytes = 0
        self._bursts = threading.local()  # .depth: how many bursts this thread is in

    @contextlib.contextmanager
    def burst(self) -> Iterator[None]:
        """Lines this thread writes inside reach stdout together when its outermost burst ends (see the contract)."""
        depth = getattr(self._bursts, "depth", 0)
        self._bursts.depth = depth + 1
        try:
            yield
        finally:
            self._bursts.depth = depth
            if depth == 0:
                self.flush()

    def flush(self) -> None:
        """Write every waiting line now, in one write."""
        with self._lock:
            self._flush_locked()

    def response(self, request_id: RequestId, result: Any) -> None:
        self._write(encode_response(request_id, result))

    def error(self, request_id: RequestId | None, message: str, code: int = INVALID_REQUEST) -> None:
        self._write(encode_error(request_id, code, message))

    def request(self, request_id: RequestId, method: str, params: Any) -> None:
        self._write(encode_request(request_id, method, params))

    def notify(self, method: str, params: Any) -> None:
        self._write(_encode_notification(method, params))

    def garbage(self) -> None:
        self._write(GARBAGE_LINE)

    def delta(self, params: Any) -> None:
        """Write one item/agentMessage/delta; may SIGKILL the process (crash_after_deltas)."""
        line = _encode_notification("item/agentMessage/delta", params)
        with self._lock:
            self._write_locked(line)
            self._deltas_written += 1
            if self._deltas_written == self._crash_after_deltas:
                self._flush_locked()
                log(f"fault crash_after_deltas={self._crash_after_deltas}: SIGKILL")
                os.kill(os.getpid(), signal.SIGKILL)

    def _write(self, line: bytes) -> None:
        with self._lock:
            self._write_locked(line)

    def _write_locked(self, line: bytes) -> None:
        if self._broken:
            return
        self._waiting.append(line)
        self._waiting_bytes += len(line)
        if getattr(self._bursts, "depth", 0) <= 0 or self._waiting_bytes >= HOLD_MAX_BYTES:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._waiting:
            return
        data = b"".join(self._waiting)
        self._waiting.clear()
        self._waiting_bytes = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._broken = True
            log(f"stdout is broken, dropping output from now on: {exc!r}")


def _encode_notification(method: str, params: Any) -> bytes:
    return _encoder.encode(_NotificationLine(method=method, params=params, emitted_at_ms=now_ms())) + b"\n"
