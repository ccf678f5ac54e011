"""Newline-delimited JSON-RPC codec in the `codex app-server` dialect (msgspec based).

Contract:
- One message per line, UTF-8 JSON, terminated by b"\\n". We never write "jsonrpc"; when reading, "jsonrpc" and any
  other unknown top-level field (e.g. codex's "emittedAtMs") are ignored.
- Request ids are `int | str` and keep their JSON type both ways (`0` and `"0"` are different ids). A JSON boolean is
  not an int here.
- `decode_line` never raises. It classifies a line as:
    id + method            -> Request           (id must not be null)
    method, no id          -> Notification
    "error" (id optional)  -> ErrorResponse     (a missing id reads as None; error needs int code + str message)
    id + "result"          -> Response          ("result": null counts; a missing "result" does not)
    anything else          -> ProtocolError     (returned, never raised; `reason` is short and human readable)
  "params" missing and "params": null both read as None.
- Encoders write compact JSON with a trailing newline, omit "params" when it is None, always write "result" and the
  error's "id" (null allowed there), and omit the error's "data" when it is None. A bad id type raises TypeError.
- `LineBuffer` splits a byte stream into lines (without the b"\\n"; a trailing b"\\r" is left for `decode_line`,
  which tolerates it). Empty lines are returned as b"" (`decode_lines` skips them). A line longer than
  `max_line_bytes` (default 16 MiB) makes `feed` raise `LineTooLongError`; that line is dropped up to its newline
  (which may arrive in later feeds), and the complete lines that came with it are kept and returned by the next
  `feed` call (`feed(b"")` collects them).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "ErrorResponse",
    "Incoming",
    "LineBuffer",
    "LineTooLongError",
    "Notification",
    "ProtocolError",
    "Request",
    "RequestId",
    "Response",
    "RpcError",
    "decode_line",
    "decode_lines",
    "encode_error",
    "encode_notification",
    "encode_request",
    "encode_response",
]

RequestId = int | str
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024


class RpcError(msgspec.Struct, frozen=True):
    """The "error" object of an error response."""

    code: int
    message: str
    data: Any = None


class Request(msgspec.Struct, frozen=True, tag="request"):
    id: RequestId
    method: str
    params: Any = None


class Notification(msgspec.Struct, frozen=True, tag="notification"):
    method: str
    params: Any = None


class Response(msgspec.Struct, frozen=True, tag="response"):
    id: RequestId
    result: Any = None


class ErrorResponse(msgspec.Struct, frozen=True, tag="error"):
    id: RequestId | None
    error: RpcError


class ProtocolError(msgspec.Struct, frozen=True, tag="protocol_error"):
    """A line that is not a valid message; returned by `decode_line`, never raised."""

    line: bytes
    reason: str


Incoming = Request | Notification | Response | ErrorResponse | ProtocolError


class LineTooLongError(Exception):
    """A line exceeded `max_line_bytes`; `size` is the bytes seen so far (a lower bound for an unfinished line)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"line of {size} bytes exceeds max_line_bytes={limit}; the line was dropped")
        self.size = size
        self.limit = limit


# --- decoding ----------------------------------------------------------------------------------------------------
class _Envelope(msgspec.Struct):
    """Lenient view of any message: UNSET tells a missing field from an explicit null."""

    id: int | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: Any = None
    result: Any = UNSET
    error: RpcError | UnsetType = UNSET


_envelope_decoder = msgspec.json.Decoder(_Envelope)


def decode_line(line: bytes) -> Incoming:
    """Classify one line (trailing b"\\r\\n" tolerated); never raises."""
    try:
        envelope = _envelope_decoder.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:
        return _protocol_error(line, _decode_reason(line, exc))
    return _classify(line, envelope)


def _classify(line: bytes, envelope: _Envelope) -> Incoming:
    msg_id = envelope.id
    if envelope.method is not UNSET:
        if msg_id is UNSET:
            return Notification(method=envelope.method, params=envelope.params)
        if msg_id is None:
            return _protocol_error(line, "request id must not be null")
        return Request(id=msg_id, method=envelope.method, params=envelope.params)
    if envelope.error is not UNSET:
        if envelope.result is not UNSET:
            return _protocol_error(line, "message has both result and error")
        return ErrorResponse(id=None if isinstance(msg_id, UnsetType) else msg_id, error=envelope.error)
    if envelope.result is not UNSET:
        if msg_id is UNSET or msg_id is None:
            return _protocol_error(line, "response without an id")
        return Response(id=msg_id, result=envelope.result)
    return _protocol_error(line, "not a request, notification or response (no method, result or error)")


def _decode_reason(line: bytes, exc: Exception) -> str:
    if not line.strip():
        return "empty line"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    return f"invalid message: {exc}"


def _protocol_error(line: bytes, reason: str) -> ProtocolError:
    return ProtocolError(line=bytes(line).rstrip(b"\r\n"), reason=reason)


def decode_lines(chunk: bytes) -> list[Incoming]:
    """Decode a chunk of complete lines; empty (or whitespace-only) lines are skipped."""
    return [decode_line(line) for line in chunk.split(b"\n") if line.strip()]


# --- encoding ----------------------------------------------------------------------------------------------------
class _RequestOut(msgspec.Struct, omit_defaults=True):
    id: RequestId
    method: str
    params: Any = None


class _NotificationOut(msgspec.Struct, omit_defaults=True):
    method: str
    params: Any = None


class _ResponseOut(msgspec.Struct):
    id: RequestId
    result: Any


class _ErrorBodyOut(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    data: Any = None


class _ErrorOut(msgspec.Struct):
    id: RequestId | None
    error: _ErrorBodyOut


_encoder = msgspec.json.Encoder()


def _check_id(request_id: object, *, allow_none: bool = False) -> None:
    if type(request_id) is int or type(request_id) is str or (allow_none and request_id is None):
        return
    raise TypeError(f"request id {request_id!r} is invalid: must be int or str, not {type(request_id).__name__}")


def encode_request(id: RequestId, method: str, params: Any = None) -> bytes:
    """b'{"id":..,"method":..,"params":..}\\n' ("params" omitted when None)."""
    _check_id(id)
    return _encoder.encode(_RequestOut(id=id, method=method, params=params)) + b"\n"


def encode_notification(method: str, params: Any = None) -> bytes:
    """b'{"method":..,"params":..}\\n' ("params" omitted when None)."""
    return _encoder.encode(_NotificationOut(method=method, params=params)) + b"\n"


def encode_response(id: RequestId, result: Any) -> bytes:
    """b'{"id":..,"result":..}\\n' ("result" always written, null included)."""
    _check_id(id)
    return _encoder.encode(_ResponseOut(id=id, result=result)) + b"\n"


def encode_error(id: RequestId | None, code: int, message: str, data: Any = None) -> bytes:
    """b'{"id":..,"error":{"code":..,"message":..,"data":..}}\\n' ("data" omitted when None)."""
    _check_id(id, allow_none=True)
    return _encoder.encode(_ErrorOut(id=id, error=_ErrorBodyOut(code=code, message=message, data=data))) + b"\n"


# --- line splitting ----------------------------------------------------------------------------------------------
class LineBuffer:
    """Accumulates raw reads and hands out complete lines (see the module docstring for the limits)."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes {max_line_bytes!r} is invalid: must be >= 1")
        self._max_line_bytes = max_line_bytes
        self._partial = bytearray()
        self._ready: list[bytes] = []  # lines that arrived with an over-long line, handed out by the next feed
        self._discarding = False  # inside an over-long line: drop bytes up to its newline

    @property
    def pending_bytes(self) -> int:
        """Bytes of the incomplete last line held so far."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return the complete lines (without b"\\n"). Raises LineTooLongError (see module doc)."""
        lines, self._ready = self._ready, []
        if b"\n" not in data:
            if not self._discarding:
                self._partial += data
                self._check_partial(lines)
            return lines
        first, *rest = data.split(b"\n")
        tail = rest.pop()
        too_long = self._complete_first_line(first, lines)
        for line in rest:
            too_long = self._accept_line(line, lines, too_long)
        self._partial += tail
        self._check_partial(lines, too_long)
        return lines

    def flush(self) -> bytes:
        """Return the incomplete remainder at EOF (b"" if none, or if it belongs to a dropped line); reset."""
        remainder = b"" if self._discarding else bytes(self._partial)
        self._partial.clear()
        self._discarding = False
        return remainder

    def _complete_first_line(self, first: bytes, lines: list[bytes]) -> int | None:
        if self._discarding:
            self._discarding = False
            return None
        if self._partial:
            self._partial += first
            first = bytes(self._partial)
            self._partial.clear()
        return self._accept_line(first, lines, None)

    def _accept_line(self, line: bytes, lines: list[bytes], too_long: int | None) -> int | None:
        if len(line) > self._max_line_bytes:
            return too_long if too_long is not None else len(line)
        lines.append(line)
        return too_long

    def _check_partial(self, lines: list[bytes], too_long: int | None = None) -> None:
        if len(self._partial) > self._max_line_bytes:
            too_long = len(self._partial) if too_long is None else too_long
            self._partial.clear()
            self._discarding = True
        if too_long is not None:
            self._ready = lines
            raise LineTooLongError(too_long, self._max_line_bytes)
