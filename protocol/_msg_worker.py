"""Actor messages about one runtime process: calls to it, their results, its output, stopping it.

Contract:
- The coordinator tells a worker `RuntimeCall` (answered by telling `reply_to` a `CallResult`, not by an ask's
  reply) and `AnswerServerRequest`; the worker tells the coordinator the runtime's notifications and server requests
  in stdout order (`RuntimeOutput`) and its stderr error lines (`RuntimeStderr`). The pool asks `StopRuntime` and
  tells `KillRuntime`. `StdoutReady` and `StdoutClosed` come from the worker's stdout reader thread; `CallDeadline`
  is the worker's timer message to itself.
- Host-side failures of a runtime call are reported as an `RpcError` with a code in the HOST_* range below, so one
  reply type covers the runtime's own errors and the host's.
"""

from __future__ import annotations

from typing import Any

from agenthost.protocol._jsonrpc import Incoming, RpcError
from agenthost.protocol._msg_base import Msg

__all__ = [
    "HOST_CALL_TIMEOUT",
    "HOST_UNSUPPORTED_REQUEST",
    "HOST_WORKER_EXITED",
    "AnswerServerRequest",
    "CallDeadline",
    "CallResult",
    "KillRuntime",
    "RuntimeCall",
    "RuntimeOutput",
    "RuntimeStderr",
    "StdoutClosed",
    "StdoutReady",
    "StopRuntime",
]

HOST_CALL_TIMEOUT = -32010  # the runtime did not answer before the call's deadline


HOST_WORKER_EXITED = -32011  # the runtime process exited (or its pipe broke) before answering


HOST_UNSUPPORTED_REQUEST = -32012  # our answer to a server request the host does not handle


class RuntimeCall(Msg, frozen=True, kw_only=True):
    """Send one JSON-RPC request to the runtime; the worker answers `reply_to` with a `CallResult`."""

    call_id: int
    method: str
    params: Any = None
    timeout_s: float
    reply_to: Any


class CallResult(Msg, frozen=True, kw_only=True):
    call_id: int
    worker_id: int
    result: Any = None
    error: RpcError | None = None


class AnswerServerRequest(Msg, frozen=True, kw_only=True):
    """Reply to a server->client request; `request_id` keeps the JSON type the runtime used."""

    request_id: int | str
    result: Any = None
    error: RpcError | None = None


class RuntimeOutput(Msg, frozen=True, kw_only=True):
    """Notifications and server requests from one runtime, in stdout order."""

    worker_id: int
    generation: int
    messages: tuple[Incoming, ...]


class RuntimeStderr(Msg, frozen=True, kw_only=True):
    """Worker -> coordinator: an error line the runtime wrote to its stderr (ANSI codes stripped; at most one a
    second per worker), kept to explain a turn that fails."""

    worker_id: int
    generation: int
    line: str


class StopRuntime(Msg, frozen=True, kw_only=True):
    """Close stdin, wait `timeout_s`, then SIGKILL the process group."""

    timeout_s: float


class KillRuntime(Msg, frozen=True, kw_only=True):
    """Pool -> worker: SIGKILL the runtime's group; the exit is reported with `reason`."""

    reason: str


class CallDeadline(Msg, frozen=True, kw_only=True):
    wire_id: int


class StdoutReady(Msg, frozen=True, kw_only=True):
    """The reader thread has decoded lines waiting; at most one of these is in a worker's mailbox at a time."""


class StdoutClosed(Msg, frozen=True, kw_only=True):
    remainder: bytes = b""
