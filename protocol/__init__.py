"""agenthost's wire and actor protocol.

- The newline-delimited JSON-RPC codec in the `codex app-server` dialect (`decode_line`, `encode_*`, `LineBuffer`).
- The one place that classifies runtime errors (`classify_error`, `is_thread_not_found`, `is_no_rollout`).
- Every actor message, as frozen msgspec Structs in tagged unions (`protocol._messages`).
- The built-in reference runtime: `python -m protocol.reference_runtime`.
"""

from protocol._errors import INVALID_REQUEST, ErrorKind, classify_error, is_no_rollout, is_thread_not_found
from protocol._jsonrpc import (
    ErrorResponse,
    Incoming,
    LineBuffer,
    LineTooLongError,
    Notification,
    ProtocolError,
    Request,
    RequestId,
    Response,
    RpcError,
    decode_line,
    decode_lines,
    encode_error,
    encode_notification,
    encode_request,
    encode_response,
)
from protocol._messages import (
    ApprovalRequested,
    ApprovalReset,
    ApprovalResolved,
    Delta,
    HostStatus,
    TurnEvent,
    TurnFinished,
    TurnStarted,
    WorkerStatus,
)

__all__ = [
    "INVALID_REQUEST", "ErrorKind", "classify_error", "is_no_rollout", "is_thread_not_found",
    "ErrorResponse", "Incoming", "LineBuffer", "LineTooLongError", "Notification", "ProtocolError", "Request",
    "RequestId", "Response", "RpcError", "decode_line", "decode_lines", "encode_error", "encode_notification",
    "encode_request", "encode_response",
    "ApprovalRequested", "ApprovalReset", "ApprovalResolved", "Delta", "HostStatus", "TurnEvent", "TurnFinished",
    "TurnStarted", "WorkerStatus",
]
