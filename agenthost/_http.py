"""The status page of `agenthost serve --http HOST:PORT`: an HTTP front of the control socket, with live updates.

Contract:
- Opt-in and loopback by default (agenthost._http_auth has the address rule, the token and the request checks);
  every response carries a strict Content-Security-Policy (only agenthost's own script and style; nothing from
  the internet), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.
- One source of truth: every answer comes from the service's control socket, as a client of it (agenthost._client),
  through the methods any client has (`view.snapshot`, `transcript.read`, `approvals.answer`, `turns.interrupt`,
  `events.subscribe`). The HTTP server keeps no state of its own.
- Routes: GET / (the page), GET /static/status.js|css (public: no data in them), GET /api/snapshot,
  GET /api/transcript?thread_id=, GET /api/stream (server-sent events: a `snapshot` event at once, then at each
  host event that changes what the page shows, at most every `min_push_s`, and at least every `max_push_s`),
  POST /api/approvals/answer {approval_id, decision}, POST /api/turns/interrupt {turn_id}. A refused request gets
  its status (400, 403, 404, 405) and a one-line reason; a service error is 409 with its message; a service that
  cannot be reached is 503. Each refusal is an `http.refused` event.
- `HttpServer(address, socket_path, allow_remote)` binds at construction (OSError when it cannot: the service
  checks this before its host starts); `start(token)` serves from daemon threads; `close()` stops serving and ends
  the streams.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from agenthost._client import ControlClient, ServiceError
from agenthost._http_auth import TOKEN_HEADER, RequestFacts, check, is_loopback, parse_http_address
from agenthost.actors._log import get_logger

__all__ = ["HttpServer"]

_log = get_logger("agenthost.http")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC = {"/static/status.js": "text/javascript", "/static/status.css": "text/css", "/": "text/html"}
_FILES = {"/static/status.js": "status.js", "/static/status.css": "status.css", "/": "status.html"}
_WATCHED = [
    "supervisor.decision",
    "pool.worker_up",
    "pool.worker_restarting",
    "worker.exited",
    "worker.spawned",
    "turns.dispatched",
    "turns.finished",
    "turns.approvals_reset",
]
_MAX_BODY = 64 * 1024


class _Answer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    approval_id: str
    decision: str


class _Interrupt(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    turn_id: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], front: HttpServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.front = front
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (the browser left, a timeout): an event, never a traceback on stderr."""
        error = sys.exc_info()[1]
        _log.info("http.connection_failed", peer=str(client_address), error=repr(error))


class HttpServer:
    def __init__(
        self,
        address: str,
        socket_path: Path,
        *,
        allow_remote: bool = False,
        min_push_s: float = 0.25,
        max_push_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        host, port = parse_http_address(address, allow_remote)
        self.socket_path = socket_path
        self.token = ""  # set by start(): nothing is served before
        self.loopback_only = is_loopback(host)
        self.min_push_s, self.max_push_s = min_push_s, max_push_s
        self.clock = clock
        self.closing = threading.Event()
        self._server = _Server((host, port), self)
        self.port = int(self._server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{self.port}/"
        self._thread: threading.Thread | None = None

    def start(self, token: str) -> None:
        if not token:
            raise ValueError("the status page needs a token")
        self.token = token
        self._thread = threading.Thread(target=self._server.serve_forever, name="agenthost-http", daemon=True)
        self._thread.start()
        _log.info("http.listening", url=self.base_url, loopback_only=self.loopback_only)

    def close(self) -> None:
        """Stop serving and end the streams (idempotent)."""
        if self.closing.is_set():
            return
        self.closing.set()
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()

    def client(self) -> ControlClient:
        return ControlClient(self.socket_path, timeout_s=30.0)


def _asset(name: str) -> bytes:
    return resources.files("agenthost").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a read or a write may block: an idle or stuck connection is closed
    server_version = "agenthost"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are not logged line by line; refusals are events

    # --- dispatch -------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        front = self.server.front
        facts = RequestFacts(
            method=self.command,
            target=self.path,
            host=self.headers.get("Host"),
            origin=self.headers.get("Origin"),
            content_type=self.headers.get("Content-Type"),
            token_header=self.headers.get(TOKEN_HEADER),
        )
        refusal = check(facts, front.token, front.loopback_only)
        path = urlsplit(self.path).path
        if refusal is not None:
            _log.warning("http.refused", method=self.command, path=path, status=refusal.status, reason=refusal.reason)
            self._text(refusal.status, refusal.reason)
            return
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        try:
            if self.command == "GET" and path in _FILES:
                self._send(200, _STATIC[path], _asset(_FILES[path]))
            elif self.command == "GET" and path == "/api/snapshot":
                self._json(200, self._call("view.snapshot"))
            elif self.command == "GET" and path == "/api/transcript":
                self._json(200, self._call("transcript.read", {"thread_id": query.get("thread_id", "")}))
            elif self.command == "GET" and path == "/api/stream":
                self._stream()
            elif self.command == "POST" and path == "/api/approvals/answer":
                answer = self._body(_Answer)
                self._json(200, self._call("approvals.answer", msgspec.to_builtins(answer)))
            elif self.command == "POST" and path == "/api/turns/interrupt":
                self._json(200, self._call("turns.interrupt", msgspec.to_builtins(self._body(_Interrupt))))
            else:
                self._text(404, f"no such page: {self.command} {path}")
        except _BadBody as exc:
            self._text(400, str(exc))
        except ServiceError as exc:
            self._text(409, f"the service answered: {exc}")
        except (OSError, TimeoutError) as exc:
            self._text(503, f"the service cannot be reached: {exc}")

    # --- helpers --------------------------------------------------------------------------------------------
    def _call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.server.front.client() as client:
            return client.call(method, params)

    def _body(self, kind: type[Any]) -> Any:
        text = self.headers.get("Content-Length") or "0"
        length = int(text) if text.isdigit() else -1
        if not 0 <= length <= _MAX_BODY:
            raise _BadBody(f"Content-Length {text!r} is invalid: at most {_MAX_BODY} bytes")
        try:
            return msgspec.json.decode(self.rfile.read(length), type=kind)
        except msgspec.DecodeError as exc:
            raise _BadBody(f"invalid body: {exc}") from None

    def _headers(self, status: int, content_type: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self._headers(status, f"{content_type}; charset=utf-8", len(body))
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, "application/json", json.dumps(value).encode())

    def _text(self, status: int, text: str) -> None:
        self._send(status, "text/plain", f"{HTTPStatus(status).phrase}: {text}\n".encode())

    def _stream(self) -> None:
        front = self.server.front
        with front.client() as client:
            client.call("events.subscribe", {"names": _WATCHED})
            first = client.call("view.snapshot")
            self.close_connection = True
            self._headers(200, "text/event-stream; charset=utf-8", None)
            self._event("snapshot", first)
            try:
                self._pushes(client)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                return  # the browser went away, or stopped reading
            except (ServiceError, OSError) as exc:  # the service stops or cannot answer: the page says so
                self._event("failure", {"error": str(exc)})

    def _pushes(self, client: ControlClient) -> None:
        front = self.server.front
        last_push, dirty = front.clock(), False
        while not front.closing.is_set():
            since = front.clock() - last_push
            wait = min(front.max_push_s, front.min_push_s if dirty else front.max_push_s) - since
            if wait > 0:
                try:
                    client.next_notification(timeout_s=wait)
                    dirty = True
                    continue
                except TimeoutError:
                    pass
            self._event("snapshot", client.call("view.snapshot"))
            last_push, dirty = front.clock(), False

    def _event(self, name: str, data: Any) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


class _BadBody(ValueError):
    pass
