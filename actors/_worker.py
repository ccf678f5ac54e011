"""Worker actor: owns exactly one runtime process and speaks JSON-RPC with it. It never restarts itself.

Contract:
- The runtime starts in its own session/process group (`start_new_session=True`), so a kill reaches its children.
  stderr goes to `stderr_path` (append) or /dev/null.
- A reader thread decodes stdout (reads of up to 64 KiB) into a `StdoutInbox` and tells the actor `StdoutReady`
  only when no such signal is pending, so while the actor is busy the decoded lines pile up and are handled as one
  batch (the batch grows with load; an idle worker still sees each line at once). Unparsable lines become
  `ProtocolError`s that are logged (warning) and dropped; a line over 16 MiB is logged and dropped, the lines around
  it are kept.
- Handshake: `initialize` is sent at start; the worker reports `WorkerReady` to the pool only when it answers
  successfully, then sends the `initialized` notification. No answer within `startup_timeout_s` (injected clock)
  kills the process group; the exit is then reported with reason "initialize timed out after N s".
- `RuntimeCall`s are answered exactly once with a `CallResult` to `reply_to`: the runtime's result or error, a
  HOST_CALL_TIMEOUT error when `timeout_s` passes first, or HOST_WORKER_EXITED when the process exits or its pipe
  breaks. Wire ids are the worker's own increasing ints; a response to an unknown id is logged and ignored.
- Health: each call timeout is told to the pool as `WorkerHealth(degraded=True, consecutive_timeouts=n)`; the
  next answer from the runtime resets the count and tells `WorkerHealth(degraded=False)`. `KillRuntime` (from the
  pool) SIGKILLs the group; the exit is then reported with the pool's reason.
- Notifications and server requests are forwarded to `output_ref` as `RuntimeOutput` batches that keep stdout
  order relative to the `CallResult`s (pending output is flushed before each `CallResult`).
- At stdout EOF the worker reaps the process (SIGKILL to the group if it lingers 2 s), fails what is pending,
  tells the pool `WorkerExited` with a reason and stops. `StopRuntime` (asked by the pool) closes stdin, waits up
  to `timeout_s` (real time), then SIGKILLs the group; no `WorkerExited` is sent for a requested stop. An actor
  stopped any other way SIGKILLs its runtime's group on the way out: no runtime outlives its worker actor.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
from typing import IO, Any

import msgspec
import pykka

from agenthost.actors._clock import Clock, Timer
from agenthost.actors._log import get_logger
from agenthost.actors._refs import tell_quietly, unknown_message
from agenthost.protocol._jsonrpc import (
    ErrorResponse,
    LineBuffer,
    LineTooLongError,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcError,
    decode_line,
    encode_error,
    encode_notification,
    encode_request,
    encode_response,
)
from agenthost.protocol._messages import (
    HOST_CALL_TIMEOUT,
    HOST_WORKER_EXITED,
    AnswerServerRequest,
    CallDeadline,
    CallResult,
    KillRuntime,
    RuntimeCall,
    RuntimeOutput,
    StdoutClosed,
    StdoutReady,
    StopRuntime,
    WorkerExited,
    WorkerHealth,
    WorkerReady,
)

__all__ = ["WorkerActor", "WorkerSpec"]

_log = get_logger("agenthost.worker")
_READ_CHUNK = 65536
_REAP_GRACE_S = 2.0


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


class _Pending(msgspec.Struct):
    call: RuntimeCall | None  # None for the handshake
    timer: Timer


def _exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "runtime did not exit"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


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


def _read_stdout(stream: IO[bytes], inbox: StdoutInbox, actor_ref: pykka.ActorRef[Any]) -> None:
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


class WorkerActor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        pool_ref: pykka.ActorRef[Any],
        output_ref: pykka.ActorRef[Any],
        clock: Clock,
    ) -> None:
        super().__init__()
        self._spec = spec
        self._pool = pool_ref
        self._output = output_ref
        self._clock = clock
        self._proc: subprocess.Popen[bytes] | None = None
        self._wire_ids = itertools.count(0)
        self._pending: dict[int, _Pending] = {}
        self._inbox = StdoutInbox()
        self._ready = False
        self._stopping = False
        self._consecutive_timeouts = 0
        self._exit_reason: str | None = None
        self._name = f"worker-{spec.worker_id}"

    # --- lifecycle -------------------------------------------------------------------------------------------
    def on_start(self) -> None:
        spec = self._spec
        try:
            self._proc = self._spawn()
        except OSError as exc:
            self._report_exit(f"spawn failed: {exc}", None)
            self.stop()
            return
        reader = threading.Thread(
            target=_read_stdout,
            args=(self._proc.stdout, self._inbox, self.actor_ref),
            name=f"{self._name}-g{spec.generation}-stdout",
            daemon=True,
        )
        reader.start()
        _log.info("worker.spawned", worker=spec.worker_id, generation=spec.generation, pid=self._proc.pid)
        params: dict[str, Any] = {"clientInfo": {"name": spec.client_name, "version": spec.client_version}}
        if spec.opt_out_notifications:
            params["capabilities"] = {"optOutNotificationMethods": list(spec.opt_out_notifications)}
        self._send_request(None, "initialize", params, spec.startup_timeout_s)

    def _spawn(self) -> subprocess.Popen[bytes]:
        spec = self._spec
        stderr: Any = subprocess.DEVNULL
        if spec.stderr_path is not None:
            stderr = open(spec.stderr_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            env = None if spec.env is None else {**os.environ, **spec.env}
            return subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            if stderr is not subprocess.DEVNULL:
                stderr.close()

    def on_receive(self, message: Any) -> Any:
        match message:
            case StdoutReady():
                self._on_stdout(self._inbox.take())
            case RuntimeCall():
                self._on_call(message)
            case AnswerServerRequest():
                self._on_answer(message)
            case CallDeadline():
                self._on_deadline(message.wire_id)
            case StdoutClosed():
                self._on_stdout_closed(message.remainder)
            case StopRuntime():
                return self._stop_runtime(message.timeout_s)
            case KillRuntime():
                self._kill(message.reason)
            case _:
                unknown_message(self._name, message)
        return None

    # --- outgoing --------------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.closed:
            return False
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def _send_request(self, call: RuntimeCall | None, method: str, params: Any, timeout_s: float) -> None:
        wire_id = next(self._wire_ids)
        ref = self.actor_ref
        timer = self._clock.call_later(timeout_s, lambda: tell_quietly(ref, CallDeadline(wire_id=wire_id)))
        self._pending[wire_id] = _Pending(call=call, timer=timer)
        if not self._write(encode_request(wire_id, method, params)):
            self._pending.pop(wire_id)
            timer.cancel()
            if call is not None:
                self._reply(call, error=RpcError(code=HOST_WORKER_EXITED, message="runtime stdin is closed"))

    def _on_call(self, call: RuntimeCall) -> None:
        if not self._ready or self._stopping:
            state = "stopping" if self._stopping else "not ready"
            self._reply(call, error=RpcError(code=HOST_WORKER_EXITED, message=f"{self._name} is {state}"))
            return
        self._send_request(call, call.method, call.params, call.timeout_s)

    def _on_answer(self, answer: AnswerServerRequest) -> None:
        if answer.error is not None:
            line = encode_error(answer.request_id, answer.error.code, answer.error.message, answer.error.data)
        else:
            line = encode_response(answer.request_id, answer.result)
        if not self._write(line):
            _log.warning("worker.answer_lost", worker=self._spec.worker_id, request_id=answer.request_id)

    def _reply(self, call: RuntimeCall, *, result: Any = None, error: RpcError | None = None) -> None:
        reply = CallResult(call_id=call.call_id, worker_id=self._spec.worker_id, result=result, error=error)
        tell_quietly(call.reply_to, reply)

    # --- incoming --------------------------------------------------------------------------------------------
    def _on_stdout(self, messages: list[Any]) -> None:
        forward: list[Any] = []
        for message in messages:
            if isinstance(message, (Response, ErrorResponse)):
                self._flush(forward)
                forward = []
                self._on_response(message)
            elif isinstance(message, (Notification, Request)):
                forward.append(message)
            elif isinstance(message, ProtocolError):
                _log.warning(
                    "worker.protocol_error",
                    worker=self._spec.worker_id,
                    reason=message.reason,
                    line=message.line[:200],
                )
        self._flush(forward)

    def _flush(self, forward: list[Any]) -> None:
        if forward:
            out = RuntimeOutput(
                worker_id=self._spec.worker_id, generation=self._spec.generation, messages=tuple(forward)
            )
            tell_quietly(self._output, out)

    def _on_response(self, message: Response | ErrorResponse) -> None:
        wire_id = message.id
        pending = self._pending.pop(wire_id, None) if isinstance(wire_id, int) else None
        if pending is None:
            _log.warning("worker.unknown_response_id", worker=self._spec.worker_id, id=wire_id)
            return
        pending.timer.cancel()
        if self._consecutive_timeouts:
            self._consecutive_timeouts = 0
            self._report_health(degraded=False, reason="runtime answers again")
        error = message.error if isinstance(message, ErrorResponse) else None
        result = message.result if isinstance(message, Response) else None
        if pending.call is None:
            self._on_handshake(error)
        else:
            self._reply(pending.call, result=result, error=error)

    def _on_handshake(self, error: RpcError | None) -> None:
        spec = self._spec
        if error is not None:
            self._kill(f"initialize failed: {error.message}")
            return
        self._write(encode_notification("initialized"))
        self._ready = True
        assert self._proc is not None
        _log.info("worker.ready", worker=spec.worker_id, generation=spec.generation, pid=self._proc.pid)
        self._pool.tell(WorkerReady(worker_id=spec.worker_id, generation=spec.generation, pid=self._proc.pid))

    def _on_deadline(self, wire_id: int) -> None:
        pending = self._pending.pop(wire_id, None)
        if pending is None:
            return
        if pending.call is None:
            self._kill(f"initialize timed out after {self._spec.startup_timeout_s:g} s")
            return
        call = pending.call
        _log.warning("worker.call_timeout", worker=self._spec.worker_id, method=call.method, timeout_s=call.timeout_s)
        self._consecutive_timeouts += 1
        self._report_health(degraded=True, reason=f"{call.method} timed out after {call.timeout_s:g} s")
        self._reply(
            call,
            error=RpcError(code=HOST_CALL_TIMEOUT, message=f"{call.method} timed out after {call.timeout_s:g} s"),
        )

    def _report_health(self, *, degraded: bool, reason: str) -> None:
        spec = self._spec
        health = WorkerHealth(
            worker_id=spec.worker_id,
            generation=spec.generation,
            degraded=degraded,
            consecutive_timeouts=self._consecutive_timeouts,
            reason=reason,
        )
        tell_quietly(self._pool, health)

    def _kill(self, reason: str) -> None:
        """Kill the process group; the EOF that follows reports the exit with `reason`."""
        self._exit_reason = reason
        _log.warning("worker.killing", worker=self._spec.worker_id, reason=reason)
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    # --- exit ------------------------------------------------------------------------------------------------
    def _reap(self, timeout_s: float) -> int | None:
        assert self._proc is not None
        try:
            return self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            return self._proc.wait()

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            entry.timer.cancel()
            if entry.call is not None:
                self._reply(entry.call, error=RpcError(code=HOST_WORKER_EXITED, message=reason))

    def _on_stdout_closed(self, remainder: bytes) -> None:
        self._on_stdout(self._inbox.take())  # lines decoded before EOF come first
        if remainder:
            _log.warning("worker.eof_mid_line", worker=self._spec.worker_id, line=remainder[:200])
        if self._stopping:
            return
        returncode = self._reap(_REAP_GRACE_S)
        self._signal_group(signal.SIGKILL)  # children left behind in the group die with the leader
        reason = self._exit_reason or _exit_reason(returncode)
        self._close_pipes()
        self._fail_pending(f"{self._name} {reason}")
        self._report_exit(reason, returncode)
        self.stop()

    def _report_exit(self, reason: str, returncode: int | None) -> None:
        spec = self._spec
        _log.warning("worker.exited", worker=spec.worker_id, generation=spec.generation, reason=reason)
        self._pool.tell(
            WorkerExited(worker_id=spec.worker_id, generation=spec.generation, reason=reason, returncode=returncode)
        )

    def _stop_runtime(self, timeout_s: float) -> int | None:
        self._stopping = True
        self._ready = False
        if self._proc is None:
            return None
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            returncode: int | None = self._proc.wait(timeout=timeout_s)
            how = "stdin closed"
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            returncode = self._proc.wait()
            how = f"killed after {timeout_s:g} s"
        self._signal_group(signal.SIGKILL)
        self._close_pipes()
        self._fail_pending(f"{self._name} stopped")
        _log.info("worker.stopped", worker=self._spec.worker_id, how=how, returncode=returncode)
        self.stop()
        return returncode

    def _close_pipes(self) -> None:
        """Close stdin; stdout belongs to the reader thread, which closes it at EOF."""
        assert self._proc is not None
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def on_stop(self) -> None:
        """No runtime outlives its worker actor, however the actor was stopped."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self._proc.wait()
            self._close_pipes()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """A bug in this actor: kill the runtime and report it as an exit so the pool can decide."""
        self._signal_group(signal.SIGKILL)
        self._fail_pending(f"{self._name} crashed: {exception_value!r}")
        self._report_exit(f"worker actor crashed: {exception_value!r}", None)
