"""The control socket's transport: newline-delimited JSON-RPC (the project's codec) on a Unix socket.

Contract:
- The socket is created mode 0600 (umask while binding, then chmod). Each connection's peer is checked with
  SO_PEERCRED: only the service's own uid and root may use it; anyone else gets one error line
  ("permission denied ...") and is disconnected, and a "control.refused" event names the uid and pid.
- Requests `{"id", "method", "params"}` are handled concurrently, each answered once with its id (JSON type kept):
  a result, or an error: -32700 unparsable line, -32600 not a request, -32601 unknown method, -32602 bad params
  (the message names the field), -32000 a domain error (`data.error` names it: UnknownThreadError, ...), -32001
  the host cannot serve it now, -32002 the service is shutting down, -32603 a bug (logged). The connection stays
  open after any of these. A line over `max_line_bytes` (8 MiB) gets an error and the connection is closed.
- Server -> client notifications (turn events, tailed events) share the connection's bounded send buffer
  (`max_buffer_bytes`, 8 MiB): a client that cannot keep up is disconnected with a "control.client_dropped" event
  naming the reason; what it was watching goes on. A client that disconnects mid-turn changes nothing for the turn.
- Blocking host calls run in a thread pool; the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from agenthost._sockpath import bind
from agenthost.actors import HostClosedError, HostUnavailableError, NoHealthyWorkerError
from agenthost.actors._log import get_logger
from agenthost.protocol import LineBuffer, LineTooLongError, ProtocolError, Request, decode_line
from agenthost.protocol._jsonrpc import encode_error, encode_notification, encode_response
from agenthost.storage import StorageError

__all__ = ["Connection", "ControlServer", "Handler", "MethodError"]

_log = get_logger("agenthost.control")
PARSE_ERROR, INVALID_REQUEST, UNKNOWN_METHOD, INVALID_PARAMS, INTERNAL = -32700, -32600, -32601, -32602, -32603
DOMAIN_ERROR, UNAVAILABLE, CLOSING = -32000, -32001, -32002
_READ = 65536


class MethodError(Exception):
    """An error answer with its code (raised by a method handler)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.data = code, data


_BACKLOG = 1024  # pending connects the kernel queues; asyncio's default of 100 refuses a burst of clients

# (connection, params) -> result; runs on the event loop (it may await; blocking work goes to `connection.call`)
Handler = Callable[["Connection", Any], Awaitable[Any]]


class Connection:
    """One client: its bounded send buffer and what it watches (cleaned up when it goes)."""

    def __init__(self, server: ControlServer, writer: asyncio.StreamWriter, peer: str) -> None:
        self.server, self.peer = server, peer
        self._writer = writer
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self.closed = False
        self.cleanups: list[Callable[[], None]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()

    def send(self, line: bytes) -> None:
        """Queue a line (event loop thread only); over the buffer limit the client is dropped."""
        if self.closed:
            return
        if self._queued_bytes + len(line) > self.server.max_buffer_bytes:
            self.drop(f"send buffer over {self.server.max_buffer_bytes} bytes: the client does not read")
            return
        self._queue.append(line)
        self._queued_bytes += len(line)
        self._wake.set()

    def send_threadsafe(self, line: bytes) -> None:
        if not self.closed:
            self._loop.call_soon_threadsafe(self.send, line)

    def notify(self, method: str, params: Any) -> None:
        self.send_threadsafe(encode_notification(method, params))

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking host call in the server's thread pool."""
        return await self._loop.run_in_executor(self.server.executor, fn, *args)

    def drop(self, reason: str) -> None:
        if not self.closed:
            _log.warning("control.client_dropped", peer=self.peer, reason=reason)
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for cleanup in self.cleanups:
            cleanup()
        self.cleanups.clear()
        self._wake.set()
        self._writer.close()

    async def write_loop(self) -> None:
        try:
            while not self.closed:
                await self._wake.wait()
                self._wake.clear()
                while self._queue and not self.closed:
                    line = self._queue.popleft()
                    self._queued_bytes -= len(line)
                    self._writer.write(line)
                    await self._writer.drain()
        except (ConnectionError, OSError):
            self.close()


class ControlServer:
    def __init__(
        self,
        path: Path,
        methods: dict[str, Handler],
        *,
        max_line_bytes: int = 8 * 1024 * 1024,
        max_buffer_bytes: int = 8 * 1024 * 1024,
        threads: int = 32,
    ) -> None:
        self.path = path
        self.methods = methods
        self.max_line_bytes, self.max_buffer_bytes = max_line_bytes, max_buffer_bytes
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="agenthost-control")
        self.allowed_uids = {os.getuid(), 0}
        self.closing = False
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # a stale socket of a dead service (the root lock says none is running)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            bind(sock, self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, backlog=_BACKLOG)
        _log.info("control.listening", path=str(self.path))

    async def close(self) -> None:
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        self.path.unlink(missing_ok=True)
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        pid, uid, _ = struct.unpack("3i", raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        connection = Connection(self, writer, f"pid {pid} uid {uid}")
        if uid not in self.allowed_uids:
            _log.warning("control.refused", uid=uid, pid=pid, allowed=sorted(self.allowed_uids))
            message = f"permission denied: uid {uid} may not use this socket (only uid {os.getuid()} and root)"
            writer.write(encode_error(None, DOMAIN_ERROR, message, {"error": "PermissionError"}))
            writer.close()
            return
        self._connections.add(connection)
        writing = asyncio.create_task(connection.write_loop())
        try:
            await self._read(reader, connection)
        finally:
            connection.close()
            self._connections.discard(connection)
            await asyncio.gather(writing, return_exceptions=True)

    async def _read(self, reader: asyncio.StreamReader, connection: Connection) -> None:
        lines = LineBuffer(max_line_bytes=self.max_line_bytes)
        while not connection.closed:
            try:
                chunk = await reader.read(_READ)
            except (ConnectionError, OSError):
                return
            if not chunk:
                return
            try:
                complete = lines.feed(chunk)
            except LineTooLongError as exc:
                connection.send(encode_error(None, INVALID_REQUEST, f"line too long: {exc}"))
                await asyncio.sleep(0)  # let the writer send it
                connection.drop(f"line over {self.max_line_bytes} bytes")
                return
            for line in complete:
                if line.strip():
                    task = asyncio.create_task(self._request(connection, line))
                    connection.tasks.add(task)  # held until done: the loop keeps only weak references
                    task.add_done_callback(connection.tasks.discard)

    async def _request(self, connection: Connection, line: bytes) -> None:
        message = decode_line(line)
        if isinstance(message, ProtocolError):
            connection.send(encode_error(None, PARSE_ERROR, f"parse error: {message.reason}"))
            return
        if not isinstance(message, Request):
            request_id = getattr(message, "id", None)
            connection.send(
                encode_error(request_id, INVALID_REQUEST, "not a request: a request needs an id and a method")
            )
            return
        handler = self.methods.get(message.method)
        if handler is None:
            connection.send(encode_error(message.id, UNKNOWN_METHOD, f"unknown method {message.method!r}"))
            return
        try:
            if self.closing and message.method != "status":
                raise MethodError(CLOSING, "the service is shutting down")
            result = await handler(connection, message.params)
        except MethodError as exc:
            connection.send(encode_error(message.id, exc.code, str(exc), exc.data))
        except msgspec.ValidationError as exc:
            connection.send(encode_error(message.id, INVALID_PARAMS, f"invalid params: {exc}"))
        except HostClosedError as exc:
            connection.send(encode_error(message.id, CLOSING, str(exc), {"error": type(exc).__name__}))
        except (HostUnavailableError, NoHealthyWorkerError) as exc:
            connection.send(encode_error(message.id, UNAVAILABLE, str(exc), {"error": type(exc).__name__}))
        except (StorageError, KeyError, ValueError, LookupError, TimeoutError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            connection.send(encode_error(message.id, DOMAIN_ERROR, str(text), {"error": type(exc).__name__}))
        except Exception as exc:  # noqa: BLE001 - a bug: answered and logged, the service goes on
            _log.exception("control.method_failed", method=message.method, error=repr(exc))
            connection.send(encode_error(message.id, INTERNAL, f"internal error: {exc!r}"))
        else:
            after = getattr(result, "after_response", None)
            if after is not None:
                connection.send(encode_response(message.id, result.value))
                after()
            else:
                connection.send(encode_response(message.id, result))
