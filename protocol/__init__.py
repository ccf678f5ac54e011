"""agenthost's wire and actor protocol.

- The newline-delimited JSON-RPC codec in the `codex app-server` dialect (`decode_line`, `encode_*`, `LineBuffer`).
- The one place that classifies runtime errors (`classify_error`, `is_thread_not_found`, `is_no_rollout`).
- Every actor message, as frozen msgspec Structs in tagged unions (`protocol._messages`).
- The built-in reference runtime: `python -m agenthost.protocol.reference_runtime`, and its fault knobs
  (`RuntimeFaults`), plus the hard process-group kill (`kill_process_group`) used to stop runtimes.

This is the lowest layer: it imports nothing else of agenthost.
"""

from agenthost.protocol._errors import INVALID_REQUEST, ErrorKind, classify_error, is_no_rollout, is_thread_not_found
from agenthost.protocol._faults import FAULTS_ENV_VAR, RuntimeFaults, decode_faults, encode_faults, kill_process_group
from agenthost.protocol._jsonrpc import (
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
from agenthost.protocol._messages import (
    ActiveTurn,
    ApprovalRequested,
    ApprovalReset,
    ApprovalResolved,
    Delta,
    HostStatus,
    OptionsDropped,
    RuntimeNotice,
    TurnEvent,
    TurnFinished,
    TurnStarted,
    WorkerStatus,
)

__all__ = [
    "FAULTS_ENV_VAR",
    "INVALID_REQUEST",
    "ActiveTurn",
    "ApprovalRequested",
    "ApprovalReset",
    "ApprovalResolved",
    "Delta",
    "ErrorKind",
    "ErrorResponse",
    "HostStatus",
    "Incoming",
    "LineBuffer",
    "LineTooLongError",
    "Notification",
    "OptionsDropped",
    "ProtocolError",
    "Request",
    "RequestId",
    "Response",
    "RpcError",
    "RuntimeFaults",
    "RuntimeNotice",
    "TurnEvent",
    "TurnFinished",
    "TurnStarted",
    "WorkerStatus",
    "classify_error",
    "decode_faults",
    "decode_line",
    "decode_lines",
    "encode_error",
    "encode_faults",
    "encode_notification",
    "encode_request",
    "encode_response",
    "is_no_rollout",
    "is_thread_not_found",
    "kill_process_group",
]
