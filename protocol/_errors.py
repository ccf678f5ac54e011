"""Classification of runtime error responses: the ONE place that reads runtime error message text.

Contract: `codex app-server` answers every request-level failure with code -32600 (INVALID_REQUEST), so the kind of
failure is only in the message text. Observed prefixes:
- "thread not found: <id>"                 -> the runtime no longer holds the thread (e.g. it restarted):
                                              STALE_THREAD; recover with `thread/resume {threadId}`.
- "no rollout found for thread id <id>"    -> the thread is gone for good (ephemeral, other state dir, deleted):
                                              THREAD_GONE.
Anything else (other codes, other messages) is OTHER. Matching is exact and case-sensitive on the prefix.
"""

from __future__ import annotations

import enum

from agenthost.protocol._jsonrpc import RpcError

__all__ = ["INVALID_REQUEST", "ErrorKind", "classify_error", "is_no_rollout", "is_thread_not_found"]

INVALID_REQUEST = -32600
_THREAD_NOT_FOUND_PREFIX = "thread not found:"
_NO_ROLLOUT_PREFIX = "no rollout found for thread id"


class ErrorKind(enum.StrEnum):
    STALE_THREAD = "stale_thread"
    THREAD_GONE = "thread_gone"
    OTHER = "other"


def is_thread_not_found(err: RpcError) -> bool:
    """True for -32600 "thread not found: ..." (the runtime does not hold this thread)."""
    return err.code == INVALID_REQUEST and err.message.startswith(_THREAD_NOT_FOUND_PREFIX)


def is_no_rollout(err: RpcError) -> bool:
    """True for -32600 "no rollout found for thread id ..." (the thread cannot be resumed)."""
    return err.code == INVALID_REQUEST and err.message.startswith(_NO_ROLLOUT_PREFIX)


def classify_error(err: RpcError) -> ErrorKind:
    if is_thread_not_found(err):
        return ErrorKind.STALE_THREAD
    if is_no_rollout(err):
        return ErrorKind.THREAD_GONE
    return ErrorKind.OTHER
