"""The reference runtime's protocol engine: the codex app-server subset agenthost needs, with no model behind it.

Contract (see protocol/reference_runtime.py for the command line and the full message sequences):
- One reader loop (`serve`, main thread) decodes stdin lines and handles each request while holding the state lock,
  so requests are answered strictly in arrival order. Each active turn streams from its own daemon thread, which
  takes the state lock for every check-then-write; a turn that is finished (completed, interrupted, failed) is never
  written to again, so after the `turn/interrupt` answer no further delta of that turn appears.
- Every request-level error uses code -32600 with codex's message text; an unexpected exception inside a handler
  answers -32603 "Internal error: ..." and the runtime keeps serving. Unparsable lines and replies to unknown
  request ids are logged to stderr and otherwise ignored.
- Server->client request ids are ints from 0, process-wide; a reply matches only with the same JSON type.
- Faults: `LiveFaults` holds the `--faults` value, overridden by the JSON of `faults_file` while that file exists;
  the file is stat()ed before each request, each turn start and each delta and re-read when its mtime or size
  changed (an unreadable or invalid file is logged and ignored: the previous value stays). `eof_mid_line` and
  `stop_self` fire once per loaded value, at the next turn start or delta: half of that JSON line is written and
  flushed and the process exits 0 / the process SIGSTOPs itself. A `crash_after_deltas` from the file counts the
  deltas written after the file was loaded (the `--faults` one counts from process start).
- Persisted state: thread files via ThreadStore; a turn is saved "inProgress" when it starts and with its final
  status before its `turn/completed` is written (a failed final save is logged, the turn still completes).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from agenthost.protocol._chunks import split_text
from agenthost.protocol._faults import RuntimeFaults, decode_faults
from agenthost.protocol._jsonrpc import (
    ErrorResponse,
    LineBuffer,
    LineTooLongError,
    Notification,
    Request,
    Response,
    decode_line,
)
from agenthost.protocol._runtime_io import StdoutWriter, log, now_ms
from agenthost.protocol._runtime_store import ThreadRecord, ThreadStore, looks_like_uuid

__all__ = ["LiveFaults", "ReferenceRuntime"]

USER_AGENT = "agenthost-reference/0.1"
INTERNAL_ERROR = -32603
READ_CHUNK_BYTES = 65536
APPROVAL_REASON = "reference runtime wants to run a command"
AVAILABLE_DECISIONS = ["accept", "decline", "cancel"]
RUN_MARKER = "RUN:"
_SANDBOX_POLICIES: dict[str, dict[str, Any]] = {
    "read-only": {"type": "readOnly", "networkAccess": False},
    "workspace-write": {
        "type": "workspaceWrite",
        "writableRoots": [],
        "networkAccess": False,
        "excludeTmpdirEnvVar": False,
        "excludeSlashTmp": False,
    },
    "danger-full-access": {"type": "dangerFullAccess"},
}
_APPROVAL_POLICIES = ("untrusted", "on-request", "never")
_DECISIONS = {"accept": "completed", "acceptForSession": "completed", "decline": "declined", "cancel": "cancel"}


class _RequestError(Exception):
    """Answered as -32600 with this message."""


class _ActiveTurn:
    """A turn that is running in this process; mutated only under the runtime's state lock."""

    __slots__ = ("approval_id", "approval_reply", "done", "record", "text", "thread", "user_item")

    def __init__(self, thread: ThreadRecord, record: dict[str, Any], text: str, user_item: dict[str, Any]) -> None:
        self.thread = thread
        self.record = record  # the dict persisted in thread.turns
        self.text = text
        self.user_item = user_item
        self.done = False
        self.approval_id: int | None = None  # the pending server request, if any
        self.approval_reply: Response | ErrorResponse | None = None

    @property
    def id(self) -> str:
        return str(self.record["id"])


STAT_INTERVAL_S = 0.01  # live faults file: stat at most this often on the delta path


class LiveFaults:
    """The faults in force: `base`, overridden by `path`'s JSON while that file exists (re-read on change)."""

    def __init__(self, base: RuntimeFaults, path: str | None = None) -> None:
        self._base = base
        self._path = path
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file last loaded; None: no file
        self._faults = base
        self.version = 0  # bumped whenever the faults in force change
        self._fired: set[str] = set()  # one-shot knobs already fired for this version
        self._next_stat = 0.0  # monotonic time before which refresh() does not stat again
        self.refresh(force=True)

    @property
    def faults(self) -> RuntimeFaults:
        return self._faults

    def refresh(self, *, force: bool = False) -> RuntimeFaults:
        """Stat the file (at most every STAT_INTERVAL_S unless `force`); re-read it if it changed; return the faults
        in force. The rate limit keeps the stat off the per-delta hot path."""
        if self._path is None:
            return self._faults
        now = time.monotonic()
        if not force and now < self._next_stat:
            return self._faults
        self._next_stat = now + STAT_INTERVAL_S
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            if self._stamp is not None:
                self._stamp = None
                self._set(self._base)
            return self._faults
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                with open(self._path, encoding="utf-8") as handle:
                    self._set(decode_faults(handle.read().strip() or "{}"))
            except (OSError, ValueError) as exc:
                log(f"faults file {self._path!r} ignored: {exc}")
        return self._faults

    def fire_once(self, knob: str) -> bool:
        """True the first time a one-shot knob (eof_mid_line, stop_self) is seen set in this version."""
        if getattr(self._faults, knob) and knob not in self._fired:
            self._fired.add(knob)
            return True
        return False

    def _set(self, faults: RuntimeFaults) -> None:
        self._faults = faults
        self.version += 1
        self._fired = set()


class ReferenceRuntime:
    def __init__(
        self,
        *,
        state_dir: str,
        out: StdoutWriter,
        faults: RuntimeFaults,
        deltas_per_reply: int = 4,
        faults_file: str | None = None,
    ) -> None:
        if deltas_per_reply < 2:
            raise ValueError(f"deltas_per_reply {deltas_per_reply!r} is invalid: a reply needs >= 2 deltas")
        self._state_dir = state_dir
        self._out = out
        self._live = LiveFaults(faults, faults_file)
        self._file_crash_version = self._live.version  # the value at start is armed in `out` by the caller
        self._deltas_left: int | None = None  # deltas until a file-armed crash_after_deltas fires
        self._deltas_per_reply = deltas_per_reply
        self._store = ThreadStore(state_dir)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on interrupt and on approval replies
        self._initialized = False
        self._threads: dict[str, ThreadRecord] = {}  # loaded in this process
        self._active: dict[str, _ActiveTurn] = {}  # by thread id
        self._pending: dict[int, _ActiveTurn] = {}  # server request id -> turn waiting for the reply
        self._request_ids = itertools.count()
        self._item_numbers = itertools.count(1)
        self._handlers: dict[str, Callable[[Request], None]] = {
            "initialize": self._initialize,
            "thread/start": self._thread_start,
            "thread/resume": self._thread_resume,
            "turn/start": self._turn_start,
            "turn/interrupt": self._turn_interrupt,
        }

    # --- reader loop -----------------------------------------------------------------------------------------------
    def serve(self, stdin_fd: int) -> int:
        """Handle stdin until EOF; return the exit code (0)."""
        buffer = LineBuffer()
        while chunk := os.read(stdin_fd, READ_CHUNK_BYTES):
            for line in _complete_lines(buffer, chunk):
                self.handle_line(line)
        remainder = buffer.flush()
        if remainder.strip():
            self.handle_line(remainder)
        log("stdin closed; exiting")
        return 0

    def handle_line(self, line: bytes) -> None:
        message = decode_line(line)
        if isinstance(message, Request):
            self._handle_request(message)
        elif isinstance(message, (Response, ErrorResponse)):
            self._handle_reply(message)
        elif isinstance(message, Notification):
            if message.method != "initialized":
                log(f"ignoring notification {message.method!r}")
        else:
            log(f"Failed to deserialize JSONRPCMessage: {message.reason}")

    @property
    def _faults(self) -> RuntimeFaults:
        return self._live.refresh()

    def _live_faults_point(self, next_line: bytes | None = None, *, turn_start: bool = False) -> None:
        """Before a turn start or a delta (state lock held): fire eof_mid_line / stop_self once per loaded value.
        A turn start always re-reads the file; deltas at most every STAT_INTERVAL_S."""
        faults = self._live.refresh(force=turn_start)
        if self._live.version != self._file_crash_version:
            self._file_crash_version = self._live.version
            self._deltas_left = faults.crash_after_deltas
        if self._live.fire_once("stop_self"):
            log("fault stop_self: SIGSTOP")
            os.kill(os.getpid(), signal.SIGSTOP)
        if self._live.fire_once("eof_mid_line"):
            line = next_line or b'{"method":"turn/started","params":{"threadId":"cut-off-here"}}\n'
            log("fault eof_mid_line: writing half a line, then exit 0")
            sys.stdout.buffer.flush()
            os.write(sys.stdout.fileno(), line[: max(1, len(line) // 2)])
            os._exit(0)

    def _count_file_delta(self) -> None:
        """After a delta was written: SIGKILL when the file's crash_after_deltas count is reached."""
        if self._deltas_left is None:
            return
        self._deltas_left -= 1
        if self._deltas_left <= 0:
            log("fault crash_after_deltas (faults file): SIGKILL")
            os.kill(os.getpid(), signal.SIGKILL)

    def _handle_request(self, request: Request) -> None:
        if request.method == self._faults.hang_on:
            log(f"fault hang_on={request.method!r}: never answering request {request.id!r}")
            return
        with self._lock:
            try:
                self._dispatch(request)
            except _RequestError as exc:
                self._out.error(request.id, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug or a disk error: answer, log, keep serving
                log(f"request {request.method!r} failed:\n{traceback.format_exc()}")
                self._out.error(request.id, f"Internal error: {exc}", code=INTERNAL_ERROR)

    def _dispatch(self, request: Request) -> None:
        handler = self._handlers.get(request.method)
        if handler is None:
            expected = ", ".join(f"`{name}`" for name in self._handlers)
            raise _RequestError(f"Invalid request: unknown variant `{request.method}`, expected one of {expected}")
        if not self._initialized and request.method != "initialize":
            raise _RequestError("Not initialized")
        handler(request)

    def _handle_reply(self, reply: Response | ErrorResponse) -> None:
        with self._lock:
            turn = self._pending.pop(reply.id, None) if isinstance(reply.id, int) else None
            if turn is None:
                log(f"ignoring a reply to unknown request id {reply.id!r}")
                return
            turn.approval_reply = reply
            self._changed.notify_all()

    # --- handlers (state lock held) --------------------------------------------------------------------------------
    def _initialize(self, request: Request) -> None:
        params = _object_params(request.params)
        client_info = _required(params, "clientInfo", dict, "a map")
        _required(client_info, "name", str, "a string")
        _required(client_info, "version", str, "a string")
        if self._initialized:
            raise _RequestError("Already initialized")
        self._initialized = True
        self._out.response(
            request.id,
            {
                "userAgent": USER_AGENT,
                "codexHome": self._state_dir,
                "platformFamily": "unix",
                "platformOs": "linux",
            },
        )

    def _thread_start(self, request: Request) -> None:
        params = _object_params(request.params, required=False)
        record = ThreadRecord(
            id=str(uuid.uuid4()),
            cwd=_optional(params, "cwd", str, "a string") or os.getcwd(),
            approval_policy=_approval_policy(params.get("approvalPolicy")),
            sandbox=_sandbox_policy(params.get("sandbox")),
        )
        self._store.save(record)
        self._threads[record.id] = record
        self._out.response(request.id, self._thread_result(record))
        self._out.notify("thread/started", {"thread": self._thread_json(record)})

    def _thread_resume(self, request: Request) -> None:
        thread_id = _required(_object_params(request.params), "threadId", str, "a string")
        if not looks_like_uuid(thread_id):
            raise _RequestError(f"invalid session id: {thread_id}")
        record = self._threads.get(thread_id)
        if record is None:
            record = self._store.load(thread_id)
        if record is None:
            raise _RequestError(f"no rollout found for thread id {thread_id}")
        self._threads[thread_id] = record
        self._out.response(request.id, self._thread_result(record))

    def _turn_start(self, request: Request) -> None:
        params = _object_params(request.params)
        thread_id = _required(params, "threadId", str, "a string")
        text_parts = _text_inputs(_required(params, "input", list, "a sequence"))
        record = self._loaded_thread(thread_id)
        if record.id in self._active:
            raise _RequestError(f"thread {record.id} already has an active turn")
        text = "\n".join(text_parts)
        user_item = {"type": "userMessage", "id": str(uuid.uuid4()), "content": [_text_content(t) for t in text_parts]}
        turn_record: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "status": "inProgress",
            "items": [user_item],
            "error": None,
        }
        record.turns.append(turn_record)
        try:
            self._store.save(record)
        except BaseException:
            record.turns.pop()
            raise
        turn = _ActiveTurn(record, turn_record, text, user_item)
        self._active[record.id] = turn
        started_turn: dict[str, Any] = {"id": turn.id, "status": "inProgress", "items": [], "error": None}
        self._out.response(request.id, {"turn": started_turn})
        self._live_faults_point(turn_start=True)
        if self._faults.garbage_before_turn:
            self._out.garbage()
        self._out.notify("turn/started", {"threadId": record.id, "turn": started_turn})
        threading.Thread(target=self._run_turn, args=(turn,), name=f"turn-{turn.id}", daemon=True).start()

    def _turn_interrupt(self, request: Request) -> None:
        params = _object_params(request.params)
        thread_id = _required(params, "threadId", str, "a string")
        turn_id = _required(params, "turnId", str, "a string")
        record = self._loaded_thread(thread_id)
        turn = self._active.get(record.id)
        if turn is None:
            raise _RequestError("no active turn to interrupt")
        if turn.id != turn_id:
            raise _RequestError(f"expected active turn id {turn_id} but found {turn.id}")
        pending_request_id = turn.approval_id
        self._out.response(request.id, {})
        self._finish_locked(turn, "interrupted")
        if pending_request_id is not None:
            self._out.notify("serverRequest/resolved", {"threadId": record.id, "requestId": pending_request_id})

    def _loaded_thread(self, thread_id: str) -> ThreadRecord:
        if not looks_like_uuid(thread_id):
            raise _RequestError(f"invalid thread id: {thread_id}")
        record = self._threads.get(thread_id)
        if record is None:
            raise _RequestError(f"thread not found: {thread_id}")
        return record

    def _thread_result(self, record: ThreadRecord) -> dict[str, Any]:
        return {
            "thread": self._thread_json(record),
            "model": "reference",
            "modelProvider": "builtin",
            "cwd": record.cwd,
            "approvalPolicy": record.approval_policy,
            "sandbox": record.sandbox,
        }

    def _thread_json(self, record: ThreadRecord) -> dict[str, Any]:
        turn = self._active.get(record.id)
        if turn is None:
            status: dict[str, Any] = {"type": "idle"}
        else:
            flags = ["waitingOnApproval"] if turn.approval_id is not None else []
            status = {"type": "active", "activeFlags": flags}
        return {"id": record.id, "turns": record.turns, "status": status, "cwd": record.cwd}

    # --- turn thread -----------------------------------------------------------------------------------------------
    def _run_turn(self, turn: _ActiveTurn) -> None:
        try:
            self._stream_turn(turn)
        except Exception as exc:  # noqa: BLE001 - keep the host informed: the turn fails instead of hanging
            log(f"turn {turn.id} crashed:\n{traceback.format_exc()}")
            with self._lock:
                if not turn.done:
                    self._finish_locked(turn, "failed", error={"message": f"reference runtime error: {exc!r}"})

    def _stream_turn(self, turn: _ActiveTurn) -> None:
        if not self._emit(turn, "item/started", self._item_params(turn, turn.user_item, "startedAtMs")):
            return
        if not self._emit(turn, "item/completed", self._item_params(turn, turn.user_item, "completedAtMs")):
            return
        reply_text: str | None = f"Reference reply to: {turn.text}"
        command = _requested_command(turn.text)
        if command is not None:
            reply_text = self._ask_approval(turn, command)
        if reply_text is not None:
            self._stream_reply(turn, reply_text)

    def _ask_approval(self, turn: _ActiveTurn, command: str) -> str | None:
        """Run the approval round trip; return the reply text, or None when the turn ended meanwhile."""
        with self._lock:
            if turn.done:
                return None
            item: dict[str, Any] = {
                "type": "commandExecution",
                "id": f"call_{next(self._item_numbers)}",
                "command": command,
                "cwd": turn.thread.cwd,
                "status": "inProgress",
                "exitCode": None,
                "aggregatedOutput": None,
            }
            request_id = next(self._request_ids)
            turn.approval_id = request_id
            self._pending[request_id] = turn
            self._out.notify("item/started", self._item_params(turn, item, "startedAtMs"))
            self._notify_status(turn, ["waitingOnApproval"])
            self._out.request(
                request_id,
                "item/commandExecution/requestApproval",
                {
                    "threadId": turn.thread.id,
                    "turnId": turn.id,
                    "itemId": item["id"],
                    "startedAtMs": now_ms(),
                    "kind": "command",
                    "command": command,
                    "cwd": turn.thread.cwd,
                    "reason": APPROVAL_REASON,
                    "availableDecisions": AVAILABLE_DECISIONS,
                },
            )
            self._changed.wait_for(lambda: turn.done or turn.approval_reply is not None)
            if turn.done:
                return None
            outcome = _approval_outcome(turn.approval_reply)
            turn.approval_id = None
            self._out.notify("serverRequest/resolved", {"threadId": turn.thread.id, "requestId": request_id})
            self._notify_status(turn, [])
            return self._complete_command(turn, item, command, outcome)

    def _complete_command(self, turn: _ActiveTurn, item: dict[str, Any], command: str, outcome: str) -> str | None:
        if outcome == "completed":
            item.update(status="completed", exitCode=0, aggregatedOutput=f"(reference runtime) ran: {command}\n")
            reply_text: str | None = f"Command finished: {command}"
        elif outcome == "failed":
            item["status"] = "failed"
            reply_text = f"Command failed: {command}"
        else:  # "declined" or "cancel"
            item["status"] = "declined"
            reply_text = f"Command declined: {command}"
        self._out.notify("item/completed", self._item_params(turn, item, "completedAtMs"))
        if outcome == "cancel":
            self._finish_locked(turn, "interrupted")
            reply_text = None
        return reply_text

    def _stream_reply(self, turn: _ActiveTurn, reply_text: str) -> None:
        agent_item = {"type": "agentMessage", "id": f"msg_{next(self._item_numbers)}", "text": ""}
        if not self._emit(turn, "item/started", self._item_params(turn, agent_item, "startedAtMs")):
            return
        for index, chunk in enumerate(split_text(reply_text, self._deltas_per_reply)):
            with self._lock:
                if index and self._faults.delta_delay_s:
                    self._changed.wait_for(lambda: turn.done, timeout=self._faults.delta_delay_s)
                if turn.done:
                    return
                self._live_faults_point()
                self._out.delta(
                    {"threadId": turn.thread.id, "turnId": turn.id, "itemId": agent_item["id"], "delta": chunk}
                )
                self._count_file_delta()
        with self._lock:
            if turn.done:
                return
            final_item = {**agent_item, "text": reply_text}
            self._out.notify("item/completed", self._item_params(turn, final_item, "completedAtMs"))
            self._finish_locked(turn, "completed", final_item)

    def _finish_locked(
        self,
        turn: _ActiveTurn,
        status: str,
        agent_item: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """End the turn: persist its final status, then write turn/completed. State lock held."""
        turn.done = True
        if turn.approval_id is not None:
            self._pending.pop(turn.approval_id, None)
            turn.approval_id = None
        del self._active[turn.thread.id]
        final_items = [agent_item] if agent_item is not None else []
        turn.record.update(status=status, items=[turn.user_item, *final_items], error=error)
        try:
            self._store.save(turn.thread)
        except OSError as exc:
            log(f"could not persist turn {turn.id} of thread {turn.thread.id}: {exc!r}")
        completed_turn = {"id": turn.id, "status": status, "items": final_items, "error": error}
        self._out.notify("turn/completed", {"threadId": turn.thread.id, "turn": completed_turn})
        self._changed.notify_all()

    def _emit(self, turn: _ActiveTurn, method: str, params: dict[str, Any]) -> bool:
        with self._lock:
            if turn.done:
                return False
            self._out.notify(method, params)
            return True

    def _notify_status(self, turn: _ActiveTurn, flags: list[str]) -> None:
        status = {"type": "active", "activeFlags": flags}
        self._out.notify("thread/status/changed", {"threadId": turn.thread.id, "status": status})

    @staticmethod
    def _item_params(turn: _ActiveTurn, item: dict[str, Any], time_field: str) -> dict[str, Any]:
        return {"threadId": turn.thread.id, "turnId": turn.id, "item": dict(item), time_field: now_ms()}


# --- helpers -------------------------------------------------------------------------------------------------------
def _complete_lines(buffer: LineBuffer, chunk: bytes) -> list[bytes]:
    try:
        return buffer.feed(chunk)
    except LineTooLongError as exc:
        log(f"Failed to deserialize JSONRPCMessage: {exc}")
        return buffer.feed(b"")


def _object_params(params: Any, *, required: bool = True) -> dict[str, Any]:
    if params is None:
        if required:
            raise _RequestError("Invalid request: missing field `params`")
        return {}
    if not isinstance(params, dict):
        raise _RequestError(f"Invalid request: invalid type: {_describe(params)}, expected a map")
    return params


def _required(params: dict[str, Any], field: str, kind: type, kind_name: str) -> Any:
    if field not in params:
        raise _RequestError(f"Invalid request: missing field `{field}`")
    return _checked(params[field], kind, kind_name)


def _optional(params: dict[str, Any], field: str, kind: type, kind_name: str) -> Any:
    value = params.get(field)
    return None if value is None else _checked(value, kind, kind_name)


def _checked(value: Any, kind: type, kind_name: str) -> Any:
    if not isinstance(value, kind):
        raise _RequestError(f"Invalid request: invalid type: {_describe(value)}, expected {kind_name}")
    return value


def _describe(value: Any) -> str:
    """serde-style description of a JSON value, e.g. "integer `5`"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {value!r}"
    return "sequence" if isinstance(value, list) else "map"


def _approval_policy(value: Any) -> Any:
    if value is None:
        return "on-request"
    if value in _APPROVAL_POLICIES or (isinstance(value, dict) and "granular" in value):
        return value
    expected = ", ".join(f"`{name}`" for name in _APPROVAL_POLICIES)
    raise _RequestError(f"Invalid request: unknown variant `{value}`, expected one of {expected}")


def _sandbox_policy(mode: Any) -> dict[str, Any]:
    if mode is None:
        mode = "read-only"
    policy = _SANDBOX_POLICIES.get(mode) if isinstance(mode, str) else None
    if policy is None:
        expected = ", ".join(f"`{name}`" for name in _SANDBOX_POLICIES)
        raise _RequestError(f"Invalid request: unknown variant `{mode}`, expected one of {expected}")
    return policy


def _text_inputs(items: list[Any]) -> list[str]:
    """The texts of the `text` inputs; other input types are accepted and ignored."""
    texts: list[str] = []
    for raw in items:
        item = _checked(raw, dict, "a map")
        if _required(item, "type", str, "a string") == "text":
            texts.append(_required(item, "text", str, "a string"))
    return texts


def _text_content(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _requested_command(text: str) -> str | None:
    """The command after "RUN:" up to the end of that line, or None."""
    start = text.find(RUN_MARKER)
    if start < 0:
        return None
    command = text[start + len(RUN_MARKER) :].split("\n", 1)[0].strip()
    return command or None


def _approval_outcome(reply: Response | ErrorResponse | None) -> str:
    """ "completed", "declined", "cancel" or "failed" (an error reply or an unknown decision)."""
    if not isinstance(reply, Response):
        log(f"approval request failed with client error: {reply!r}")
        return "failed"
    decision = reply.result.get("decision") if isinstance(reply.result, dict) else None
    if isinstance(decision, str) and decision in _DECISIONS:
        return _DECISIONS[decision]
    log(f"failed to deserialize CommandExecutionRequestApprovalResponse: unknown decision {decision!r}")
    return "failed"
