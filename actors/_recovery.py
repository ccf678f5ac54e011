"""The one recovery policy: Erlang/OTP supervisor restart semantics plus exponential backoff.

Contract
--------
* Pure: no threads, no I/O, no global state, no clock. Every timestamp is a monotonic time in float seconds
  passed in by the caller (the caller owns the clock). Randomness (jitter) comes only from a ``random.Random``
  the caller passes in and seeds; ``rng=None`` means "no jitter" (fully deterministic delays).
* Policy is data: frozen msgspec Structs validated on construction *and* on decode (msgspec runs
  ``__post_init__`` in both cases; on decode the ``PolicyError`` arrives wrapped in ``msgspec.ValidationError``
  with the same message). One validator function per rule; each error names the field and the bad value, e.g.
  ``"backoff.initial_s must be > 0, got -1.0"``.
* ``next_delay(backoff, n)`` for the 1-based attempt ``n`` is ``min(max_s, initial_s * multiplier**(n-1))``; with
  jitter and an rng it is ``delay * (1 + U(-jitter, +jitter))`` clamped to ``[0, max_s]``. Huge attempts never
  overflow: the exponent at which the cap is reached is computed with logarithms first.
* ``admit_restart`` is called when a child has exited and returns a ``Decision``:
  1. a child that stayed up at least ``stable_after_s`` resets its consecutive-attempt counter to 0;
  2. restart timestamps at least ``intensity.period_s`` old leave the sliding window (exactly ``period_s`` old is
     dropped); if admitting one more restart would exceed ``intensity.max_restarts`` -> ``"escalate"``
     (OTP intensity; with ``max_restarts == 0`` every restart escalates);
  3. the next attempt number above ``max_attempts`` -> ``"give_up"``;
  4. otherwise ``"restart"`` after ``next_delay``. Escalate wins over give_up when both apply.
  The decision carries the history to keep if the caller acts on it; its ``last_started_at`` is ``None`` (the
  child is down) until the caller reports the next start with ``record_start``.

Defaults
--------
``WORKER_POLICY`` (== ``RecoveryPolicy()``): backoff 1 s doubling up to 30 s, 8 attempts, so the delays are
1, 2, 4, 8, 16, 30, 30, 30 s, and ``stable_after_s`` 30 s. Its intensity is 10 restarts in 60 s, not the bare
``Intensity()`` default of 5 in 60 s: a child that crashes immediately on every start exits at t = 0, 1, 3, 7, 15,
31, 61, 91 s, so up to 6 exits fall inside one 60 s window; with a limit of 5 the 6th restart (t = 31 s) would
escalate and cut the backoff schedule short. 10 leaves headroom, so intensity only trips on restart storms the
backoff cannot explain (e.g. children that repeatedly stay up past ``stable_after_s`` and then crash).
``HOST_POLICY`` (app-level runtime recovery): delays exactly 1, 2, 4, 8 s, then give up on the 5th exit.

Children and strategies
-----------------------
``ChildSpec`` gives a child its OTP restart type (permanent: always restarted; transient: only after an abnormal
exit; temporary: never) and its shutdown timeout (stop request, then kill). ``SupervisorSpec`` orders the children
(start order; stops run in reverse) and picks the strategy; ``children_to_restart`` says which children one failure
restarts: one_for_one -> the child, one_for_all -> all, rest_for_one -> the child and all started after it.

Retries and thresholds
----------------------
Everything else that decides to try again, or stops trusting a child, is data here too, capped, and each verdict is
one "supervisor.decision" event emitted by the actor that acts on it:

* ``RetryPolicy`` + ``decide_retry(policy, attempt)``: an operation (not a child) tried again. ``PERSIST_RETRY``:
  a turn end the storage refused is written again after 1, 2, 4 ... 30 s, at most 20 times (about 8 minutes); then
  the coordinator gives up and escalates to the host, whose policy decides. ``STALE_THREAD_RETRY``: a ``turn/start``
  answered "thread not found" is retried once, at once, after the thread was resumed (or recreated).
  ``OPTIONS_RETRY``: a ``turn/start`` the runtime refused while it carried per-turn options (model, effort ...) is
  started once more, at once, without them.
* ``WorkerWatch``: when the pool stops trusting a worker. ``max_consecutive_timeouts`` calls in a row that time out
  -> kill. A call whose request the runtime has not even read from its stdin by the call's deadline (the runtime
  stopped reading), or more than ``outbox_limit_bytes`` waiting for its stdin -> kill at once. The pool probes each
  live worker actor every ``probe_interval_s``; ``missed_probes`` probes in a row unanswered -> the worker actor is
  wedged: kill its runtime's process group and decide the exit itself. ``should_kill_for_timeouts`` and
  ``worker_wedged`` are the pure verdicts.
* ``QUARANTINE_RUNTIME_STATE_AT``: when every worker of a fresh pool gave up again (host attempt >= 2), the
  runtimes' own state is moved aside before the next attempt.
"""

from __future__ import annotations

import math
import random
from typing import Literal

import msgspec

from agenthost.actors._checks import PolicyError, above, at_least, finite, instance, integer, one_of

__all__ = [
    "HOST_POLICY",
    "OPTIONS_RETRY",
    "PERSIST_RETRY",
    "QUARANTINE_RUNTIME_STATE_AT",
    "STALE_THREAD_RETRY",
    "WORKER_POLICY",
    "WORKER_WATCH",
    "Backoff",
    "ChildSpec",
    "Decision",
    "Intensity",
    "PolicyError",
    "RecoveryPolicy",
    "RestartHistory",
    "RestartType",
    "RetryPolicy",
    "RetryVerdict",
    "Strategy",
    "SupervisorSpec",
    "WorkerWatch",
    "admit_operator_restart",
    "admit_restart",
    "children_to_restart",
    "decide_retry",
    "next_delay",
    "record_start",
    "schedule",
    "should_kill_for_timeouts",
    "should_restart",
    "worker_wedged",
]


# ---------------------------------------------------------------------------------------------------------------
# One validator per rule


def _check_initial_s(value: float) -> None:
    above("backoff.initial_s", value, 0)


def _check_multiplier(value: float) -> None:
    at_least("backoff.multiplier", value, 1.0)


def _check_max_s(value: float, initial_s: float) -> None:
    if not finite("backoff.max_s", value) >= initial_s:
        raise PolicyError(f"backoff.max_s must be >= backoff.initial_s ({initial_s!r}), got {value!r}")


def _check_jitter(value: float) -> None:
    if not 0.0 <= finite("backoff.jitter", value) < 1.0:
        raise PolicyError(f"backoff.jitter must be in [0, 1), got {value!r}")


def _check_attempt(value: int) -> None:
    if integer("attempt", value) < 1:
        raise PolicyError(f"attempt must be >= 1 (1-based), got {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# Policy data


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff: ``initial_s * multiplier**(attempt-1)`` capped at ``max_s``, optional jitter."""

    initial_s: float = 1.0
    multiplier: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        _check_initial_s(self.initial_s)
        _check_multiplier(self.multiplier)
        _check_max_s(self.max_s, self.initial_s)
        _check_jitter(self.jitter)


class Intensity(msgspec.Struct, frozen=True, kw_only=True):
    """OTP restart intensity: at most ``max_restarts`` restarts within any ``period_s`` seconds."""

    max_restarts: int = 5
    period_s: float = 60.0

    def __post_init__(self) -> None:
        at_least("intensity.max_restarts", self.max_restarts, 0, whole=True)
        above("intensity.period_s", self.period_s, 0)


_WORKER_INTENSITY = Intensity(max_restarts=10, period_s=60.0)


class RecoveryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a supervisor restarts one child: backoff, attempt cap, intensity, stability reset."""

    backoff: Backoff = Backoff()
    max_attempts: int = 8
    intensity: Intensity = _WORKER_INTENSITY
    stable_after_s: float = 30.0

    def __post_init__(self) -> None:
        instance("backoff", self.backoff, Backoff)
        at_least("max_attempts", self.max_attempts, 1, whole=True)
        instance("intensity", self.intensity, Intensity)
        above("stable_after_s", self.stable_after_s, 0)


WORKER_POLICY = RecoveryPolicy()
HOST_POLICY = RecoveryPolicy(backoff=Backoff(initial_s=1.0, multiplier=2.0, max_s=8.0), max_attempts=4)


# ---------------------------------------------------------------------------------------------------------------
# Delays


def _capped_delay(backoff: Backoff, steps: int) -> float:
    """``min(max_s, initial_s * multiplier**steps)`` without overflow for any ``steps >= 0``."""
    initial_s, multiplier, max_s = float(backoff.initial_s), float(backoff.multiplier), float(backoff.max_s)
    if steps == 0 or multiplier == 1.0:
        return initial_s
    steps_to_cap = (math.log(max_s) - math.log(initial_s)) / math.log(multiplier)
    if steps > steps_to_cap + 1:
        return max_s
    try:
        return min(max_s, initial_s * multiplier**steps)
    except OverflowError:  # multiplier**steps alone overflows, but a tiny initial_s can keep the delay below max_s
        log_delay = math.log(initial_s) + steps * math.log(multiplier)
        return max_s if log_delay >= math.log(max_s) else min(max_s, math.exp(log_delay))


def next_delay(backoff: Backoff, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before the 1-based ``attempt``; jittered only when ``rng`` is given and jitter > 0."""
    _check_attempt(attempt)
    delay_s = _capped_delay(backoff, attempt - 1)
    if rng is None or backoff.jitter == 0:
        return delay_s
    jittered_s = delay_s * (1.0 + rng.uniform(-backoff.jitter, backoff.jitter))
    return min(float(backoff.max_s), max(0.0, jittered_s))


def schedule(policy: RecoveryPolicy) -> tuple[float, ...]:
    """The un-jittered delays for attempts ``1..policy.max_attempts``."""
    return tuple(next_delay(policy.backoff, attempt) for attempt in range(1, policy.max_attempts + 1))


# ---------------------------------------------------------------------------------------------------------------
# Decisions


class RestartHistory(msgspec.Struct, frozen=True):
    """What a supervisor remembers about one child between exits."""

    restarts: tuple[float, ...] = ()
    attempt: int = 0
    last_started_at: float | None = None

    def __post_init__(self) -> None:
        at_least("history.attempt", self.attempt, 0, whole=True)


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict on one child exit, plus the history to keep if the caller acts on it."""

    action: Literal["restart", "give_up", "escalate"]
    attempt: int
    delay_s: float
    reason: str
    history: RestartHistory


def _check_now(now: float) -> float:
    return finite("now", now)


def record_start(history: RestartHistory, now: float) -> RestartHistory:
    """The child (re)started at ``now``."""
    return msgspec.structs.replace(history, last_started_at=_check_now(now))


def _was_stable(policy: RecoveryPolicy, history: RestartHistory, now: float) -> bool:
    started_at = history.last_started_at
    return started_at is not None and now - started_at >= policy.stable_after_s


def _restarts_in_window(intensity: Intensity, restarts: tuple[float, ...], now: float) -> tuple[float, ...]:
    return tuple(stamp for stamp in restarts if now - stamp < intensity.period_s)


def _format_seconds(seconds: float) -> str:
    return repr(round(float(seconds), 3))


def admit_restart(
    policy: RecoveryPolicy, history: RestartHistory, now: float, rng: random.Random | None = None
) -> Decision:
    """Decide what to do about a child that exited at ``now`` (see the module docstring for the rules)."""
    now = _check_now(now)
    previous_attempts = 0 if _was_stable(policy, history, now) else history.attempt
    window = _restarts_in_window(policy.intensity, history.restarts, now)
    attempt = previous_attempts + 1
    refused = RestartHistory(restarts=window, attempt=previous_attempts, last_started_at=None)
    intensity = policy.intensity
    if len(window) + 1 > intensity.max_restarts:
        reason = (
            f"intensity exceeded: {len(window) + 1} restarts within {_format_seconds(intensity.period_s)} s"
            f" (max {intensity.max_restarts})"
        )
        return Decision(action="escalate", attempt=attempt, delay_s=0.0, reason=reason, history=refused)
    if attempt > policy.max_attempts:
        reason = f"{policy.max_attempts} attempts exhausted"
        return Decision(action="give_up", attempt=attempt, delay_s=0.0, reason=reason, history=refused)
    delay_s = next_delay(policy.backoff, attempt, rng)
    admitted = RestartHistory(restarts=(*window, now), attempt=attempt, last_started_at=None)
    reason = f"attempt {attempt} of {policy.max_attempts}, backoff {_format_seconds(delay_s)} s"
    return Decision(action="restart", attempt=attempt, delay_s=delay_s, reason=reason, history=admitted)


# ---------------------------------------------------------------------------------------------------------------
# Children and strategies (OTP): which children a failure restarts, and whether an exit restarts at all

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
_RESTART_TYPES = ("permanent", "transient", "temporary")
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


def _check_child_name(value: str) -> None:
    if not isinstance(value, str) or not value or not value.replace("-", "").replace("_", "").isalnum():
        raise PolicyError(f"child.name must be a non-empty [A-Za-z0-9_-] string, got {value!r}")


def _check_unique_children(children: tuple[ChildSpec, ...]) -> None:
    names = [child.name for child in children]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if not children or duplicates:
        raise PolicyError(f"children must be non-empty with unique names, got {names!r}")


class ChildSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One supervised child: its name, OTP restart type and how long a stop may take before a kill."""

    name: str
    restart: RestartType = "permanent"
    shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        _check_child_name(self.name)
        one_of(f"child {self.name!r} restart", self.restart, _RESTART_TYPES)
        above(f"child {self.name!r} shutdown_timeout_s", self.shutdown_timeout_s, 0)


class SupervisorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A supervisor: its ordered children (start order; stop is the reverse), strategy and policy."""

    strategy: Strategy
    children: tuple[ChildSpec, ...]
    policy: RecoveryPolicy = RecoveryPolicy()

    def __post_init__(self) -> None:
        one_of("strategy", self.strategy, _STRATEGIES)
        _check_unique_children(self.children)
        instance("policy", self.policy, RecoveryPolicy)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(child.name for child in self.children)


def should_restart(restart: RestartType, abnormal: bool) -> bool:
    """OTP restart types: permanent always, transient only after an abnormal exit, temporary never."""
    one_of("restart", restart, _RESTART_TYPES)
    return restart == "permanent" or (restart == "transient" and abnormal)


def children_to_restart(spec: SupervisorSpec, failed: str) -> tuple[str, ...]:
    """The children a failure of `failed` restarts, in start order (stop them in the reverse order first).

    one_for_one: just `failed`; one_for_all: every child; rest_for_one: `failed` and every child started after it.
    """
    names = spec.names
    if failed not in names:
        raise PolicyError(f"unknown child {failed!r}; children are {names!r}")
    if spec.strategy == "one_for_one":
        return (failed,)
    if spec.strategy == "one_for_all":
        return names
    return names[names.index(failed) :]


# ---------------------------------------------------------------------------------------------------------------
# Retries of operations, and the thresholds at which a supervisor stops trusting a child


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How often an operation is tried again: at most `max_attempts` retries, each after `next_delay(backoff, n)`
    (or at once when `backoff` is None)."""

    backoff: Backoff | None = Backoff()
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if self.backoff is not None:
            instance("backoff", self.backoff, Backoff)
        at_least("max_attempts", self.max_attempts, 1, whole=True)


class RetryVerdict(msgspec.Struct, frozen=True, kw_only=True):
    action: Literal["retry", "give_up"]
    attempt: int
    delay_s: float
    reason: str


def decide_retry(policy: RetryPolicy, attempt: int) -> RetryVerdict:
    """The verdict on the 1-based retry `attempt`: "retry" after its delay, or "give_up" past the cap."""
    _check_attempt(attempt)
    if attempt > policy.max_attempts:
        return RetryVerdict(
            action="give_up", attempt=attempt, delay_s=0.0, reason=f"{policy.max_attempts} retries exhausted"
        )
    delay_s = 0.0 if policy.backoff is None else next_delay(policy.backoff, attempt)
    reason = f"retry {attempt} of {policy.max_attempts}, after {_format_seconds(delay_s)} s"
    return RetryVerdict(action="retry", attempt=attempt, delay_s=delay_s, reason=reason)


def admit_operator_restart(history: RestartHistory) -> Decision:
    """An operator asked for a worker to be replaced: restart at once; it counts as no failed attempt (the
    attempt counter and the intensity window are kept as they were)."""
    return Decision(
        action="restart", attempt=history.attempt, delay_s=0.0, reason="requested by the operator", history=history
    )


PERSIST_RETRY = RetryPolicy(backoff=Backoff(initial_s=1.0, multiplier=2.0, max_s=30.0), max_attempts=20)
STALE_THREAD_RETRY = RetryPolicy(backoff=None, max_attempts=1)
OPTIONS_RETRY = RetryPolicy(backoff=None, max_attempts=1)
QUARANTINE_RUNTIME_STATE_AT = 2  # host attempt at which a fresh pool that failed again gets its runtime state moved


class WorkerWatch(msgspec.Struct, frozen=True, kw_only=True):
    """When the pool stops trusting a worker (see the module contract)."""

    max_consecutive_timeouts: int = 3
    outbox_limit_bytes: int = 64 * 1024 * 1024
    probe_interval_s: float = 5.0
    missed_probes: int = 3

    def __post_init__(self) -> None:
        at_least("max_consecutive_timeouts", self.max_consecutive_timeouts, 1, whole=True)
        at_least("outbox_limit_bytes", self.outbox_limit_bytes, 1, whole=True)
        above("probe_interval_s", self.probe_interval_s, 0)
        at_least("missed_probes", self.missed_probes, 1, whole=True)


WORKER_WATCH = WorkerWatch()


def should_kill_for_timeouts(watch: WorkerWatch, consecutive_timeouts: int) -> bool:
    """True once `max_consecutive_timeouts` calls in a row timed out."""
    return consecutive_timeouts >= watch.max_consecutive_timeouts


def worker_wedged(watch: WorkerWatch, missed_probes: int) -> bool:
    """True once `missed_probes` probes in a row went unanswered."""
    return missed_probes >= watch.missed_probes
