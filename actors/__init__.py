"""agenthost's supervision layer: the actors and the one recovery policy.

The actors are a root host supervisor, a pool supervisor with one worker actor per runtime process, a
thread-mapping actor, a turn coordinator and a persistence actor. Every restart decision comes from the one
recovery policy (`RecoveryPolicy`, `admit_restart`, `next_delay`) and is made by a supervisor. Applications use
`agenthost.AgentHost`, which starts and drives these actors.
"""

from agenthost.actors._clock import Clock, FakeClock, SystemClock, Timer
from agenthost.actors._log import Event, EventLogger, Listener, subscribe
from agenthost.actors._mapping import NoHealthyWorkerError
from agenthost.actors._recovery import (
    HOST_POLICY,
    WORKER_POLICY,
    Backoff,
    ChildSpec,
    Decision,
    Intensity,
    PolicyError,
    RecoveryPolicy,
    RestartHistory,
    SupervisorSpec,
    admit_restart,
    children_to_restart,
    next_delay,
    record_start,
    schedule,
    should_restart,
)
from agenthost.actors._turns import HostClosedError, TurnNotActiveError, UnknownApprovalError

__all__ = [
    "HOST_POLICY",
    "WORKER_POLICY",
    "Backoff",
    "ChildSpec",
    "Clock",
    "Decision",
    "Event",
    "EventLogger",
    "FakeClock",
    "HostClosedError",
    "Intensity",
    "Listener",
    "NoHealthyWorkerError",
    "PolicyError",
    "RecoveryPolicy",
    "RestartHistory",
    "SupervisorSpec",
    "SystemClock",
    "Timer",
    "TurnNotActiveError",
    "UnknownApprovalError",
    "admit_restart",
    "children_to_restart",
    "next_delay",
    "record_start",
    "schedule",
    "should_restart",
    "subscribe",
]
