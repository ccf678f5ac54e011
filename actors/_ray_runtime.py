"""The process host that runs inside a Ray actor: one runtime process, its pipes, nothing else.

It is deliberately dumb. It never restarts, retries or decides anything; the pool supervisor on the head does.
This module does not import ray (the head wraps `RuntimeHost` with `ray.remote`, see actors._ray_placement), so it
is tested like any other class.

Contract:
- `start()` spawns the runtime (argv, env, cwd of a `WorkerSpec`) in its own session and process group, with umask
  077, and returns `RuntimeStarted` (pid, node address, host name); `RuntimeHost(spec, spawn=True)` does it in the
  constructor (the Ray actor's creation task, so every call finds the runtime started; a failed spawn fails the
  actor's creation). `info()` says where it runs. On Linux the runtime also gets
  PR_SET_PDEATHSIG=SIGKILL: if the Ray worker process holding it dies (its node died, or Ray killed it), the
  runtime dies with it, so a runtime never outlives its host. The spawning thread stays alive, waiting for the
  runtime's exit, because the death signal follows the thread that forked.
- Input in order: `write(seq, data)` writes `data` to the runtime's stdin (blocking until the pipe took all of it)
  and must be called with seq 0, 1, 2, ... (anything else raises `ValueError`: input is never reordered). It
  returns False once the pipe is broken. `close_stdin()` closes it.
- Output in batches: a reader thread keeps stdout bytes in a buffer (at most `buffer_limit` bytes; past that the
  reader stops reading, as a pipe would). `read(seq, wait_s, max_bytes)` waits up to `wait_s` for output or EOF
  and returns an `OutputBatch` with everything buffered (up to `max_bytes`), the stderr lines that reported an
  error since the last batch, and `eof` once stdout closed and the buffer is empty. Reads are numbered 0, 1, 2 ...
  and served in that order (one waits for the one before it, so the head can keep the next one waiting here); a
  read asked again gets the batch it got the first time, so a retried call never loses or repeats output.
- stderr goes to `spec.stderr_path` on this node (a `RuntimeLog`, its folder created owner-only) or is discarded.
- `signal_group(sig)` signals the whole group (a group that is gone is ignored). `exited_within(timeout_s)` says
  whether the runtime exited within `timeout_s`. `wait(grace_s)` waits for the runtime's exit and SIGKILLs the
  group if it lingers past `grace_s`; it returns the exit code (negative: a signal).
"""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

import msgspec

from agenthost.actors._pipes import RuntimeLog, WorkerSpec, read_stderr

__all__ = ["OutputBatch", "RuntimeHost", "RuntimeStarted"]

_READ_CHUNK = 65536
_PR_SET_PDEATHSIG = 1
_MAX_ERROR_LINES = 16
_KEPT_BATCHES = 4  # a read asked again gets the same batch while it is among the last few
_READ_TURN_S = 60.0  # how long a read waits for the read before it (the head keeps two in flight)


class RuntimeStarted(msgspec.Struct, frozen=True, kw_only=True):
    """The runtime process exists: its pid on its node, and which node that is."""

    pid: int
    node_ip: str
    node_id: str  # Ray's node id ("" outside Ray)
    hostname: str


class OutputBatch(msgspec.Struct, frozen=True, kw_only=True):
    """What the runtime wrote since the last batch: stdout bytes in order, error lines from stderr, and EOF."""

    stdout: bytes = b""
    error_lines: tuple[str, ...] = ()
    eof: bool = False


def _death_signal() -> Callable[[], None] | None:
    """A preexec function that makes the child die with its parent thread (Linux), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl: die now, as the signal would have
            os._exit(1)

    return preexec


def _where(pid: int) -> RuntimeStarted:
    """The runtime's pid and the node it runs on (Ray's view of it inside a Ray actor)."""
    node_ip, node_id = "127.0.0.1", ""
    ray = sys.modules.get("ray")  # imported when running inside a Ray worker; this module never imports it itself
    if ray is not None and ray.is_initialized():
        try:
            node_ip, node_id = str(ray.util.get_node_ip_address()), str(ray.get_runtime_context().get_node_id())
        except Exception:  # noqa: BLE001 - ray imported but not connected: say what we know
            pass
    return RuntimeStarted(pid=pid, node_ip=node_ip, node_id=node_id, hostname=socket.gethostname())


class RuntimeHost:
    """One runtime process and its pipes (see the module contract)."""

    def __init__(self, spec: WorkerSpec, buffer_limit: int = 8 * 1024 * 1024, *, spawn: bool = False) -> None:
        self._spec = spec
        self._limit = buffer_limit
        self._cond = threading.Condition()
        self._stdout = bytearray()
        self._errors: collections.deque[str] = collections.deque(maxlen=_MAX_ERROR_LINES)
        self._eof = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._exited = threading.Event()
        self._next_seq = 0
        self._next_read = 0
        self._served: dict[int, OutputBatch] = {}  # the last batches returned, by read number
        self._broken = False
        self._stdin_lock = threading.Lock()
        if spawn:  # as a Ray actor: the runtime exists before any call reaches the actor
            self.start()

    # --- start ---------------------------------------------------------------------------------------------
    def start(self) -> RuntimeStarted:
        if self._proc is not None:
            raise RuntimeError("runtime already started")
        started: list[subprocess.Popen[bytes] | BaseException] = []
        ready = threading.Event()
        threading.Thread(target=self._spawn_and_wait, args=(started, ready), name="runtime-wait", daemon=True).start()
        ready.wait()
        outcome = started[0]
        if isinstance(outcome, BaseException):
            raise outcome
        self._proc = outcome
        assert outcome.stdout is not None
        threading.Thread(target=self._read_stdout, args=(outcome.stdout,), name="runtime-stdout", daemon=True).start()
        if outcome.stderr is not None and self._spec.stderr_path is not None:
            os.makedirs(os.path.dirname(self._spec.stderr_path) or ".", mode=0o700, exist_ok=True)
            log = RuntimeLog(self._spec.stderr_path)
            threading.Thread(
                target=read_stderr, args=(outcome.stderr, log, self._on_error_line), name="runtime-stderr", daemon=True
            ).start()
        return _where(outcome.pid)

    def _spawn_and_wait(self, started: list[subprocess.Popen[bytes] | BaseException], ready: threading.Event) -> None:
        spec = self._spec
        try:
            proc = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL if spec.stderr_path is None else subprocess.PIPE,
                cwd=spec.cwd,
                env=None if spec.env is None else {**os.environ, **spec.env},
                start_new_session=True,
                umask=0o077,
                preexec_fn=_death_signal(),  # noqa: PLW1509 - only prctl and getppid run in the child
            )
        except OSError as exc:
            started.append(exc)
            ready.set()
            return
        started.append(proc)
        ready.set()
        self._returncode = proc.wait()
        self._exited.set()

    def _on_error_line(self, line: str) -> None:
        with self._cond:
            self._errors.append(line)

    def _read_stdout(self, stream: IO[bytes]) -> None:
        fd = stream.fileno()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: len(self._stdout) < self._limit)
                try:
                    chunk = os.read(fd, _READ_CHUNK)
                except OSError:
                    chunk = b""
                with self._cond:
                    if chunk:
                        self._stdout += chunk
                    else:
                        self._eof = True
                    self._cond.notify_all()
                if not chunk:
                    return
        finally:
            stream.close()

    # --- the head's calls ----------------------------------------------------------------------------------
    def info(self) -> RuntimeStarted:
        return _where(self._require().pid)

    def write(self, seq: int, data: bytes) -> bool:
        proc = self._require()
        with self._stdin_lock:
            if seq != self._next_seq:
                raise ValueError(f"stdin write {seq} arrived out of order (expected {self._next_seq})")
            self._next_seq += 1
            if self._broken or proc.stdin is None:
                return False
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(proc.stdin.fileno(), view) :]
            except (OSError, ValueError):  # EPIPE: the runtime is gone or closed its stdin
                self._broken = True
                return False
            return True

    def close_stdin(self) -> None:
        proc = self._require()
        with self._stdin_lock:
            self._broken = True
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

    def read(self, seq: int, wait_s: float, max_bytes: int) -> OutputBatch:
        with self._cond:
            if seq in self._served:  # asked again (the answer was lost on its way): the same batch, nothing lost
                return self._served[seq]
            if seq < self._next_read:
                raise ValueError(f"stdout read {seq} is older than the batches kept (next is {self._next_read})")
            if not self._cond.wait_for(lambda: self._next_read == seq, timeout=_READ_TURN_S):
                raise ValueError(f"stdout read {seq} came without read {self._next_read} before it")
            self._cond.wait_for(lambda: bool(self._stdout) or self._eof or bool(self._errors), timeout=wait_s)
            data = bytes(self._stdout[:max_bytes])
            del self._stdout[:max_bytes]
            batch = OutputBatch(stdout=data, error_lines=tuple(self._errors), eof=self._eof and not self._stdout)
            self._errors.clear()
            self._served[seq] = batch
            self._served.pop(seq - _KEPT_BATCHES, None)
            self._next_read = seq + 1
            self._cond.notify_all()
            return batch

    def signal_group(self, sig: int) -> None:
        proc = self._require()
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def exited_within(self, timeout_s: float) -> bool:
        """True once the runtime exited, waiting up to `timeout_s` (a stop: stdin closed first, by the head)."""
        self._require()
        return self._exited.wait(timeout_s)

    def wait(self, grace_s: float) -> int | None:
        proc = self._require()
        if not self._exited.wait(grace_s):
            self.signal_group(signal.SIGKILL)
            self._exited.wait()
        self.signal_group(signal.SIGKILL)  # children left behind in the group die with the leader
        return self._returncode if self._returncode is not None else proc.returncode

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("runtime not started")
        return self._proc
