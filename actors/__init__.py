"""agenthost's supervision layer: the actors and the one recovery policy.

The actors are a root host supervisor, a pool supervisor with one worker actor per runtime process, a
thread-mapping actor, a turn coordinator and a persistence actor. Every restart decision comes from the one
recovery policy (`RecoveryPolicy`, `admit_restart`, `next_delay`) and is made by a supervisor. Applications use
`agenthost.AgentHost`, which starts and drives these actors.
"""

from agenthost.actors._clock import Clock, FakeClock, SystemClock, Timer
from agenthost.actors._errors import (
    HostClosedError,
    HostUnavailableError,
    InjectedFault,
    InvalidDecisionError,
    NoHealthyWorkerError,
    TurnNotActiveError,
    UnknownApprovalError,
)
from agenthost.actors._log import Event, EventLogger, Listener, subscribe
from agenthost.actors._recovery import (
    HOST_POLICY,
    PERSIST_RETRY,
    STALE_THREAD_RETRY,
    WORKER_POLICY,
    WORKER_WATCH,
    Backoff,
    ChildSpec,
    Decision,
    Intensity,
    PolicyError,
    RecoveryPolicy,
    RestartHistory,
    RetryPolicy,
    RetryVerdict,
    SupervisorSpec,
    WorkerWatch,
    admit_restart,
    children_to_restart,
    decide_retry,
    next_delay,
    record_start,
    schedule,
    should_kill_for_timeouts,
    should_restart,
    worker_wedged,
)

__all__ = [
    "HOST_POLICY",
    "PERSIST_RETRY",
    "STALE_THREAD_RETRY",
    "WORKER_POLICY",
    "WORKER_WATCH",
    "Backoff",
    "ChildSpec",
    "Clock",
    "Decision",
    "Event",
    "EventLogger",
    "FakeClock",
    "HostClosedError",
    "HostUnavailableError",
    "InjectedFault",
    "Intensity",
    "InvalidDecisionError",
    "Listener",
    "NoHealthyWorkerError",
    "PolicyError",
    "RecoveryPolicy",
    "RestartHistory",
    "RetryPolicy",
    "RetryVerdict",
    "SupervisorSpec",
    "SystemClock",
    "Timer",
    "TurnNotActiveError",
    "UnknownApprovalError",
    "WorkerWatch",
    "admit_restart",
    "children_to_restart",
    "decide_retry",
    "next_delay",
    "record_start",
    "schedule",
    "should_kill_for_timeouts",
    "should_restart",
    "subscribe",
    "worker_wedged",
]
