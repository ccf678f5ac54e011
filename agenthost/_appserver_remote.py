"""The drop-in app-server's backend for `--connect ROOT`: a running `agenthost serve`, through its control socket,
so several app-server clients share one supervised pool.

Contract: one connection; a reader thread takes every line the service sends: answers go to the request waiting
for them (each waits at most `timeout_s`), `turn.event` notifications to the sink of their turn (registered before
the turn is sent, since this side names the turn). The service's errors come back as agenthost's own exceptions,
chosen by the error's `data.error` name (`RuntimeCallError` keeps the runtime's error); one this side does not know
is a `ServiceError`. A service that goes away fails every request in flight and every later one with
`HostUnavailableError`, and ends every open turn as failed. `connect_backend(root)` raises ValueError (exit 2)
when no service holds the root.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgspec

from agenthost._api import RuntimeCallError
from agenthost._appserver_backend import Sink
from agenthost._client import ServiceError
from agenthost._sockpath import connect, socket_path
from agenthost.actors._errors import (
    HostClosedError,
    HostUnavailableError,
    InvalidDecisionError,
    NoHealthyWorkerError,
    TurnNotActiveError,
    UnknownApprovalError,
)
from agenthost.protocol import ErrorResponse, LineBuffer, Notification, Response, RpcError, decode_line
from agenthost.protocol._jsonrpc import encode_request
from agenthost.storage import (
    InvalidIdError,
    StorageError,
    StorageRoot,
    ThreadRow,
    TurnRow,
    UnknownThreadError,
    resolve_root,
)

__all__ = ["RemoteBackend", "connect_backend"]

_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        HostClosedError,
        HostUnavailableError,
        InvalidDecisionError,
        NoHealthyWorkerError,
        TurnNotActiveError,
        UnknownApprovalError,
        InvalidIdError,
        UnknownThreadError,
        StorageError,
    )
}


def connect_backend(root: str, timeout_s: float = 60.0) -> RemoteBackend:
    storage = resolve_root(StorageRoot(root))
    path = socket_path(storage.system_dir)
    try:
        return RemoteBackend(path, str(storage.root), timeout_s)
    except (FileNotFoundError, ConnectionRefusedError, TimeoutError):
        raise ValueError(
            f"no agenthost service runs on {root!r}: start one with `agenthost serve --root {root}`"
        ) from None


class RemoteBackend:
    def __init__(self, path: Path, root: str, timeout_s: float) -> None:
        self.root = root
        self._sock = connect(path, timeout_s)
        self._sock.settimeout(None)
        self._timeout_s = timeout_s
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[Any]] = {}
        self._sinks: dict[str, Sink] = {}
        self._gone: str | None = None
        threading.Thread(target=self._read, name="appserver-service", daemon=True).start()

    # --- the connection ---------------------------------------------------------------------------------------
    def _call(self, method: str, params: dict[str, Any]) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            if self._gone is not None:
                raise HostUnavailableError(self._gone)
            request_id = next(self._ids)
            self._waiting[request_id] = future
        try:
            with self._send_lock:
                self._sock.sendall(encode_request(request_id, method, params))
        except OSError as exc:
            self._lost(f"the agenthost service went away: {exc}")
        try:
            return future.result(self._timeout_s)
        except TimeoutError:
            with self._lock:
                self._waiting.pop(request_id, None)
            raise HostUnavailableError(
                f"the agenthost service did not answer {method} within {self._timeout_s:g} s"
            ) from None

    def _read(self) -> None:
        lines = LineBuffer()
        try:
            while chunk := self._sock.recv(65536):
                for line in lines.feed(chunk):
                    self._dispatch(decode_line(line))
        except OSError:
            pass
        self._lost("the agenthost service closed the connection")

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, Notification):
            params = message.params if isinstance(message.params, dict) else {}
            if message.method == "turn.event":
                with self._lock:
                    sink = self._sinks.get(params.get("turn_id", ""))
                event = params.get("event") or {}
                if sink is not None:
                    sink(event)
                if event.get("type") == "TurnFinished":
                    with self._lock:
                        self._sinks.pop(params.get("turn_id", ""), None)
            return
        if isinstance(message, (Response, ErrorResponse)) and isinstance(message.id, int):
            with self._lock:
                future = self._waiting.pop(message.id, None)
            if future is None:
                return
            if isinstance(message, Response):
                future.set_result(message.result)
            else:
                future.set_exception(_error(message.error))

    def _lost(self, why: str) -> None:
        with self._lock:
            if self._gone is not None:
                return
            self._gone = why
            waiting, self._waiting = self._waiting, {}
            sinks, self._sinks = self._sinks, {}
        for future in waiting.values():
            future.set_exception(HostUnavailableError(why))
        for turn_id, sink in sinks.items():
            sink({"type": "TurnFinished", "turn_id": turn_id, "status": "failed", "text": "", "error": why})

    # --- the backend ------------------------------------------------------------------------------------------
    def create_thread(self, thread_id: str, thread_settings: dict[str, Any]) -> ThreadRow:
        self._call("threads.create", {"thread_id": thread_id, "thread_settings": thread_settings})
        return self.thread(thread_id)

    def thread(self, thread_id: str) -> ThreadRow:
        return msgspec.convert(self._call("threads.get", {"thread_id": thread_id}), ThreadRow)

    def threads(self) -> list[ThreadRow]:
        return msgspec.convert(self._call("threads.list", {}), list[ThreadRow])

    def turns(self, thread_id: str) -> list[TurnRow]:
        return msgspec.convert(self._call("turns.list", {"thread_id": thread_id}), list[TurnRow])

    def update_thread(
        self,
        thread_id: str,
        *,
        title: str | None = None,
        thread_settings: dict[str, Any] | None = None,
        turn_settings: dict[str, Any] | None = None,
    ) -> ThreadRow:
        params = {"thread_id": thread_id, "title": title, "thread_settings": thread_settings}
        row = self._call("threads.update", {**params, "turn_settings": turn_settings})
        return msgspec.convert(row, ThreadRow)

    def active_turns(self) -> dict[str, str]:
        status = self._call("status", {})
        return {turn["thread_id"]: turn["turn_id"] for turn in status.get("active_turns", [])}

    def send(self, thread_id: str, text: str, items: tuple[Any, ...], turn_id: str, sink: Sink) -> bool:
        with self._lock:
            self._sinks[turn_id] = sink
        params = {"thread_id": thread_id, "text": text, "input": list(items), "turn_id": turn_id, "passthrough": True}
        try:
            accepted = self._call("turns.send", params)
        except BaseException:
            with self._lock:
                self._sinks.pop(turn_id, None)
            raise
        return bool(accepted["queued"])

    def steer(self, turn_id: str, text: str, items: tuple[Any, ...]) -> None:
        self._call("turns.steer", {"turn_id": turn_id, "text": text, "input": list(items)})

    def interrupt(self, turn_id: str) -> None:
        self._call("turns.interrupt", {"turn_id": turn_id})

    def answer_approval(self, approval_id: str, decision: Any) -> None:
        self._call("approvals.answer", {"approval_id": approval_id, "decision": decision})

    def runtime_call(self, method: str, params: Any) -> Any:
        return self._call("runtime.call", {"method": method, "params": params})["result"]

    def close(self) -> None:
        self._sock.close()


def _error(error: RpcError) -> Exception:
    data = error.data if isinstance(error.data, dict) else {}
    kind = data.get("error")
    if kind == "RuntimeCallError" and isinstance(data.get("runtime_error"), dict):
        return RuntimeCallError(msgspec.convert(data["runtime_error"], RpcError))
    cls = _ERRORS.get(kind or "")
    return cls(error.message) if cls is not None else ServiceError(error.code, error.message, error.data)
