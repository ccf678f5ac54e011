"""Supervision and turn invariant checkers, over the recorded `History` (typed events of actors._events).

Contract (each checker returns a list of `Violation`; none means the invariant held):
- `check_restarts(history, worker_policy, host_policy, tolerance_s)`: every "supervisor.decision" "restart" has
  1 <= attempt <= max_attempts and delay_s == schedule(policy)[attempt-1] (no jitter); a decision past the cap is
  never "restart". For the pool, the next "pool.worker_restarting" of that worker in the same host incarnation
  (with no other decision about it in between) comes at or after decision time + delay_s - `tolerance_s`
  (default 0.002 s). The decision time is the pool's own clock reading, `decided_at`, when the event carries it:
  the event is stamped when it is emitted, after the timer was armed, and on a loaded machine that can be
  milliseconds later (a thread switch in between). An event without it counts from its stamp.
  ("restart_caps_and_delays").
- `check_deadlines(history, turn_timeout_s, slack_s)`: every "turns.dispatched" turn ends in the same host
  incarnation ("turns.finished", "turns.reconciled_pending" or a TurnFinished event) within turn_timeout_s +
  slack_s, unless that incarnation was killed (then the storage check covers it) or failed (its storage refused
  every write) and a later incarnation settled the turn ("turns.reconciled_pending") ("turn_deadlines").
- `check_final_status(history)`: in the last "final_status" note no thread is pinned to a worker that is not ready
  or degraded ("pins_healthy").
- `check_events_recorded(history)`: the checkers are not blind ("events_recorded"). When the campaign acknowledged
  sends, the history holds TurnDispatched and TurnEnded events and forwarded TurnFinished turn events; when a fault
  that forces a supervisor decision was injected (DECISION_FAULTS, or an ActorCrash that fired) it holds at least
  one SupervisorDecision; when the pool decided a restart it holds a WorkerRestarting. An event that was renamed or
  is no longer emitted would otherwise switch a check off silently.
- `check_liveness(history)`: the campaign's last phase ("liveness_begin", then one "liveness" entry per thread)
  sent one new message on every campaign thread after every fault was healed and the host settled; each must have
  completed within the recorded bound ("liveness"). A campaign with acknowledged sends but no liveness phase, or a
  thread without a result, is a violation too.
- `liveness_bound_s(worker_policy, host_policy, turn_timeout_s, slack_s)` is that bound, the policies' worst-case
  recovery time: sum(schedule(worker_policy)) + sum(schedule(host_policy)) + turn_timeout_s + slack_s. A worker
  that was still backing off waits at most every delay of its schedule, the host's children at most every delay of
  theirs, and the turn itself at most its deadline; `slack_s` (default LIVENESS_SLACK_S, 5 s) covers one runtime
  start and the persistence round trips of a turn on a loaded machine.
"""

from __future__ import annotations

from typing import Any

from agenthost.actors._events import (
    PendingReconciled,
    SupervisorDecision,
    TurnDispatched,
    TurnEnded,
    WorkerRestarting,
)
from agenthost.chaos._history import Entry, History
from agenthost.chaos._violations import Violation, violation

__all__ = [
    "DECISION_FAULTS",
    "LIVENESS_SLACK_S",
    "check_deadlines",
    "check_events_recorded",
    "check_final_status",
    "check_liveness",
    "check_restarts",
    "liveness_bound_s",
]

LIVENESS_SLACK_S = 5.0
DECISION_FAULTS = frozenset({"WorkerKill9", "CrashOnStart"})  # each kills a live runtime: the pool must decide


def check_restarts(
    history: History, worker_policy: Any, host_policy: Any, tolerance_s: float = 0.002
) -> list[Violation]:
    from agenthost.actors import schedule

    delays = {"pool": schedule(worker_policy), "host": schedule(host_policy)}
    caps = {"pool": worker_policy.max_attempts, "host": host_policy.max_attempts}
    decisions = [(e, d) for e, d in history.typed(SupervisorDecision) if d.supervisor in delays]
    violations = [v for e, d in decisions for v in _check_decision(history, e, d, delays, caps)]
    for (entry, decision), start in _pool_restarts(history):
        decided = entry.t if decision.decided_at is None else decision.decided_at  # (the event is stamped later)
        due = decided + decision.delay_s
        if start.t < due - tolerance_s:
            violations.append(
                violation(
                    history,
                    "restart_caps_and_delays",
                    f"{decision.child} restarted {due - start.t:.4f} s before its delay of {decision.delay_s} s "
                    f"(decision at {decided:.4f}, start at {start.t:.4f}, host {entry.host})",
                    start.t,
                )
            )
    return violations


def _check_decision(
    history: History,
    entry: Entry,
    decision: SupervisorDecision,
    delays: dict[str, tuple[float, ...]],
    caps: dict[str, int],
) -> list[Violation]:
    supervisor = decision.supervisor
    if decision.decision != "restart":
        return []
    attempt, delay_s = decision.attempt, decision.delay_s
    who = f"{supervisor} decision for {decision.child} (host {entry.host}, t={entry.t:.4f})"
    if not 1 <= attempt <= caps[supervisor]:
        return [
            violation(
                history,
                "restart_caps_and_delays",
                f"{who}: restart attempt {attempt} is outside 1..{caps[supervisor]}",
                entry.t,
            )
        ]
    expected = delays[supervisor][attempt - 1]
    if abs(delay_s - expected) > 1e-9:
        return [
            violation(
                history,
                "restart_caps_and_delays",
                f"{who}: attempt {attempt} delay {delay_s} s, schedule says {expected} s",
                entry.t,
            )
        ]
    return []


def _pool_restarts(history: History) -> list[tuple[tuple[Entry, SupervisorDecision], Entry]]:
    """(pool "restart" decision, the WorkerRestarting that acted on it), in history (emission) order: the first
    start of that worker recorded after the decision, in the same host, before any other decision on it."""
    pairs = []
    waiting: dict[tuple[int, str], tuple[Entry, SupervisorDecision]] = {}  # (host, child) -> open restart decision
    for entry, event in history.typed_many(SupervisorDecision, WorkerRestarting):
        if isinstance(event, SupervisorDecision) and event.supervisor == "pool":
            key = (entry.host, event.child)
            if event.decision == "restart":
                waiting[key] = (entry, event)
            elif event.decision in ("give_up", "escalate", "no_restart"):
                waiting.pop(key, None)
        elif isinstance(event, WorkerRestarting):
            decision = waiting.pop((entry.host, f"worker-{event.worker}"), None)
            if decision is not None:
                pairs.append((decision, entry))
    return pairs


def _killed_hosts(history: History) -> set[int]:
    return {e.host for e in history.entries("host_kill")}


def check_deadlines(history: History, turn_timeout_s: float, slack_s: float = 2.0) -> list[Violation]:
    reconciled = history.typed(PendingReconciled)
    finished: dict[tuple[int, Any], Entry] = {(e.host, event.turn): e for e, event in reconciled}
    finished.update(
        {(e.host, e.data.get("turn_id")): e for e in history.entries("turn") if e.data.get("event") == "TurnFinished"}
    )
    finished.update({(e.host, event.turn): e for e, event in history.typed(TurnEnded)})
    killed = _killed_hosts(history)
    failed = {e.host for e in history.entries("host_stop") if not e.data.get("clean", True)}
    settled_later = {(e.host, event.turn) for e, event in reconciled}
    violations = []
    for entry, dispatched in history.typed(TurnDispatched):
        key = (entry.host, dispatched.turn)
        end = finished.get(key)
        if end is None:
            # a host that FAILED (its storage refused every write) cannot settle its turns; the next host does
            if entry.host in failed and any(t == key[1] and h > entry.host for h, t in settled_later):
                continue
            if entry.host not in killed:
                violations.append(
                    violation(
                        history,
                        "turn_deadlines",
                        f"turn {key[1]} dispatched at {entry.t:.3f} (host {entry.host}) never finished",
                        entry.t,
                    )
                )
            continue
        took = end.t - entry.t
        if took > turn_timeout_s + slack_s:
            during = [
                f"{e.data.get('fault')} #{e.data.get('index')}"
                for e in history.entries("fault")
                if e.data.get("injected") and entry.t <= e.t <= end.t
            ]
            violations.append(
                violation(
                    history,
                    "turn_deadlines",
                    f"turn {key[1]} took {took:.3f} s, over its deadline {turn_timeout_s:g} s + {slack_s:g} s "
                    f"(host {entry.host}; faults injected meanwhile: {', '.join(during) or 'none'})",
                    end.t,
                )
            )
    return violations


def check_final_status(history: History) -> list[Violation]:
    finals = [e for e in history.entries("note") if e.data.get("what") == "final_status"]
    if not finals:
        return []
    status = finals[-1].data
    states = {int(w["worker_id"]): w["state"] for w in status.get("workers", [])}
    violations = []
    for thread_id, worker_id in sorted(status.get("pins", {}).items()):
        state = states.get(int(worker_id))
        if state not in ("ready", "degraded"):
            violations.append(
                violation(
                    history,
                    "pins_healthy",
                    f"thread {thread_id} is pinned to worker {worker_id} in state {state} at the end",
                    finals[-1].t,
                )
            )
    return violations


# --- the checkers are not blind -----------------------------------------------------------------------------------
def check_events_recorded(history: History) -> list[Violation]:
    if not history.entries("send"):
        return []
    missing = []
    if not history.typed(TurnDispatched):
        missing.append("no TurnDispatched (turns.dispatched) event")
    if not history.typed(TurnEnded):
        missing.append("no TurnEnded (turns.finished) event")
    if not any(e.data.get("event") == "TurnFinished" for e in history.entries("turn")):
        missing.append("no TurnFinished event forwarded from a turn handle")
    forcing = [e for e in history.entries("fault") if e.data.get("injected") and e.data.get("fault") in DECISION_FAULTS]
    fired = [e for e in history.entries("note") if e.data.get("what") == "actor_crash_fired"]
    decisions = history.typed(SupervisorDecision)
    if (forcing or fired) and not decisions:
        cause = f"{len(forcing)} injected {sorted(DECISION_FAULTS)} faults and {len(fired)} fired actor crashes"
        missing.append(f"no SupervisorDecision (supervisor.decision) event after {cause}")
    pool_restarts = [d for _, d in decisions if d.supervisor == "pool" and d.decision == "restart"]
    if pool_restarts and not history.typed(WorkerRestarting):
        missing.append(f"no WorkerRestarting (pool.worker_restarting) event after {len(pool_restarts)} pool restarts")
    sends = len(history.entries("send"))
    return [
        violation(
            history,
            "events_recorded",
            f"{sends} sends acknowledged, but the history holds {what}: a checker that consumes it would be blind",
        )
        for what in missing
    ]


# --- liveness -------------------------------------------------------------------------------------------------------
def liveness_bound_s(
    worker_policy: Any, host_policy: Any, turn_timeout_s: float, slack_s: float = LIVENESS_SLACK_S
) -> float:
    """The policies' worst-case recovery time (see the module contract)."""
    from agenthost.actors import schedule

    return round(sum(schedule(worker_policy)) + sum(schedule(host_policy)) + turn_timeout_s + slack_s, 6)


def check_liveness(history: History) -> list[Violation]:
    begins = history.entries("liveness_begin")
    if not begins:
        if history.entries("send"):
            return [violation(history, "liveness", "the campaign acknowledged sends but ran no liveness phase")]
        return []
    begin = begins[-1]
    bound_s = float(begin.data["bound_s"])
    results = {str(e.data["thread_id"]): e for e in history.entries("liveness") if e.t >= begin.t}
    violations = []
    for thread_id in begin.data["threads"]:
        result = results.get(thread_id)
        if result is None:
            message = f"thread {thread_id}: no new turn was recorded after healing (bound {bound_s:g} s)"
            violations.append(violation(history, "liveness", message, begin.t))
            continue
        status, took_s = result.data.get("status"), result.data.get("took_s")
        if status != "completed" or took_s is None or float(took_s) > bound_s:
            message = (
                f"thread {thread_id}: the new turn {result.data.get('turn_id')} after healing ended "
                f"{status} after {took_s} s; it must complete within {bound_s:g} s "
                f"({result.data.get('error') or 'no error'})"
            )
            violations.append(violation(history, "liveness", message, begin.t))
    return violations
