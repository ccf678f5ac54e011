"""A runtime process: how it is spawned, and its pipes, each served by its own thread, so the worker actor never
blocks on them.

Contract:
- Reading: `read_stdout` (the reader thread) decodes stdout (reads of up to 64 KiB) into a `StdoutInbox` and tells
  the actor `StdoutReady` only when no such signal is pending, so while the actor is busy decoded lines pile up and
  are handled as one batch. A line over 16 MiB is logged and dropped, the lines around it are kept. At EOF it tells
  `StdoutClosed(remainder)` and closes stdout.
- Writing: `StdinOutbox` owns the runtime's stdin, set non-blocking. `put` never blocks: when nothing is waiting it
  writes at once what the pipe takes (no thread hand-off on the turn path); whatever the pipe does not take waits,
  in order, for the outbox's writer thread, which writes it as the pipe drains (poll for POLLOUT). Byte counters
  say how far the runtime has read: `queued` (appended so far) and `written` (accepted by the pipe so far); a
  request appended when `queued` was Q has been read by the runtime once `written >= Q + len(request)`.
- `put(data, hold=True)` appends without writing: held bytes go to the pipe, in order, as ONE write at the next
  `release()` or plain `put`, or at once when HOLD_MAX_BYTES are held (each write wakes the runtime: the worker
  holds the calls that arrive together and releases them when its mailbox is empty). Held bytes count in `queued`
  and `pending`, not as waiting for the runtime.
- `put` refuses (`OutboxFull`) when bytes are already waiting for the runtime and the new ones would take the total
  past `limit_bytes`: a runtime that lets that much pile up has stopped reading. One message larger than the limit
  is still accepted when nothing is waiting.
- When the pipe breaks (the runtime exited or closed stdin) the outbox is `broken`: waiting bytes are dropped and
  that `put` (when it found the break itself) and every later one return False. `close()` lets the writer finish
  what is waiting and then close stdin; a runtime that never reads again is killed by its supervisor, which breaks
  the pipe and ends the thread.
"""

from __future__ import annotations

import collections
import os
import re
import select
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import IO, Any

import msgspec
import pykka

from agenthost.actors._log import get_logger
from agenthost.protocol._jsonrpc import LineBuffer, LineTooLongError, decode_line
from agenthost.protocol._messages import StdoutClosed, StdoutReady

__all__ = [
    "OutboxFull",
    "RuntimeLog",
    "StdinOutbox",
    "StdoutInbox",
    "WorkerSpec",
    "clean_line",
    "exit_reason",
    "read_stderr",
    "read_stdout",
    "spawn",
]

_log = get_logger("agenthost.worker")
_READ_CHUNK = 65536
_WRITE_CHUNK = 65536
HOLD_MAX_BYTES = _WRITE_CHUNK  # held bytes are written once this many wait for a release


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How to start one runtime process."""

    worker_id: int
    generation: int
    argv: tuple[str, ...]
    env: dict[str, str] | None = None
    cwd: str | None = None
    stderr_path: str | None = None
    startup_timeout_s: float = 10.0
    client_name: str = "agenthost"
    client_version: str = "0.1.0"
    opt_out_notifications: tuple[str, ...] = ()


def exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "runtime did not exit"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def spawn(spec: WorkerSpec) -> subprocess.Popen[bytes]:
    """Start the runtime in its own session and process group (a kill reaches what it started), with umask 077 (what
    it creates is owner-only), stdin and stdout piped, stderr piped when `spec.stderr_path` is set (a `RuntimeLog`
    keeps it) or discarded."""
    env = None if spec.env is None else {**os.environ, **spec.env}
    return subprocess.Popen(
        list(spec.argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if spec.stderr_path is None else subprocess.PIPE,
        cwd=spec.cwd,
        env=env,
        start_new_session=True,
        umask=0o077,
    )


_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")  # CSI, OSC
# a line with one of these is the runtime's latest error (tracing's `error=` field included: codex logs the cause of
# a retried model connection as "WARN ... stream connection failed; waiting to retry ... error=Connection failed")
_ERROR_WORDS = (b"ERROR", b"error:", b"error=", b"Error:", b"Traceback", b"panicked", b"Connection refused")


class RuntimeLog:
    """A runtime's stderr on disk: ANSI codes stripped, one line per line, rotated by size (`path`, `path.1` ...
    `path.<keep>`; the oldest is dropped), created owner-only. Only the stderr thread writes to it."""

    def __init__(self, path: str, max_bytes: int = 10 * 1024 * 1024, keep: int = 3) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self._file = self._open()

    def _open(self) -> Any:
        return os.fdopen(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")

    def write(self, line: bytes) -> None:
        self._file.write(line + b"\n")
        self._file.flush()
        if self._file.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.keep, 0, -1):
            older = f"{self.path}.{index - 1}" if index > 1 else self.path
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index}")
        self._file = self._open()

    def close(self) -> None:
        self._file.close()


def clean_line(raw: bytes) -> bytes:
    """A stderr line without ANSI escape codes or trailing whitespace."""
    return _ANSI.sub(b"", raw).rstrip()


def read_stderr(stream: IO[bytes], log: RuntimeLog, on_error: Callable[[str], None]) -> None:
    """Stderr thread body: every line, cleaned, into `log`; lines that report an error also to `on_error`."""
    try:
        for raw in stream:
            line = clean_line(raw)
            if not line:
                continue
            log.write(line)
            if any(word in line for word in _ERROR_WORDS):
                on_error(line[:500].decode("utf-8", "replace"))
    except (OSError, ValueError):
        pass
    finally:
        stream.close()
        log.close()


class OutboxFull(RuntimeError):
    """More than the outbox's limit is waiting for a runtime's stdin: it stopped reading."""


class StdoutInbox:
    """Decoded stdout lines waiting for the worker actor, shared by the reader thread and the actor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Any] = []
        self._signalled = False

    def put(self, messages: list[Any]) -> bool:
        """Add messages; True when the caller must signal the actor (no signal is pending)."""
        with self._lock:
            self._messages.extend(messages)
            if self._signalled:
                return False
            self._signalled = True
            return True

    def take(self) -> list[Any]:
        """Everything waiting, in stdout order; the next `put` signals again."""
        with self._lock:
            messages, self._messages = self._messages, []
            self._signalled = False
            return messages


def read_stdout(stream: IO[bytes], inbox: StdoutInbox, actor_ref: pykka.ActorRef[Any]) -> None:
    """Reader thread body: chunks -> decoded lines in `inbox` (+ StdoutReady); EOF -> StdoutClosed."""
    lines = LineBuffer()
    fd = stream.fileno()
    try:
        while True:
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                break
            try:
                complete = lines.feed(chunk)
            except LineTooLongError as exc:
                _log.warning("worker.line_too_long", error=str(exc))
                complete = lines.feed(b"")  # the good lines that came with the long one
            if complete and inbox.put([decode_line(line) for line in complete if line]):
                actor_ref.tell(StdoutReady())
        actor_ref.tell(StdoutClosed(remainder=lines.flush()))
    except pykka.ActorDeadError:
        pass
    finally:
        stream.close()  # only this thread reads the fd, so only it may close it


class StdinOutbox:
    """Bytes waiting for a runtime's stdin and the thread that writes them (see the module contract)."""

    def __init__(self, stream: IO[bytes], limit_bytes: int, name: str) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        os.set_blocking(self._fd, False)
        self._limit = limit_bytes
        self._lock = threading.RLock()  # `put` writes while holding it; `_write` takes it again
        self._more = threading.Condition(self._lock)  # the writer thread waits here for chunks (or close)
        self._progress = threading.Condition(self._lock)  # `read_up_to` waits here for `written` to grow
        self._chunks: collections.deque[bytes] = collections.deque()
        self._held = bytearray()  # put with hold=True, not yet given to the pipe
        self.queued = 0
        self.written = 0
        self.broken = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Bytes appended but not yet accepted by the pipe."""
        with self._lock:
            return self.queued - self.written

    def put(self, data: bytes, *, hold: bool = False) -> bool:
        """Append `data` (with what is held, written at once when nothing waits before it; held when `hold`, see the
        module contract); False if the pipe is broken or closing; OutboxFull if the runtime stopped reading."""
        with self._lock:
            if self.broken or self._closing:
                return False
            waiting = self.queued - self.written - len(self._held)  # incl. a chunk the writer thread is writing
            if waiting and waiting + len(data) > self._limit:
                raise OutboxFull(f"{waiting} bytes already wait for the runtime's stdin (limit {self._limit})")
            self.queued += len(data)
            self._held += data
            if hold and len(self._held) < HOLD_MAX_BYTES:
                return True
            return self._give()

    def release(self) -> bool:
        """Give the held bytes to the pipe as one write; False if the pipe is broken or closing."""
        with self._lock:
            if self.broken or self._closing:
                return False
            return self._give() if self._held else True

    def _give(self) -> bool:
        """The held bytes to the pipe: written at once when nothing waits before them, else queued for the writer
        thread (the lock is held)."""
        data = bytes(self._held)
        self._held.clear()
        if self.queued - self.written == len(data):  # nothing waits before them
            rest = self._write(data)
            if rest is None:
                return False
            if not rest:
                return True
            data = rest
        self._chunks.append(data)
        self._more.notify()
        return True

    def read_up_to(self, offset: int, grace_s: float = 0.0) -> bool:
        """True once the runtime has read every byte appended before `offset` (a `queued` value); waits up to
        `grace_s` (real time) for the writer thread to get there, so a healthy runtime is never judged by a write
        that is merely still on its way."""
        with self._lock:
            return self._progress.wait_for(lambda: self.written >= offset, timeout=grace_s)

    def close(self) -> None:
        """No more bytes: the writer closes stdin once what is waiting (and what is held) has been written (or the
        pipe broke)."""
        with self._lock:
            if self._held and not self.broken:
                self._chunks.append(bytes(self._held))
            self._held.clear()
            self._closing = True
            self._more.notify()

    def _run(self) -> None:
        writable = select.poll()
        writable.register(self._fd, select.POLLOUT)
        try:
            while True:
                with self._lock:
                    while not self._chunks and not self._closing:
                        self._more.wait()
                    if not self._chunks:
                        return  # closing and drained
                    chunk: bytes | None = self._chunks.popleft()
                while chunk:
                    writable.poll()  # POLLOUT, or POLLERR once the runtime closed its end: the write then fails
                    chunk = self._write(chunk)
                if chunk is None:
                    return
        finally:
            try:
                self._stream.close()
            except OSError:
                pass

    def _write(self, chunk: bytes) -> bytes | None:
        """Write what the pipe takes now without blocking; return the rest (b"": all of it), None once broken."""
        view = memoryview(chunk)
        while view:
            try:
                done = os.write(self._fd, view[:_WRITE_CHUNK])
            except BlockingIOError:
                return bytes(view)
            except OSError:  # EPIPE and friends: the runtime is gone or closed its stdin
                with self._lock:
                    self.broken = True
                    self.written = self.queued  # nothing more will be written; nothing is waiting any more
                    self._chunks.clear()
                    self._held.clear()
                    self._progress.notify_all()
                return None
            view = view[done:]
            with self._lock:
                self.written += done
                self._progress.notify_all()
        return b""
