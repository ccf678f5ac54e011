"""The reference runtime's protocol engine: the codex app-server subset agenthost needs, with no model behind it.

Contract (see protocol/reference_runtime.py for the command line and the full message sequences):
- One reader loop (`serve`, main thread) decodes stdin lines and handles each request while holding the state lock,
  so requests are answered strictly in arrival order. Turns stream from their own threads (protocol._runtime_turns),
  which take the same lock.
- Every request-level error uses code -32600 with codex's message text (protocol._runtime_params); an unexpected
  exception inside a handler answers -32603 "Internal error: ..." and the runtime keeps serving. Unparsable lines
  and replies to unknown request ids are logged to stderr and otherwise ignored.
- Faults: protocol._live_faults. The faults file is also stat()ed before each
  request (`hang_on`: that request is never answered); `garbage_before_turn` writes a non-JSON line before each
  `turn/started`.
- Persisted state: thread files via ThreadStore (append-only); a thread's header is saved before `thread/start` is
  answered, a turn is appended "inProgress" before `turn/start` is answered (a failed save answers the error and
  starts nothing), and appended with its final status before its `turn/completed` is written.
- Memory: a loaded thread keeps only its header here; `thread/resume` reads the turns from its file each time (the
  running turn, if any, as it is in memory). A turn whose final save failed therefore reads "interrupted" there, as
  it would after a restart.
"""

from __future__ import annotations

import os
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from agenthost.protocol._faults import RuntimeFaults
from agenthost.protocol._jsonrpc import (
    ErrorResponse,
    LineBuffer,
    LineTooLongError,
    Notification,
    Request,
    Response,
    decode_line,
)
from agenthost.protocol._live_faults import FaultTriggers, LiveFaults
from agenthost.protocol._runtime_io import StdoutWriter, log
from agenthost.protocol._runtime_params import (
    RequestError,
    approval_policy,
    check_turn_options,
    object_params,
    optional_field,
    required_field,
    sandbox_policy,
    text_inputs,
    unknown_variant,
)
from agenthost.protocol._runtime_store import ThreadHeader, ThreadStore, looks_like_uuid
from agenthost.protocol._runtime_turns import RunningTurn, TurnRunner

__all__ = ["ReferenceRuntime"]

USER_AGENT = "agenthost-reference/0.1"
MODEL, MODEL_PROVIDER = "reference", "builtin"
MODEL_INFO: dict[str, Any] = {
    "id": MODEL,
    "model": MODEL,
    "displayName": "Reference runtime",
    "description": "agenthost's built-in runtime: it answers 'Reference reply to: <your text>'",
    "hidden": False,
    "supportedReasoningEfforts": [],
    "defaultReasoningEffort": None,
    "inputModalities": ["text"],
    "isDefault": True,
}
INTERNAL_ERROR = -32603
READ_CHUNK_BYTES = 65536


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
        self._triggers = FaultTriggers(self._live, out.flush)
        self._store = ThreadStore(state_dir)
        self._lock = threading.Lock()
        self._turns = TurnRunner(
            lock=self._lock,
            out=out,
            store=self._store,
            live=self._live,
            triggers=self._triggers,
            deltas_per_reply=deltas_per_reply,
        )
        self._initialized = False
        self._threads: dict[str, ThreadHeader] = {}  # loaded in this process; turns stay on disk
        self._handlers: dict[str, Callable[[Request], None]] = {
            "initialize": self._initialize,
            "thread/start": self._thread_start,
            "thread/resume": self._thread_resume,
            "turn/start": self._turn_start,
            "turn/interrupt": self._turn_interrupt,
            "turn/steer": self._turn_steer,
            "account/read": self._account_read,
            "model/list": self._model_list,
            "config/read": self._config_read,
            "skills/list": self._skills_list,
        }

    # --- reader loop -----------------------------------------------------------------------------------------------
    def serve(self, stdin_fd: int) -> int:
        """Handle stdin until EOF; return the exit code (0)."""
        buffer = LineBuffer()
        while chunk := os.read(stdin_fd, READ_CHUNK_BYTES):
            with self._out.burst():  # the answers to one read go out in one write
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
            self._turns.accept_reply(message)
        elif isinstance(message, Notification):
            if message.method != "initialized":
                log(f"ignoring notification {message.method!r}")
        else:
            log(f"Failed to deserialize JSONRPCMessage: {message.reason}")

    def _handle_request(self, request: Request) -> None:
        if request.method == self._live.refresh().hang_on:
            log(f"fault hang_on={request.method!r}: never answering request {request.id!r}")
            return
        with self._lock:
            try:
                self._dispatch(request)
            except RequestError as exc:
                self._out.error(request.id, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug or a disk error: answer, log, keep serving
                log(f"request {request.method!r} failed:\n{traceback.format_exc()}")
                self._out.error(request.id, f"Internal error: {exc}", code=INTERNAL_ERROR)

    def _dispatch(self, request: Request) -> None:
        handler = self._handlers.get(request.method)
        if handler is None:
            raise unknown_variant(request.method, self._handlers)
        if not self._initialized and request.method != "initialize":
            raise RequestError("Not initialized")
        handler(request)

    # --- handlers (state lock held) --------------------------------------------------------------------------------
    def _initialize(self, request: Request) -> None:
        params = object_params(request.params)
        client_info = required_field(params, "clientInfo", dict, "a map")
        required_field(client_info, "name", str, "a string")
        required_field(client_info, "version", str, "a string")
        if self._initialized:
            raise RequestError("Already initialized")
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
        params = object_params(request.params, required=False)
        header = ThreadHeader(
            id=str(uuid.uuid4()),
            cwd=optional_field(params, "cwd", str, "a string") or os.getcwd(),
            approval_policy=approval_policy(params.get("approvalPolicy")),
            sandbox=sandbox_policy(params.get("sandbox")),
        )
        self._store.create(header)
        self._threads[header.id] = header
        self._out.response(request.id, self._thread_result(header, []))
        self._out.notify("thread/started", {"thread": self._thread_json(header, [])})

    def _thread_resume(self, request: Request) -> None:
        thread_id = required_field(object_params(request.params), "threadId", str, "a string")
        if not looks_like_uuid(thread_id):
            raise RequestError(f"invalid session id: {thread_id}")
        record = self._store.load(thread_id)
        if record is None:
            raise RequestError(f"no rollout found for thread id {thread_id}")
        header = self._threads.setdefault(thread_id, record.header)
        turns = record.turns
        active = self._turns.active.get(thread_id)
        if active is not None:  # on disk it is "inProgress", which load reads as a dead process's turn
            turns = [active.record if turn.get("id") == active.id else turn for turn in turns]
        self._out.response(request.id, self._thread_result(header, turns))

    def _turn_start(self, request: Request) -> None:
        params = object_params(request.params)
        thread_id = required_field(params, "threadId", str, "a string")
        text_parts = text_inputs(required_field(params, "input", list, "a sequence"))
        check_turn_options(params, MODEL)
        record = self._loaded_thread(thread_id)
        user_item = _user_item(text_parts)
        active = self._turns.active.get(record.id)
        if active is not None:  # as codex: the input joins the running turn, whose id is the answer
            self._out.response(request.id, {"turn": _live_turn(active.id)})
            self._turns.steer_locked(active, user_item)
            return
        text = "\n".join(text_parts)
        turn_record: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "status": "inProgress",
            "items": [user_item],
            "error": None,
        }
        self._store.save_turn(record.id, turn_record)
        turn = RunningTurn(record, turn_record, text, user_item)
        self._turns.active[record.id] = turn
        started_turn = _live_turn(turn.id)
        self._out.response(request.id, {"turn": started_turn})
        self._triggers.before_output(turn_start=True)
        if self._live.refresh().garbage_before_turn:
            self._out.garbage()
        self._out.notify("turn/started", {"threadId": record.id, "turn": started_turn})
        self._turns.start(turn)

    def _turn_interrupt(self, request: Request) -> None:
        params = object_params(request.params)
        thread_id = required_field(params, "threadId", str, "a string")
        turn_id = required_field(params, "turnId", str, "a string")
        record = self._loaded_thread(thread_id)
        turn = self._turns.active.get(record.id)
        if turn is None:
            raise RequestError("no active turn to interrupt")
        if turn.id != turn_id:
            raise RequestError(f"expected active turn id {turn_id} but found {turn.id}")
        pending_request_id = turn.approval_id
        self._out.response(request.id, {})
        self._turns.finish_locked(turn, "interrupted")
        if pending_request_id is not None:
            self._out.notify("serverRequest/resolved", {"threadId": record.id, "requestId": pending_request_id})

    def _turn_steer(self, request: Request) -> None:
        params = object_params(request.params)
        record = self._loaded_thread(required_field(params, "threadId", str, "a string"))
        expected = required_field(params, "expectedTurnId", str, "a string")
        text_parts = text_inputs(required_field(params, "input", list, "a sequence"))
        turn = self._turns.active.get(record.id)
        if turn is None:
            raise RequestError("no active turn to steer")
        if turn.id != expected:
            raise RequestError(f"expected active turn id `{expected}` but found `{turn.id}`")
        self._out.response(request.id, {"turnId": turn.id})
        self._turns.steer_locked(turn, _user_item(text_parts))

    def _account_read(self, request: Request) -> None:
        self._out.response(
            request.id, {"account": None, "userId": None, "requiresOpenaiAuth": False, "workspaceRouting": None}
        )

    def _model_list(self, request: Request) -> None:
        self._out.response(request.id, {"data": [MODEL_INFO], "nextCursor": None})

    def _config_read(self, request: Request) -> None:
        config = {"model": MODEL, "model_provider": MODEL_PROVIDER, "approval_policy": None, "sandbox_mode": None}
        self._out.response(request.id, {"config": config, "origins": {}, "layers": None})

    def _skills_list(self, request: Request) -> None:
        params = object_params(request.params, required=False)
        cwds = optional_field(params, "cwds", list, "a sequence") or [os.getcwd()]
        self._out.response(request.id, {"data": [{"cwd": cwd, "skills": [], "errors": []} for cwd in cwds]})

    def _loaded_thread(self, thread_id: str) -> ThreadHeader:
        if not looks_like_uuid(thread_id):
            raise RequestError(f"invalid thread id: {thread_id}")
        record = self._threads.get(thread_id)
        if record is None:
            raise RequestError(f"thread not found: {thread_id}")
        return record

    def _thread_result(self, record: ThreadHeader, turns: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "thread": self._thread_json(record, turns),
            "model": MODEL,
            "modelProvider": MODEL_PROVIDER,
            "cwd": record.cwd,
            "approvalPolicy": record.approval_policy,
            "sandbox": record.sandbox,
        }

    def _thread_json(self, record: ThreadHeader, turns: list[dict[str, Any]]) -> dict[str, Any]:
        turn = self._turns.active.get(record.id)
        if turn is None:
            status: dict[str, Any] = {"type": "idle"}
        else:
            flags = ["waitingOnApproval"] if turn.approval_id is not None else []
            status = {"type": "active", "activeFlags": flags}
        return {"id": record.id, "turns": turns, "status": status, "cwd": record.cwd}


# --- helpers -------------------------------------------------------------------------------------------------------
def _complete_lines(buffer: LineBuffer, chunk: bytes) -> list[bytes]:
    try:
        return buffer.feed(chunk)
    except LineTooLongError as exc:
        log(f"Failed to deserialize JSONRPCMessage: {exc}")
        return buffer.feed(b"")


def _user_item(text_parts: list[str]) -> dict[str, Any]:
    return {"type": "userMessage", "id": str(uuid.uuid4()), "content": [_text_content(t) for t in text_parts]}


def _live_turn(turn_id: str) -> dict[str, Any]:
    return {"id": turn_id, "status": "inProgress", "items": [], "error": None}


def _text_content(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}
