"""Children and strategies as data: OTP restart types, which children a failure restarts, validation."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agenthost.actors import HOST_POLICY, ChildSpec, PolicyError, SupervisorSpec, children_to_restart, should_restart
from agenthost.actors._host import host_spec

NAMES = ("persistence", "mapping", "turns", "pool")


def _spec(strategy: str) -> SupervisorSpec:
    return SupervisorSpec(strategy=strategy, children=tuple(ChildSpec(name=n) for n in NAMES))


@pytest.mark.parametrize(
    ("strategy", "failed", "expected"),
    [
        ("one_for_one", "mapping", ("mapping",)),
        ("one_for_all", "mapping", NAMES),
        ("rest_for_one", "persistence", NAMES),
        ("rest_for_one", "mapping", ("mapping", "turns", "pool")),
        ("rest_for_one", "pool", ("pool",)),
    ],
)
def test_children_to_restart(strategy: str, failed: str, expected: tuple[str, ...]) -> None:
    assert children_to_restart(_spec(strategy), failed) == expected


@given(st.sampled_from(("one_for_one", "one_for_all", "rest_for_one")), st.sampled_from(NAMES))
def test_restarted_children_keep_start_order_and_include_the_failed_one(strategy: str, failed: str) -> None:
    chosen = children_to_restart(_spec(strategy), failed)
    assert failed in chosen
    assert list(chosen) == [name for name in NAMES if name in chosen]


def test_unknown_child_is_named() -> None:
    with pytest.raises(PolicyError, match="'nope'"):
        children_to_restart(_spec("rest_for_one"), "nope")


@pytest.mark.parametrize(
    ("restart", "abnormal", "expected"),
    [
        ("permanent", False, True),
        ("permanent", True, True),
        ("transient", False, False),
        ("transient", True, True),
        ("temporary", False, False),
        ("temporary", True, False),
    ],
)
def test_should_restart_follows_otp_restart_types(restart: str, abnormal: bool, expected: bool) -> None:
    assert should_restart(restart, abnormal) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ChildSpec(name=""), "child.name"),
        (lambda: ChildSpec(name="a/b"), "'a/b'"),
        (lambda: ChildSpec(name="w", restart="sometimes"), "restart must be one of .* got 'sometimes'"),
        (lambda: ChildSpec(name="w", shutdown_timeout_s=0), "shutdown_timeout_s must be > 0, got 0"),
        (lambda: SupervisorSpec(strategy="simple_one_for_one", children=(ChildSpec(name="a"),)), "strategy must be"),
        (lambda: SupervisorSpec(strategy="one_for_one", children=()), r"children must be non-empty"),
        (
            lambda: SupervisorSpec(strategy="one_for_one", children=(ChildSpec(name="a"), ChildSpec(name="a"))),
            r"unique names, got \['a', 'a'\]",
        ),
    ],
)
def test_validators_name_the_field_and_value(build, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        build()


def test_specs_validate_when_decoded_too() -> None:
    with pytest.raises(msgspec.ValidationError, match="shutdown_timeout_s must be > 0"):
        msgspec.json.decode(b'{"name": "w", "shutdown_timeout_s": -1}', type=ChildSpec)


def test_host_refuses_one_for_one_and_orders_its_children() -> None:
    with pytest.raises(ValueError, match="one_for_one"):
        host_spec("one_for_one", HOST_POLICY, 5.0)
    spec = host_spec("rest_for_one", HOST_POLICY, 2.5)
    assert spec.names == NAMES and {c.shutdown_timeout_s for c in spec.children} == {2.5}
