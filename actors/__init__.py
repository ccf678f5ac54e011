"""agenthost's actors and its embedding API.

`AgentHost` (a context manager) is the entry point for applications; the actors behind it are a root host
supervisor, a pool supervisor with one worker actor per runtime process, a thread-mapping actor, a turn
coordinator and a persistence actor. Every restart decision comes from the one recovery policy
(`RecoveryPolicy`, `admit_restart`, `next_delay`) and is made by a supervisor.
"""

from actors._api import AgentHost, HostConfig, HostStartError, HostUnavailableError, TurnHandle
from actors._clock import Clock, FakeClock, SystemClock, Timer
from actors._turns import HostClosedError, UnknownApprovalError, UnknownTurnError
from actors._mapping import NoHealthyWorkerError
from actors._recovery import (
    HOST_POLICY,
    ChildSpec,
    SupervisorSpec,
    children_to_restart,
    should_restart,
    WORKER_POLICY,
    Backoff,
    Decision,
    Intensity,
    PolicyError,
    RecoveryPolicy,
    RestartHistory,
    admit_restart,
    next_delay,
    record_start,
    schedule,
)

__all__ = [
    "AgentHost", "HostConfig", "HostStartError", "HostUnavailableError", "TurnHandle",
    "Clock", "FakeClock", "SystemClock", "Timer",
    "HostClosedError", "UnknownApprovalError", "UnknownTurnError", "NoHealthyWorkerError",
    "HOST_POLICY", "WORKER_POLICY", "ChildSpec", "SupervisorSpec", "children_to_restart", "should_restart", "Backoff", "Decision", "Intensity", "PolicyError", "RecoveryPolicy",
    "RestartHistory", "admit_restart", "next_delay", "record_start", "schedule",
]
