"""Tests for the pure recovery policy (actors._recovery): schedules, decisions on a fake timeline, validators,
decode-time validation, and hypothesis properties. Time is plain floats; randomness comes from printed seeds."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenthost.actors._recovery import (
    HOST_POLICY,
    PERSIST_RETRY,
    QUARANTINE_RUNTIME_STATE_AT,
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
    admit_operator_restart,
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

# A policy whose attempt cap and stability reset never interfere with intensity tests.
NO_CAP = dict(max_attempts=1000, stable_after_s=1e9)


def crash_loop(policy: RecoveryPolicy, exits: int, uptime_s: float = 0.25, start_at: float = 0.0) -> list[Decision]:
    """Start a child at ``start_at``; it exits ``uptime_s`` after every start; restart after each granted delay."""
    now = start_at
    history = record_start(RestartHistory(), now)
    decisions: list[Decision] = []
    for _ in range(exits):
        now += uptime_s
        decision = admit_restart(policy, history, now)
        decisions.append(decision)
        history = decision.history
        if decision.action != "restart":
            break
        now += decision.delay_s
        history = record_start(history, now)
    return decisions


# ---------------------------------------------------------------------------------------------------------------
# Schedules


def test_host_policy_schedule_is_exactly_1_2_4_8() -> None:
    assert schedule(HOST_POLICY) == (1.0, 2.0, 4.0, 8.0)


def test_worker_policy_schedule_is_exactly_the_capped_doubling() -> None:
    assert schedule(WORKER_POLICY) == (1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0)


def test_worker_policy_is_the_default_policy() -> None:
    assert RecoveryPolicy() == WORKER_POLICY


@pytest.mark.parametrize("policy", [WORKER_POLICY, HOST_POLICY], ids=["worker", "host"])
def test_instant_crash_loop_runs_the_whole_schedule_without_escalating(policy: RecoveryPolicy) -> None:
    decisions = crash_loop(policy, exits=policy.max_attempts + 1, uptime_s=0.0)
    assert [d.delay_s for d in decisions[:-1]] == list(schedule(policy))
    assert all(d.action == "restart" for d in decisions[:-1])
    assert decisions[-1].action == "give_up"


def test_next_delay_huge_attempt_is_capped_without_overflow() -> None:
    assert next_delay(Backoff(), 10**400) == 30.0
    assert next_delay(Backoff(initial_s=1e-300, multiplier=1e300, max_s=1e300), 3) == 1e300


def test_next_delay_with_multiplier_one_is_constant() -> None:
    backoff = Backoff(initial_s=2.5, multiplier=1.0, max_s=10.0)
    assert [next_delay(backoff, n) for n in (1, 2, 50, 10**50)] == [2.5, 2.5, 2.5, 2.5]


@pytest.mark.parametrize("attempt", [0, -3])
def test_next_delay_rejects_attempt_below_one(attempt: int) -> None:
    with pytest.raises(PolicyError, match=rf"attempt must be >= 1 .*got {attempt}"):
        next_delay(Backoff(), attempt)


def test_next_delay_jitter_is_seeded_and_bounded_and_absent_without_rng() -> None:
    seed = 20240611
    print(f"seed={seed}")
    backoff = Backoff(initial_s=4.0, multiplier=2.0, max_s=30.0, jitter=0.5)
    first = [next_delay(backoff, 2, random.Random(seed)) for _ in range(3)]
    assert first[0] == first[1] == first[2]  # same seed, same draw
    rng = random.Random(seed)
    draws = [next_delay(backoff, 2, rng) for _ in range(200)]
    assert all(4.0 <= d <= 12.0 for d in draws)
    assert len(set(draws)) > 1
    assert next_delay(backoff, 2) == 8.0


# ---------------------------------------------------------------------------------------------------------------
# Decisions on a fake timeline


def test_host_policy_restarts_after_1_2_4_8_then_gives_up_on_fifth_exit() -> None:
    decisions = crash_loop(HOST_POLICY, exits=10)
    assert [d.action for d in decisions] == ["restart"] * 4 + ["give_up"]
    assert [d.delay_s for d in decisions[:4]] == [1.0, 2.0, 4.0, 8.0]
    assert [d.attempt for d in decisions] == [1, 2, 3, 4, 5]
    assert decisions[2].reason == "attempt 3 of 4, backoff 4.0 s"
    give_up = decisions[-1]
    assert give_up.delay_s == 0.0
    assert give_up.reason == "4 attempts exhausted"
    assert give_up.history.attempt == 4


def test_restart_decision_records_the_restart_and_clears_the_start_time() -> None:
    history = record_start(RestartHistory(), 100.0)
    assert history.last_started_at == 100.0
    decision = admit_restart(HOST_POLICY, history, 101.0)
    assert decision.history == RestartHistory(restarts=(101.0,), attempt=1, last_started_at=None)


def test_stable_period_resets_the_attempt_counter() -> None:
    policy = RecoveryPolicy(backoff=Backoff(initial_s=1.0, max_s=8.0), max_attempts=4, stable_after_s=30.0)
    decisions = crash_loop(policy, exits=3)
    assert [d.attempt for d in decisions] == [1, 2, 3]
    history = record_start(decisions[-1].history, 100.0)
    stable_exit = admit_restart(policy, history, 130.0)  # up exactly stable_after_s
    assert (stable_exit.action, stable_exit.attempt, stable_exit.delay_s) == ("restart", 1, 1.0)


def test_exit_just_before_stable_keeps_counting() -> None:
    policy = RecoveryPolicy(max_attempts=4, stable_after_s=30.0)
    history = RestartHistory(attempt=3, last_started_at=100.0)
    decision = admit_restart(policy, history, 129.999)
    assert (decision.action, decision.attempt, decision.delay_s) == ("restart", 4, 8.0)


def test_exit_without_recorded_start_never_counts_as_stable() -> None:
    # The restart was granted but the child never reported a start: a later exit must not reset attempts.
    history = admit_restart(HOST_POLICY, record_start(RestartHistory(), 0.0), 1000.0).history
    assert history.attempt == 1
    decision = admit_restart(HOST_POLICY, history, 5000.0)
    assert decision.attempt == 2


def test_intensity_window_escalates_on_one_restart_too_many() -> None:
    policy = RecoveryPolicy(intensity=Intensity(max_restarts=3, period_s=10.0), **NO_CAP)
    history = RestartHistory()
    for now in (0.0, 1.0, 2.0):
        decision = admit_restart(policy, history, now)
        assert decision.action == "restart"
        history = decision.history
    escalate = admit_restart(policy, history, 3.0)
    assert escalate.action == "escalate"
    assert escalate.attempt == 4
    assert escalate.delay_s == 0.0
    assert escalate.reason == "intensity exceeded: 4 restarts within 10.0 s (max 3)"
    assert escalate.history.restarts == (0.0, 1.0, 2.0)


@pytest.mark.parametrize(("now", "action"), [(9.999, "escalate"), (10.0, "restart"), (10.001, "restart")])
def test_intensity_window_boundary_drops_timestamp_exactly_period_old(now: float, action: str) -> None:
    policy = RecoveryPolicy(intensity=Intensity(max_restarts=3, period_s=10.0), **NO_CAP)
    history = RestartHistory(restarts=(0.0, 1.0, 2.0), attempt=3)
    decision = admit_restart(policy, history, now)
    assert decision.action == action
    if action == "restart":
        assert decision.history.restarts == (1.0, 2.0, now)


def test_escalate_beats_give_up_when_both_apply() -> None:
    policy = RecoveryPolicy(max_attempts=1, intensity=Intensity(max_restarts=1, period_s=60.0))
    first = admit_restart(policy, RestartHistory(), 0.0)
    assert first.action == "restart"
    second = admit_restart(policy, record_start(first.history, 1.0), 2.0)
    assert second.action == "escalate"
    assert second.attempt == 2
    assert second.reason == "intensity exceeded: 2 restarts within 60.0 s (max 1)"


def test_intensity_zero_escalates_every_restart() -> None:
    policy = RecoveryPolicy(intensity=Intensity(max_restarts=0, period_s=5.0))
    for now in (0.0, 1000.0):
        decision = admit_restart(policy, RestartHistory(), now)
        assert decision.action == "escalate"
        assert decision.attempt == 1
        assert decision.reason == "intensity exceeded: 1 restarts within 5.0 s (max 0)"


@pytest.mark.parametrize("now", [float("nan"), float("inf")])
def test_admit_restart_rejects_non_finite_time(now: float) -> None:
    with pytest.raises(PolicyError, match="now must be a finite number"):
        admit_restart(HOST_POLICY, RestartHistory(), now)


def test_history_rejects_negative_attempt() -> None:
    with pytest.raises(PolicyError, match=r"history\.attempt must be >= 0, got -1"):
        RestartHistory(attempt=-1)
    with pytest.raises(PolicyError, match=r"history\.attempt must be an int, got 1\.0"):
        RestartHistory(attempt=1.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Validators: one case per rule; the message names the field and the bad value


RULES = [
    (Backoff, {"initial_s": -1.0}, "backoff.initial_s must be > 0, got -1.0"),
    (Backoff, {"initial_s": 0.0}, "backoff.initial_s must be > 0, got 0.0"),
    (Backoff, {"initial_s": float("nan")}, "backoff.initial_s must be a finite number, got nan"),
    (Backoff, {"multiplier": 0.5}, "backoff.multiplier must be >= 1.0, got 0.5"),
    (Backoff, {"multiplier": float("inf")}, "backoff.multiplier must be a finite number, got inf"),
    (Backoff, {"initial_s": 5.0, "max_s": 4.0}, "backoff.max_s must be >= backoff.initial_s (5.0), got 4.0"),
    (Backoff, {"jitter": 1.0}, "backoff.jitter must be in [0, 1), got 1.0"),
    (Backoff, {"jitter": -0.1}, "backoff.jitter must be in [0, 1), got -0.1"),
    (Backoff, {"jitter": "x"}, "backoff.jitter must be a finite number, got 'x'"),
    (Intensity, {"max_restarts": -1}, "intensity.max_restarts must be >= 0, got -1"),
    (Intensity, {"max_restarts": 2.5}, "intensity.max_restarts must be an int, got 2.5"),
    (Intensity, {"period_s": 0.0}, "intensity.period_s must be > 0, got 0.0"),
    (RecoveryPolicy, {"max_attempts": 0}, "max_attempts must be >= 1, got 0"),
    (RecoveryPolicy, {"max_attempts": True}, "max_attempts must be an int, got True"),
    (RecoveryPolicy, {"stable_after_s": -5.0}, "stable_after_s must be > 0, got -5.0"),
    (RecoveryPolicy, {"backoff": {"initial_s": 1}}, "backoff must be of type Backoff, got {'initial_s': 1}"),
    (RecoveryPolicy, {"intensity": None}, "intensity must be of type Intensity, got None"),
]


@pytest.mark.parametrize(("struct", "kwargs", "message"), RULES, ids=[r[2].split(" ")[0] for r in RULES])
def test_validator_names_field_and_value(struct: type, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        struct(**kwargs)
    assert str(caught.value) == message


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


DECODE_CASES = [
    (b'{"backoff": {"initial_s": -1}}', "backoff.initial_s must be > 0, got -1.0"),
    (b'{"backoff": {"initial_s": 4, "max_s": 2}}', "backoff.max_s must be >= backoff.initial_s (4.0), got 2.0"),
    (b'{"backoff": {"jitter": 1.5}}', "backoff.jitter must be in [0, 1), got 1.5"),
    (b'{"intensity": {"max_restarts": -2}}', "intensity.max_restarts must be >= 0, got -2"),
    (b'{"intensity": {"period_s": 0}}', "intensity.period_s must be > 0, got 0.0"),
    (b'{"max_attempts": 0}', "max_attempts must be >= 1, got 0"),
    (b'{"stable_after_s": 0}', "stable_after_s must be > 0, got 0.0"),
]


@pytest.mark.parametrize(("raw", "message"), DECODE_CASES)
def test_decoding_runs_the_same_validation(raw: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(raw, type=RecoveryPolicy)
    assert message in str(caught.value)
    assert isinstance(caught.value.__cause__, PolicyError)


def test_valid_policy_round_trips_through_json() -> None:
    assert msgspec.json.decode(msgspec.json.encode(HOST_POLICY), type=RecoveryPolicy) == HOST_POLICY
    assert msgspec.json.decode(b"{}", type=RecoveryPolicy) == WORKER_POLICY


# ---------------------------------------------------------------------------------------------------------------
# Properties

backoffs = st.builds(
    lambda initial_s, multiplier, factor, jitter: Backoff(
        initial_s=initial_s, multiplier=multiplier, max_s=initial_s * factor, jitter=jitter
    ),
    st.floats(min_value=1e-3, max_value=1e3),
    st.floats(min_value=1.0, max_value=100.0),
    st.floats(min_value=1.0, max_value=1e4),
    st.floats(min_value=0.0, max_value=0.99),
)
attempts = st.one_of(st.integers(min_value=1, max_value=200), st.integers(min_value=1, max_value=10**500))
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@given(backoff=backoffs, attempt=attempts, seed=seeds)
def test_next_delay_stays_within_zero_and_max(backoff: Backoff, attempt: int, seed: int) -> None:
    print(f"seed={seed}")
    delay_s = next_delay(backoff, attempt, random.Random(seed))
    assert 0.0 <= delay_s <= backoff.max_s


@given(backoff=backoffs, attempt=attempts)
def test_next_delay_is_non_decreasing_without_jitter(backoff: Backoff, attempt: int) -> None:
    plain = msgspec.structs.replace(backoff, jitter=0.0)
    assert next_delay(plain, attempt) <= next_delay(plain, attempt + 1)


policies = st.builds(
    lambda backoff, max_attempts, max_restarts, period_s, stable_after_s: RecoveryPolicy(
        backoff=backoff,
        max_attempts=max_attempts,
        intensity=Intensity(max_restarts=max_restarts, period_s=period_s),
        stable_after_s=stable_after_s,
    ),
    backoffs,
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=0, max_value=8),
    st.floats(min_value=0.5, max_value=100.0),
    st.floats(min_value=0.5, max_value=100.0),
)
# Per exit: (how long the child stayed up, how long an outer supervisor waits after a give_up/escalate).
lifetimes = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=120.0), st.floats(min_value=0.0, max_value=300.0)),
    max_size=60,
)


@settings(max_examples=200)
@given(policy=policies, lives=lifetimes, seed=seeds)
def test_admit_restart_respects_attempt_cap_and_intensity(
    policy: RecoveryPolicy, lives: list[tuple[float, float]], seed: int
) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    now = 0.0
    history = record_start(RestartHistory(), now)
    restart_times: list[float] = []
    for uptime_s, outer_wait_s in lives:
        now += uptime_s
        decision = admit_restart(policy, history, now, rng)
        history = decision.history
        if decision.action == "restart":
            assert 1 <= decision.attempt <= policy.max_attempts
            assert 0.0 <= decision.delay_s <= policy.backoff.max_s
            restart_times.append(now)
            now += decision.delay_s
        else:
            assert decision.delay_s == 0.0
            now += outer_wait_s
        history = record_start(history, now)
    period_s = policy.intensity.period_s
    for at in restart_times:
        in_window = [t for t in restart_times if t <= at and at - t < period_s]
        assert len(in_window) <= policy.intensity.max_restarts


# ---------------------------------------------------------------------------------------------------------------
# Pinned by mutation testing (mutation/README.md): each test fails on a change the tests above let through


def test_next_delay_below_the_cap_when_only_the_power_overflows() -> None:
    # 10.0**309 overflows a float, but 1e-300 * 10**309 = 1e9 is below the cap: the delay is 1e9, not max_s.
    backoff = Backoff(initial_s=1e-300, multiplier=10.0, max_s=1e10)
    assert next_delay(backoff, 309) == pytest.approx(1e8, rel=1e-9)
    assert next_delay(backoff, 310) == pytest.approx(1e9, rel=1e-9)
    assert next_delay(backoff, 311) == 1e10
    assert next_delay(backoff, 10**6) == 1e10
    huge = Backoff(initial_s=1e-300, multiplier=1e300, max_s=1e300)
    assert [next_delay(huge, n) for n in (2, 3, 4, 5)] == [1.0, 1e300, 1e300, 1e300]


def test_exact_delays_for_sub_second_and_long_schedules() -> None:
    backoff = Backoff(initial_s=0.1, multiplier=2.0, max_s=1.0)
    assert schedule(RecoveryPolicy(backoff=backoff, max_attempts=6)) == (0.1, 0.2, 0.4, 0.8, 1.0, 1.0)
    assert next_delay(Backoff(initial_s=1.0, multiplier=2.0, max_s=1000.0), 10) == 512.0


def test_schedule_of_an_odd_number_of_attempts() -> None:
    assert schedule(RecoveryPolicy(max_attempts=3)) == (1.0, 2.0, 4.0)


def test_jitter_is_exactly_the_documented_formula_and_spans_both_sides() -> None:
    backoff = Backoff(initial_s=4.0, multiplier=2.0, max_s=30.0, jitter=0.5)
    for seed in range(20):
        expected = 8.0 * (1.0 + random.Random(seed).uniform(-0.5, 0.5))
        assert next_delay(backoff, 2, random.Random(seed)) == expected
    rng = random.Random(7)
    draws = [next_delay(backoff, 2, rng) for _ in range(200)]
    assert min(draws) < 6.0 and max(draws) > 10.0


def test_jittered_delay_is_clamped_to_max_s() -> None:
    backoff = Backoff(initial_s=20.0, multiplier=2.0, max_s=30.0, jitter=0.9)
    rng = random.Random(11)
    draws = [next_delay(backoff, 2, rng) for _ in range(200)]  # 30 s * (1 +- 0.9)
    assert max(draws) == 30.0 and min(draws) < 30.0


def test_jittered_sub_second_delay_is_not_rounded_up() -> None:
    backoff = Backoff(initial_s=0.1, multiplier=2.0, max_s=1.0, jitter=0.5)
    rng = random.Random(3)
    assert all(0.05 <= next_delay(backoff, 1, rng) <= 0.15 for _ in range(50))


def test_reason_rounds_a_jittered_delay_to_milliseconds() -> None:
    policy = RecoveryPolicy(backoff=Backoff(initial_s=4.0, jitter=0.5))
    decision = admit_restart(policy, RestartHistory(), 0.0, random.Random(1))
    assert len(repr(decision.delay_s).split(".")[1]) > 3  # this seed gives a delay with more than 3 decimals
    assert decision.reason == f"attempt 1 of 8, backoff {round(decision.delay_s, 3)!r} s"


def test_documented_defaults() -> None:
    assert (Intensity().max_restarts, Intensity().period_s) == (5, 60.0)
    assert WORKER_POLICY.intensity == Intensity(max_restarts=10, period_s=60.0)
    assert WORKER_POLICY.stable_after_s == 30.0 and WORKER_POLICY.max_attempts == 8
    assert Backoff() == Backoff(initial_s=1.0, multiplier=2.0, max_s=30.0, jitter=0.0)


def test_worker_policy_admits_ten_restarts_per_sixty_seconds() -> None:
    policy = msgspec.structs.replace(WORKER_POLICY, max_attempts=100)
    history = RestartHistory()
    for now in range(10):
        decision = admit_restart(policy, history, float(now))
        assert decision.action == "restart", now
        history = decision.history
    assert admit_restart(policy, history, 10.0).action == "escalate"
    assert admit_restart(policy, history, 60.0).action == "restart"  # the restart at t=0 left the window


def test_child_up_well_past_stable_after_resets_attempts() -> None:
    history = RestartHistory(attempt=3, last_started_at=100.0)
    decision = admit_restart(RecoveryPolicy(stable_after_s=30.0), history, 1000.0)
    assert (decision.action, decision.attempt, decision.delay_s) == ("restart", 1, 1.0)


def test_intensity_rejects_a_negative_period() -> None:
    with pytest.raises(PolicyError, match=r"intensity\.period_s must be > 0, got -1\.0"):
        Intensity(period_s=-1.0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Backoff(1.0),
        lambda: Intensity(5),
        lambda: RecoveryPolicy(Backoff()),
        lambda: Decision("restart", 1, 1.0, "r", RestartHistory()),
        lambda: ChildSpec("w"),
        lambda: SupervisorSpec("one_for_one", (ChildSpec(name="w"),)),
        lambda: RetryPolicy(None),
        lambda: RetryVerdict("retry", 1, 1.0, "r"),
        lambda: WorkerWatch(3),
    ],
    ids=[
        "Backoff",
        "Intensity",
        "RecoveryPolicy",
        "Decision",
        "ChildSpec",
        "SupervisorSpec",
        "RetryPolicy",
        "RetryVerdict",
        "WorkerWatch",
    ],
)
def test_policy_structs_are_keyword_only(build) -> None:
    with pytest.raises(TypeError):
        build()


def test_decisions_specs_and_policies_are_immutable() -> None:
    child = ChildSpec(name="w")
    values: list[tuple[object, str]] = [
        (admit_restart(WORKER_POLICY, RestartHistory(), 0.0), "attempt"),
        (child, "name"),
        (SupervisorSpec(strategy="one_for_one", children=(child,)), "strategy"),
        (PERSIST_RETRY, "max_attempts"),
        (decide_retry(PERSIST_RETRY, 1), "attempt"),
        (WORKER_WATCH, "missed_probes"),
    ]
    for value, field in values:
        with pytest.raises(AttributeError):
            setattr(value, field, getattr(value, field))
        hash(value)


def test_child_name_of_the_wrong_type() -> None:
    with pytest.raises(PolicyError, match=r"child\.name must be"):
        ChildSpec(name=5)  # type: ignore[arg-type]


def test_shutdown_timeout_accepts_sub_second_and_defaults_to_five() -> None:
    assert ChildSpec(name="w", shutdown_timeout_s=0.5).shutdown_timeout_s == 0.5
    assert ChildSpec(name="w").shutdown_timeout_s == 5.0


def test_restart_types_and_strategies_compare_by_value() -> None:
    def fresh(text: str) -> str:  # a value read from argv or JSON is an equal string, not the interned literal
        return "".join(list(text))

    assert fresh("permanent") is not "permanent"  # noqa: F632  (the point of the test)
    assert should_restart(fresh("permanent"), False) is True  # type: ignore[arg-type]
    assert should_restart(fresh("transient"), True) is True  # type: ignore[arg-type]
    children = (ChildSpec(name="a"), ChildSpec(name="b"))
    one = SupervisorSpec(strategy=fresh("one_for_one"), children=children)  # type: ignore[arg-type]
    every = SupervisorSpec(strategy=fresh("one_for_all"), children=children)  # type: ignore[arg-type]
    assert children_to_restart(one, "a") == ("a",)
    assert children_to_restart(every, "b") == ("a", "b")


# --- retries of operations, and the thresholds at which a supervisor stops trusting a child -------------------


def test_persist_retry_waits_1_2_4_up_to_30_s_and_gives_up_after_20() -> None:
    verdicts = [decide_retry(PERSIST_RETRY, n) for n in range(1, 22)]
    assert [v.delay_s for v in verdicts[:20]] == [1.0, 2.0, 4.0, 8.0, 16.0] + [30.0] * 15
    assert all(v.action == "retry" for v in verdicts[:20])
    assert [v.attempt for v in verdicts] == list(range(1, 22))
    assert verdicts[2].reason == "retry 3 of 20, after 4.0 s"
    assert verdicts[20] == RetryVerdict(action="give_up", attempt=21, delay_s=0.0, reason="20 retries exhausted")


def test_stale_thread_retry_is_once_and_at_once() -> None:
    assert decide_retry(STALE_THREAD_RETRY, 1) == RetryVerdict(
        action="retry", attempt=1, delay_s=0.0, reason="retry 1 of 1, after 0.0 s"
    )
    assert decide_retry(STALE_THREAD_RETRY, 2).action == "give_up"


def test_retry_policy_defaults_and_validation() -> None:
    assert RetryPolicy() == RetryPolicy(backoff=Backoff(), max_attempts=8)
    assert [decide_retry(RetryPolicy(), n).action for n in (8, 9)] == ["retry", "give_up"]
    with pytest.raises(PolicyError, match="max_attempts must be >= 1, got 0"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(PolicyError, match=r"max_attempts must be an int, got 2\.0"):
        RetryPolicy(max_attempts=2.0)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=r"backoff must be of type Backoff, got 1\.0"):
        RetryPolicy(backoff=1.0)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=r"attempt must be >= 1 .*got 0"):
        decide_retry(PERSIST_RETRY, 0)


def test_operator_restart_is_at_once_and_keeps_the_history() -> None:
    history = RestartHistory(restarts=(1.0, 2.0), attempt=2, last_started_at=None)
    assert admit_operator_restart(history) == Decision(
        action="restart", attempt=2, delay_s=0.0, reason="requested by the operator", history=history
    )


def test_worker_watch_defaults_and_thresholds() -> None:
    assert WorkerWatch() == WORKER_WATCH
    assert (
        WORKER_WATCH.max_consecutive_timeouts,
        WORKER_WATCH.outbox_limit_bytes,
        WORKER_WATCH.probe_interval_s,
        WORKER_WATCH.missed_probes,
    ) == (3, 64 * 1024 * 1024, 5.0, 3)
    assert [should_kill_for_timeouts(WORKER_WATCH, n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert [worker_wedged(WORKER_WATCH, n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert QUARANTINE_RUNTIME_STATE_AT == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_consecutive_timeouts": 0}, "max_consecutive_timeouts must be >= 1, got 0"),
        ({"outbox_limit_bytes": 0}, "outbox_limit_bytes must be >= 1, got 0"),
        ({"probe_interval_s": 0.0}, "probe_interval_s must be > 0, got 0.0"),
        ({"missed_probes": 0}, "missed_probes must be >= 1, got 0"),
        ({"missed_probes": 1.5}, "missed_probes must be an int, got 1.5"),
        ({"max_consecutive_timeouts": 2.0}, "max_consecutive_timeouts must be an int, got 2.0"),
        ({"outbox_limit_bytes": 1.5}, "outbox_limit_bytes must be an int, got 1.5"),
    ],
)
def test_worker_watch_validators(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        WorkerWatch(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert WorkerWatch(max_consecutive_timeouts=1, outbox_limit_bytes=1, probe_interval_s=0.1, missed_probes=1)
