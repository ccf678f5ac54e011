"""A blocking client of a running `agenthost serve`: what the CLI speaks to the control socket.

Contract: `ControlClient.call(method, params)` sends one request and returns its result, or raises `ServiceError`
(the error's code, message and data); notifications that arrive meanwhile are kept, in order, for
`next_notification(timeout_s)`. Request ids are the client's own increasing ints. `connect_service(root)` returns a
client when a service listens on the root's socket, None when none does (no socket file, or nobody accepts);
a socket the caller may not use (another user's service) raises `ServiceError` with the service's refusal.
"""

from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Any

from agenthost._sockpath import connect, socket_path
from agenthost.protocol import ErrorResponse, LineBuffer, Notification, Response, decode_line
from agenthost.protocol._jsonrpc import encode_request

__all__ = ["ControlClient", "ServiceError", "connect_service"]


class ServiceError(RuntimeError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.data = code, data

    @property
    def kind(self) -> str | None:
        return self.data.get("error") if isinstance(self.data, dict) else None


class ControlClient:
    def __init__(self, path: Path, timeout_s: float = 60.0) -> None:
        self.path = path
        self._sock = connect(path, timeout_s)
        self._lines = LineBuffer()
        self._ready: collections.deque[bytes] = collections.deque()
        self._notes: collections.deque[Notification] = collections.deque()
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, params: dict[str, Any] | None = None, timeout_s: float | None = None) -> Any:
        request_id = next(self._ids)
        self._sock.sendall(encode_request(request_id, method, params or {}))
        while True:
            message = self._next_message(timeout_s)
            if isinstance(message, Notification):
                self._notes.append(message)
            elif isinstance(message, Response) and message.id == request_id:
                return message.result
            elif isinstance(message, ErrorResponse) and message.id in (request_id, None):
                error = message.error
                raise ServiceError(error.code, error.message, error.data)

    def next_notification(self, timeout_s: float | None = None) -> Notification:
        """The next notification (kept or new); TimeoutError when none comes within `timeout_s` (None: wait)."""
        if self._notes:
            return self._notes.popleft()
        while True:
            message = self._next_message(timeout_s)
            if isinstance(message, Notification):
                return message
            if isinstance(message, ErrorResponse) and message.id is None:
                raise ServiceError(message.error.code, message.error.message, message.error.data)

    def _next_message(self, timeout_s: float | None) -> Any:
        while not self._ready:
            self._sock.settimeout(timeout_s)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no answer from the service within {timeout_s:g} s") from None
            if not chunk:
                raise ConnectionError("the service closed the connection")
            self._ready.extend(self._lines.feed(chunk))
        return decode_line(self._ready.popleft())


def connect_service(system_dir: Path, timeout_s: float = 60.0) -> ControlClient | None:
    path = socket_path(system_dir)
    if not path.exists():
        return None
    try:
        return ControlClient(path, timeout_s)
    except (TimeoutError, ConnectionRefusedError, FileNotFoundError):
        return None
