"""agenthost: supervised hosting of long-running agent runtimes that never loses a conversation.

The public API is this flat namespace: `AgentHost` (a context manager around the actor system), `HostConfig`, the
events a turn streams (`TurnStarted`, `Delta`, `ApprovalRequested`, `ApprovalResolved`, `ApprovalReset`,
`TurnFinished`; `RuntimeNotice` and `OptionsDropped` for passthrough turns), the status it reports and the errors
it raises. The layers below are subpackages:
`agenthost.protocol` (codec, messages, reference runtime) -> `agenthost.storage` (SQLite + transcripts) ->
`agenthost.actors` (supervision) -> this application layer (embedding API, CLI) -> `agenthost.chaos` (fault
injection, on top). `agenthost.testing` has helpers for tests.

As a library agenthost is silent: it prints nothing unless the application configured structlog.
The names below are imported on first use (PEP 562), so a runtime subprocess that only needs
`agenthost.protocol` does not pay for the actor system, SQLite and structlog at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agenthost._api import AgentHost, HostConfig, HostStartError, RuntimeCallError, TurnHandle
    from agenthost._version import __version__
    from agenthost.actors import (
        HOST_POLICY,
        WORKER_POLICY,
        Backoff,
        HostClosedError,
        HostUnavailableError,
        Intensity,
        NoHealthyWorkerError,
        RecoveryPolicy,
        TurnNotActiveError,
        UnknownApprovalError,
    )
    from agenthost.actors._placement import RayResources
    from agenthost.protocol import (
        ActiveTurn,
        ApprovalRequested,
        ApprovalReset,
        ApprovalResolved,
        Delta,
        HostStatus,
        OptionsDropped,
        RuntimeFaults,
        RuntimeNotice,
        TurnEvent,
        TurnFinished,
        TurnStarted,
        WorkerStatus,
    )
    from agenthost.storage import InvalidIdError, StorageError, StorageFullError, UnknownThreadError

__all__ = [
    "HOST_POLICY",
    "WORKER_POLICY",
    "ActiveTurn",
    "AgentHost",
    "ApprovalRequested",
    "ApprovalReset",
    "ApprovalResolved",
    "Backoff",
    "Delta",
    "HostClosedError",
    "HostConfig",
    "HostStartError",
    "HostStatus",
    "HostUnavailableError",
    "Intensity",
    "InvalidIdError",
    "NoHealthyWorkerError",
    "OptionsDropped",
    "RayResources",
    "RecoveryPolicy",
    "RuntimeCallError",
    "RuntimeFaults",
    "RuntimeNotice",
    "StorageError",
    "StorageFullError",
    "TurnEvent",
    "TurnFinished",
    "TurnHandle",
    "TurnNotActiveError",
    "TurnStarted",
    "UnknownApprovalError",
    "UnknownThreadError",
    "WorkerStatus",
    "__version__",
]

_EXPORTS: dict[str, str] = {
    "AgentHost": "agenthost._api",
    "HostConfig": "agenthost._api",
    "HostStartError": "agenthost._api",
    "RuntimeCallError": "agenthost._api",
    "HostUnavailableError": "agenthost.actors",
    "TurnHandle": "agenthost._api",
    "__version__": "agenthost._version",
    "HOST_POLICY": "agenthost.actors",
    "WORKER_POLICY": "agenthost.actors",
    "Backoff": "agenthost.actors",
    "HostClosedError": "agenthost.actors",
    "Intensity": "agenthost.actors",
    "NoHealthyWorkerError": "agenthost.actors",
    "RecoveryPolicy": "agenthost.actors",
    "RayResources": "agenthost.actors._placement",
    "TurnNotActiveError": "agenthost.actors",
    "UnknownApprovalError": "agenthost.actors",
    "ActiveTurn": "agenthost.protocol",
    "ApprovalRequested": "agenthost.protocol",
    "ApprovalReset": "agenthost.protocol",
    "ApprovalResolved": "agenthost.protocol",
    "Delta": "agenthost.protocol",
    "HostStatus": "agenthost.protocol",
    "OptionsDropped": "agenthost.protocol",
    "RuntimeFaults": "agenthost.protocol",
    "RuntimeNotice": "agenthost.protocol",
    "TurnEvent": "agenthost.protocol",
    "TurnFinished": "agenthost.protocol",
    "TurnStarted": "agenthost.protocol",
    "WorkerStatus": "agenthost.protocol",
    "InvalidIdError": "agenthost.storage",
    "StorageError": "agenthost.storage",
    "StorageFullError": "agenthost.storage",
    "UnknownThreadError": "agenthost.storage",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agenthost' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
