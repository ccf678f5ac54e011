"""`agenthost app-server`: a drop-in `codex app-server` on stdio, backed by agenthost (docs/app-server.md).

Contract (codex 0.169.0's wire rules, agenthost's durability underneath):
- Newline-delimited JSON on stdin/stdout; "jsonrpc" is never written. Request ids of any JSON type are echoed as
  they came ("1" stays a string). Requests are handled one at a time, in arrival order; a turn's notifications
  and approval requests are written from agenthost's threads, never before the answer that started them.
- Before `initialize` every request gets -32600 "Not initialized"; a second one "Already initialized". The
  `initialized` notification is optional. `capabilities.optOutNotificationMethods` is honoured for every
  notification this front end writes.
- Errors: -32600 with codex's text for bad requests (unknown method: "Invalid request: unknown variant `m`,
  expected one of ..."), an agenthost error keeps its own words: -32600 for a domain answer (unknown thread ...),
  -32000 when agenthost cannot serve it now (no worker up, a part restarting) and -32603 for a bug (logged).
  Requests agenthost answers itself are in `agenthost._appserver_methods`; the passed ones go to a runtime as they
  are; the refused ones get the reason (agenthost._appserver_catalog has every method's fate). An unparsable line,
  or one over 16 MiB, gets no answer (as codex) and is logged; the session goes on.
- A client's answer to a server request (an approval) goes to agenthost by the request's own id (same JSON type);
  an answer to an unknown id is ignored, an error answer declines.
- stdin EOF (the client's clean stop) or SIGTERM ends the session: agenthost stops, ending open turns as failed
  and persisted.
"""

from __future__ import annotations

import os
import platform
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

from agenthost._api import RuntimeCallError
from agenthost._appserver_backend import Backend
from agenthost._appserver_catalog import HANDLED, PASSED, refusal
from agenthost._appserver_methods import THREAD_METHODS
from agenthost._appserver_shapes import Defaults
from agenthost._appserver_stream import Requests
from agenthost._version import __version__
from agenthost.actors._errors import (
    HostClosedError,
    HostUnavailableError,
    InvalidDecisionError,
    NoHealthyWorkerError,
    TurnNotActiveError,
    UnknownApprovalError,
)
from agenthost.actors._log import get_logger
from agenthost.protocol._jsonrpc import (
    ErrorResponse,
    LineBuffer,
    LineTooLongError,
    Notification,
    Request,
    Response,
    decode_line,
)
from agenthost.protocol._runtime_params import RequestError, object_params, required_field, unknown_variant
from agenthost.storage import StorageError

__all__ = ["Session"]

_log = get_logger("agenthost.appserver")
INVALID_REQUEST, UNAVAILABLE, INTERNAL = -32600, -32000, -32603


class _Writer:
    """Writes each message as one line from its own thread: agenthost's threads never block on the client."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="appserver-stdout", daemon=True)
        self._thread.start()

    def write(self, message: dict[str, Any]) -> None:
        try:
            line = msgspec.json.encode(message) + b"\n"
        except (TypeError, msgspec.EncodeError) as exc:  # a bug: say so instead of a half-written line
            _log.error("appserver.unencodable", error=repr(exc), keys=sorted(message))
            if "id" not in message or "method" in message:
                return
            error = {"code": INTERNAL, "message": f"Internal error: the answer could not be encoded: {exc}"}
            line = msgspec.json.encode({"id": message["id"], "error": error}) + b"\n"
        self._queue.put(line)

    def _run(self) -> None:
        while (line := self._queue.get()) is not None:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, ValueError):  # the client went away: nothing more to say
                return

    def close(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)


class Session:
    def __init__(self, backend: Backend, out: BinaryIO, runtime_label: str) -> None:
        self.backend = backend
        self.requests = Requests()
        self.opted_out: frozenset[str] = frozenset()
        self._writer = _Writer(out)
        self._initialized = False
        self._client = "unknown"
        self._runtime_label = runtime_label
        self._defaults: Defaults | None = None
        self._after: list[Callable[[], object]] = []
        self._methods: dict[str, Callable[[Session, Any], Any]] = {
            "initialize": Session._initialize,
            **THREAD_METHODS,
            **{method: _passed(method) for method in PASSED},
        }
        assert set(self._methods) == set(HANDLED) | set(PASSED), "agenthost._appserver_catalog is the list"

    # --- output -----------------------------------------------------------------------------------------------
    def write(self, message: dict[str, Any]) -> None:
        self._writer.write(message)

    def notify(self, method: str, params: Any) -> None:
        if method not in self.opted_out:
            self.write({"method": method, "params": params})

    def after_response(self, action: Callable[[], object]) -> None:
        """Run `action` right after the current request's answer is written (its notifications follow it)."""
        self._after.append(action)

    def defaults(self) -> Defaults:
        """What threads run with unless their client says: the runtime's own configuration, read once."""
        if self._defaults is None:
            config: dict[str, Any] = {}
            try:
                answer = self.backend.runtime_call("config/read", {})
                config = answer.get("config") or {} if isinstance(answer, dict) else {}
            except Exception as exc:  # noqa: BLE001 - the runtime may not tell; agenthost's defaults then apply
                _log.info("appserver.config_unknown", error=repr(exc))
            base = Defaults()
            self._defaults = Defaults(
                model=config.get("model") or base.model,
                model_provider=config.get("model_provider") or self._runtime_label,
                approval_policy=config.get("approval_policy") or base.approval_policy,
                sandbox=config.get("sandbox_mode") or base.sandbox,
                cwd=os.getcwd(),
                cli_version=__version__,
            )
        return self._defaults

    # --- input ------------------------------------------------------------------------------------------------
    def handle_line(self, line: bytes) -> None:
        message = decode_line(line)
        if isinstance(message, Request):
            self._request(message)
        elif isinstance(message, (Response, ErrorResponse)):
            self._client_answer(message)
        elif isinstance(message, Notification):
            if message.method != "initialized":
                _log.info("appserver.notification_ignored", method=message.method)
        else:
            _log.warning("appserver.unparsable_line", reason=message.reason)

    def _request(self, request: Request) -> None:
        self._after = []
        try:
            result = self._dispatch(request)
        except RequestError as exc:
            self._error(request.id, INVALID_REQUEST, str(exc))
        except (TurnNotActiveError, UnknownApprovalError, InvalidDecisionError, StorageError) as exc:
            self._error(request.id, INVALID_REQUEST, _words(exc))
        except (NoHealthyWorkerError, HostUnavailableError, HostClosedError) as exc:
            self._error(request.id, UNAVAILABLE, f"agenthost cannot serve this now: {exc}")
        except _RuntimeAnswer as answer:
            self.write({"id": request.id, "error": answer.error})
        except Exception as exc:  # noqa: BLE001 - a bug: answered and logged, the session goes on
            _log.exception("appserver.request_failed", method=request.method, error=repr(exc))
            self._error(request.id, INTERNAL, f"Internal error: {exc!r}")
        else:
            self.write({"id": request.id, "result": result})
        after, self._after = self._after, []
        for action in after:
            action()

    def _dispatch(self, request: Request) -> Any:
        handler = self._methods.get(request.method)
        if handler is None:
            reason = refusal(request.method)
            if reason is not None:
                raise RequestError(f"agenthost app-server does not support {request.method}: {reason}")
            raise unknown_variant(request.method, self._methods)
        if not self._initialized and request.method != "initialize":
            raise RequestError("Not initialized")
        return handler(self, request.params)

    def _error(self, request_id: Any, code: int, message: str) -> None:
        self.write({"id": request_id, "error": {"code": code, "message": message}})

    def _client_answer(self, answer: Response | ErrorResponse) -> None:
        entry = self.requests.take(answer.id)
        if entry is None:
            _log.info("appserver.answer_ignored", id=answer.id)
            return
        approval_id, thread_id = entry
        result = answer.result if isinstance(answer, Response) else None
        decision = result.get("decision") if isinstance(result, dict) else None
        if decision is None:
            decision = "decline"  # an error answer, or none: nothing runs off the record
        try:
            try:
                self.backend.answer_approval(approval_id, decision)
            except InvalidDecisionError as exc:  # codex fails the call on a decision it cannot read; decline
                _log.warning("appserver.answer_refused", approval=approval_id, error=repr(exc))
                self.backend.answer_approval(approval_id, "decline")
        except (UnknownApprovalError, HostUnavailableError) as exc:  # settled meanwhile, or agenthost is restarting
            _log.warning("appserver.answer_lost", approval=approval_id, error=repr(exc))
        self.notify("serverRequest/resolved", {"threadId": thread_id, "requestId": answer.id})

    # --- handlers ---------------------------------------------------------------------------------------------
    def _initialize(self, params: Any) -> dict[str, Any]:
        given = object_params(params)
        client = required_field(given, "clientInfo", dict, "a map")
        name = required_field(client, "name", str, "a string")
        version = required_field(client, "version", str, "a string")
        if self._initialized:
            raise RequestError("Already initialized")
        capabilities = given.get("capabilities")
        opt_out = (capabilities.get("optOutNotificationMethods") if isinstance(capabilities, dict) else None) or []
        self.opted_out = frozenset(m for m in opt_out if isinstance(m, str))
        self._initialized, self._client = True, name
        system = f"{platform.system()} {platform.release()}; {platform.machine()}"
        return {
            "userAgent": f"agenthost/{__version__} ({system}) ({name}; {version})",
            "codexHome": self.backend.root,
            "platformFamily": "unix",
            "platformOs": sys.platform,
        }

    def pass_on(self, method: str, params: Any) -> Any:
        try:
            return self.backend.runtime_call(method, params)
        except RuntimeCallError as exc:
            raise _RuntimeAnswer(msgspec.to_builtins(exc.error)) from None

    # --- the stdio loop ---------------------------------------------------------------------------------------
    def serve(self, stdin_fd: int) -> int:
        """Handle stdin until EOF; then stop agenthost and return 0."""
        buffer = LineBuffer()
        try:
            while chunk := os.read(stdin_fd, 65536):
                for line in _lines(buffer, chunk):
                    if line.strip():
                        self.handle_line(line)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        try:
            self.backend.close()
        finally:
            self._writer.close()


def _passed(method: str) -> Callable[[Session, Any], Any]:
    def handler(session: Session, params: Any) -> Any:
        return session.pass_on(method, params)

    return handler


class _RuntimeAnswer(Exception):
    """A passed-on request the runtime answered with an error: that error goes to the client as it is."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def _words(exc: BaseException) -> str:
    """An agenthost error's own message (KeyError subclasses would otherwise quote it)."""
    return str(exc.args[0]) if exc.args else repr(exc)


def _lines(buffer: LineBuffer, chunk: bytes) -> list[bytes]:
    try:
        return buffer.feed(chunk)
    except LineTooLongError as exc:
        _log.warning("appserver.line_too_long", error=str(exc))
        return buffer.feed(b"")
