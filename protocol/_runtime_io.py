"""Stdout/stderr of the reference runtime.

Contract:
- Every stdout write goes through one lock: one whole line per write, flushed at once, so lines from the reader loop
  and the turn threads never interleave. Notifications carry an extra top-level "emittedAtMs" (wall clock, ms), as
  codex writes them; nothing carries "jsonrpc".
- `delta` counts agentMessage deltas process-wide; with `crash_after_deltas=N` the process SIGKILLs itself right
  after writing and flushing delta N (nothing more reaches stdout).
- Once stdout is broken (the host closed the pipe), further writes are dropped; the failure is logged once.
- `log` writes one line to stderr, prefixed with "reference-runtime[<pid>]".
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, BinaryIO

import msgspec

from agenthost.protocol._errors import INVALID_REQUEST
from agenthost.protocol._jsonrpc import RequestId, encode_error, encode_request, encode_response

__all__ = ["GARBAGE_LINE", "StdoutWriter", "log", "now_ms"]

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
                log(f"fault crash_after_deltas={self._crash_after_deltas}: SIGKILL")
                os.kill(os.getpid(), signal.SIGKILL)

    def _write(self, line: bytes) -> None:
        with self._lock:
            self._write_locked(line)

    def _write_locked(self, line: bytes) -> None:
        if self._broken:
            return
        try:
            self._stream.write(line)
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._broken = True
            log(f"stdout is broken, dropping output from now on: {exc!r}")


def _encode_notification(method: str, params: Any) -> bytes:
    return _encoder.encode(_NotificationLine(method=method, params=params, emitted_at_ms=now_ms())) + b"\n"
