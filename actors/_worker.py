"""Worker actor: owns exactly one runtime process and speaks JSON-RPC with it. It never restarts itself.

Contract:
- The runtime starts in its own session/process group (`start_new_session=True`), so a kill reaches its children.
  stderr goes to `stderr_path` (append) or /dev/null; its error lines also go to `output_ref` as `RuntimeStderr`:
  the first, then at most one every STDERR_FORWARD_INTERVAL_S (1 s, injected clock). Right after the spawn the pool
  hears `WorkerSpawned(pid)`; a spawn that fails is reported as an exit ("spawn failed: ...") and the actor stops.
  Where it runs is the `ProcessHost`'s business (actors._placement: a local child, or a Ray actor on a cluster
  node); everything below holds for both, and an exit is reported with the handle's `exit_cause`.
- The actor never blocks on the runtime: a reader thread decodes stdout and a writer thread feeds stdin from a
  bounded outbox (actors._process holds them, actors._pipes has the pipes). What the handling of one message
  writes is held while more messages wait in the mailbox, and released as one write once none does (calls that
  arrive together wake the runtime once). Unparsable stdout lines become `ProtocolError`s that are logged and
  dropped.
- Handshake: `initialize` is sent at start; the worker reports `WorkerReady` to the pool only when it answers
  successfully, then sends the `initialized` notification. No answer within `startup_timeout_s` (injected clock)
  kills the process group; the exit is then reported with reason "initialize timed out after N s".
- `RuntimeCall`s are answered exactly once with a `CallResult` to `reply_to`: the runtime's result or error, a
  HOST_CALL_TIMEOUT error when `timeout_s` passes first, or HOST_WORKER_EXITED when the process exits, its pipe
  breaks or it stopped reading its stdin. Wire ids are the worker's own increasing ints; a response to an unknown
  id is logged and ignored.
- Health, told to the pool as `WorkerHealth`: a call that times out after the runtime read its request ->
  `degraded` with the count of timeouts in a row (the next answer resets it: `degraded=False`); a call whose
  request the runtime had not even read by the deadline, or an outbox over its limit -> `stalled` (the pool kills).
  `KillRuntime` (from the pool) SIGKILLs the group; the exit is then reported with the pool's reason.
- `Probe` (from the pool) is answered at once with `ProbeReply`: a worker actor that stops answering is wedged.
- Notifications and server requests are forwarded to `output_ref` as `RuntimeOutput` batches that keep stdout
  order relative to the `CallResult`s (pending output is flushed before each `CallResult`).
- At stdout EOF the worker reaps the process (SIGKILL to the group if it lingers 2 s), fails what is pending,
  tells the pool `WorkerExited` with a reason and stops. `StopRuntime` (asked by the pool) closes stdin, waits up
  to `timeout_s` (real time), then SIGKILLs the group; no `WorkerExited` is sent for a requested stop. A crash of
  the actor (any unexpected exception) SIGKILLs the group and reports `WorkerExited`: no runtime outlives its
  worker actor, and the pool decides.
"""

from __future__ import annotations

import itertools
import signal
from typing import Any

import msgspec
import pykka

from agenthost.actors._clock import Clock, Timer
from agenthost.actors._events import WorkerEofMidLine, WorkerExitedEvent, WorkerProtocolError, WorkerSpawnedEvent
from agenthost.actors._log import get_logger
from agenthost.actors._pipes import OutboxFull, StdoutInbox, WorkerSpec
from agenthost.actors._placement import LOCAL, ProcessHost, RuntimeHandle
from agenthost.actors._recovery import WORKER_WATCH, WorkerWatch
from agenthost.actors._refs import FaultHook, SupervisedActor, tell_quietly
from agenthost.protocol._jsonrpc import (
    ErrorResponse,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcError,
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
    Probe,
    ProbeReply,
    RuntimeCall,
    RuntimeOutput,
    RuntimeStderr,
    StdoutClosed,
    StdoutReady,
    StopRuntime,
    WorkerExited,
    WorkerHealth,
    WorkerReady,
    WorkerSpawned,
)

__all__ = ["STDERR_FORWARD_INTERVAL_S", "WorkerActor", "WorkerSpec"]

_log = get_logger("agenthost.worker")
_REAP_GRACE_S = 2.0
_WRITE_GRACE_S = 0.1  # real time a call's deadline waits for its request to reach a healthy runtime's pipe
STDERR_FORWARD_INTERVAL_S = 1.0  # error lines of stderr forwarded to the coordinator at most once per this


class _Pending(msgspec.Struct):
    call: RuntimeCall | None  # None for the handshake
    timer: Timer
    sent_up_to: int  # the outbox offset after the request: read by the runtime once `written` reaches it


class WorkerActor(SupervisedActor):
    def __init__(
        self,
        spec: WorkerSpec,
        *,
        pool_ref: pykka.ActorRef[Any],
        output_ref: pykka.ActorRef[Any],
        clock: Clock,
        watch: WorkerWatch = WORKER_WATCH,
        fault_hook: FaultHook | None = None,
        process_host: ProcessHost = LOCAL,
    ) -> None:
        super().__init__(supervisor_ref=pool_ref, fault_hook=fault_hook)
        self.child_name = f"worker-{spec.worker_id}"
        self._spec = spec
        self._pool = pool_ref
        self._output = output_ref
        self._clock = clock
        self._watch = watch
        self._process_host = process_host
        self._runtime: RuntimeHandle | None = None
        self._wire_ids = itertools.count(0)
        self._pending: dict[int, _Pending] = {}
        self._inbox = StdoutInbox()
        self._ready = False
        self._holding = False  # handling a message: what it writes waits for the release (see `handle`)
        self._stopping = False
        self._consecutive_timeouts = 0
        self._exit_reason: str | None = None
        self._last_stderr: float | None = None  # when an error line was last forwarded

    # --- lifecycle -------------------------------------------------------------------------------------------
    def on_child_start(self) -> None:
        spec = self._spec
        try:
            runtime = self._runtime = self._process_host.start(
                spec,
                outbox_limit_bytes=self._watch.outbox_limit_bytes,
                inbox=self._inbox,
                actor_ref=self.actor_ref,
                on_error_line=self._stderr_error,
            )
        except OSError as exc:
            self._report_exit(f"spawn failed: {exc}", None)
            self.stop()
            return
        _log.record(WorkerSpawnedEvent(worker=spec.worker_id, generation=spec.generation, pid=runtime.pid))
        self._pool.tell(WorkerSpawned(worker_id=spec.worker_id, generation=spec.generation, pid=runtime.pid))
        params: dict[str, Any] = {"clientInfo": {"name": spec.client_name, "version": spec.client_version}}
        if spec.opt_out_notifications:
            params["capabilities"] = {"optOutNotificationMethods": list(spec.opt_out_notifications)}
        self._send_request(None, "initialize", params, spec.startup_timeout_s)

    def _stderr_error(self, line: str) -> None:
        """(stderr thread) Forward an error line to the coordinator: the first, then at most one every
        STDERR_FORWARD_INTERVAL_S (injected clock); the rest are only in the stderr log."""
        now = self._clock.now()
        if self._last_stderr is not None and now - self._last_stderr < STDERR_FORWARD_INTERVAL_S:
            return
        self._last_stderr = now
        spec = self._spec
        tell_quietly(self._output, RuntimeStderr(worker_id=spec.worker_id, generation=spec.generation, line=line))

    def report_started(self) -> None:
        """The pool hears `WorkerSpawned` and, once `initialize` answered, `WorkerReady` instead."""

    def handle(self, message: Any) -> Any:
        """One message; what it wrote to the runtime is held while more messages wait, then released as one write
        (each write wakes the runtime)."""
        self._holding = True
        try:
            answer = self._handle_message(message)
        finally:
            self._holding = False
        if self._runtime is not None and self.actor_inbox.empty():
            self._runtime.outbox.release()
        return answer

    def _handle_message(self, message: Any) -> Any:
        match message:
            case StdoutReady():
                self._on_stdout(self._inbox.take())
            case RuntimeCall():
                self._on_call(message)
            case AnswerServerRequest():
                self._on_answer(message)
            case CallDeadline():
                self._on_deadline(message.wire_id)
            case Probe():
                spec = self._spec
                tell_quietly(
                    self._pool, ProbeReply(worker_id=spec.worker_id, generation=spec.generation, seq=message.seq)
                )
            case StdoutClosed():
                self._on_stdout_closed(message.remainder)
            case StopRuntime():
                return self._stop_runtime(message.timeout_s)
            case KillRuntime():
                self._kill(message.reason)
            case _:
                return super().handle(message)
        return None

    # --- outgoing --------------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> bool:
        """Append to the runtime's stdin; False when the pipe is gone. A runtime that let the outbox fill up has
        stopped reading: the pool is told it is stalled (and kills it)."""
        if self._runtime is None:
            return False
        try:
            return self._runtime.outbox.put(data, hold=self._holding)
        except OutboxFull as exc:
            self._report_health(degraded=True, reason=f"runtime stopped reading its stdin: {exc}", stalled=True)
            return False

    def _send_request(self, call: RuntimeCall | None, method: str, params: Any, timeout_s: float) -> None:
        wire_id = next(self._wire_ids)
        ref = self.actor_ref
        deadline = CallDeadline(wire_id=wire_id)
        timer = self._clock.call_later(timeout_s, lambda: tell_quietly(ref, deadline), name="call-deadline")
        if not self._write(encode_request(wire_id, method, params)):
            timer.cancel()
            if call is not None:
                self._reply(call, error=RpcError(code=HOST_WORKER_EXITED, message="runtime stdin is not accepting"))
            return
        assert self._runtime is not None
        self._pending[wire_id] = _Pending(call=call, timer=timer, sent_up_to=self._runtime.outbox.queued)

    def _on_call(self, call: RuntimeCall) -> None:
        if not self._ready or self._stopping:
            state = "stopping" if self._stopping else "not ready"
            self._reply(call, error=RpcError(code=HOST_WORKER_EXITED, message=f"{self.child_name} is {state}"))
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
                line = message.line[:200].decode("utf-8", "replace")
                error = WorkerProtocolError(worker=self._spec.worker_id, reason=message.reason, line=line)
                _log.record(error, "warning")
        self._flush(forward)

    def _flush(self, forward: list[Any]) -> None:
        if forward:
            spec = self._spec
            out = RuntimeOutput(worker_id=spec.worker_id, generation=spec.generation, messages=tuple(forward))
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
        assert self._runtime is not None
        _log.info("worker.ready", worker=spec.worker_id, generation=spec.generation, pid=self._runtime.pid)
        self._pool.tell(WorkerReady(worker_id=spec.worker_id, generation=spec.generation, pid=self._runtime.pid))

    def _on_deadline(self, wire_id: int) -> None:
        pending = self._pending.pop(wire_id, None)
        if pending is None:
            return
        if pending.call is None:
            self._kill(f"initialize timed out after {self._spec.startup_timeout_s:g} s")
            return
        call, runtime = pending.call, self._runtime
        assert runtime is not None  # a call is pending only once its request was put in the runtime's outbox
        runtime.outbox.release()  # a request is judged by the pipe, never by the worker's holding
        read = runtime.outbox.read_up_to(pending.sent_up_to, _WRITE_GRACE_S)
        _log.warning(
            "worker.call_timeout",
            worker=self._spec.worker_id,
            method=call.method,
            timeout_s=call.timeout_s,
            request_read=read,
        )
        if read:
            self._consecutive_timeouts += 1
            self._report_health(degraded=True, reason=f"{call.method} timed out after {call.timeout_s:g} s")
            why = f"{call.method} timed out after {call.timeout_s:g} s"
            self._reply(call, error=RpcError(code=HOST_CALL_TIMEOUT, message=why))
            return
        why = (
            f"runtime stopped reading its stdin: {call.method} still unread after {call.timeout_s:g} s "
            f"({runtime.outbox.pending} bytes waiting)"
        )
        self._report_health(degraded=True, reason=why, stalled=True)
        self._reply(call, error=RpcError(code=HOST_CALL_TIMEOUT, message=why))

    def _report_health(self, *, degraded: bool, reason: str, stalled: bool = False) -> None:
        spec = self._spec
        health = WorkerHealth(
            worker_id=spec.worker_id,
            generation=spec.generation,
            degraded=degraded,
            consecutive_timeouts=self._consecutive_timeouts,
            reason=reason,
            stalled=stalled,
        )
        tell_quietly(self._pool, health)

    def _kill(self, reason: str) -> None:
        """Kill the process group; the EOF that follows reports the exit with `reason`."""
        self._exit_reason = reason
        _log.warning("worker.killing", worker=self._spec.worker_id, reason=reason)
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        if self._runtime is not None:
            self._runtime.signal_group(sig)

    # --- exit ------------------------------------------------------------------------------------------------
    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            entry.timer.cancel()
            if entry.call is not None:
                self._reply(entry.call, error=RpcError(code=HOST_WORKER_EXITED, message=reason))

    def _on_stdout_closed(self, remainder: bytes) -> None:
        self._on_stdout(self._inbox.take())  # lines decoded before EOF come first
        if remainder:
            line = remainder[:200].decode("utf-8", "replace")
            _log.record(WorkerEofMidLine(worker=self._spec.worker_id, line=line), "warning")
        if self._stopping:
            return
        assert self._runtime is not None
        returncode = self._runtime.reap(_REAP_GRACE_S)
        self._signal_group(signal.SIGKILL)  # children left behind in the group die with the leader
        reason = self._exit_reason or self._runtime.exit_cause(returncode)
        self._runtime.close_stdin()
        self._fail_pending(f"{self.child_name} {reason}")
        self._report_exit(reason, returncode)
        self.stop()

    def _report_exit(self, reason: str, returncode: int | None) -> None:
        spec = self._spec
        _log.record(WorkerExitedEvent(worker=spec.worker_id, generation=spec.generation, reason=reason), "warning")
        exited = WorkerExited(
            worker_id=spec.worker_id, generation=spec.generation, reason=reason, returncode=returncode
        )
        tell_quietly(self._pool, exited)

    def _stop_runtime(self, timeout_s: float) -> int | None:
        self._stopping = True  # calls from now on are refused (see `_on_call`)
        if self._runtime is None:
            return None
        returncode, how = self._runtime.stop(timeout_s)
        self._fail_pending(f"{self.child_name} stopped")
        _log.info("worker.stopped", worker=self._spec.worker_id, how=how, returncode=returncode)
        self.stop()
        return returncode

    def on_stop(self) -> None:
        """No runtime outlives its worker actor, however the actor was stopped."""
        if self._runtime is not None and self._runtime.running():
            self._runtime.kill_and_wait()

    def on_crash(self, error: BaseException) -> None:
        """A bug in this actor: kill the runtime and fail what it was asked."""
        self._signal_group(signal.SIGKILL)
        self._fail_pending(f"{self.child_name} crashed: {error!r}")

    def report_crash(self, error: BaseException) -> None:
        """The pool decides about a crashed worker exactly as about an exited runtime."""
        self._report_exit(f"worker actor crashed: {error!r}", None)
