"""The injected clocks: FakeClock fires in due order at due time; SystemClock fires for real."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agenthost.actors import FakeClock, SystemClock


def test_fake_clock_fires_due_timers_in_order_with_now_at_due_time() -> None:
    clock = FakeClock(start=10.0)
    fired: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: fired.append(("b", clock.now())))
    clock.call_later(1.0, lambda: fired.append(("a", clock.now())))
    clock.call_later(2.0, lambda: fired.append(("c", clock.now())))
    late = clock.call_later(3.0, lambda: fired.append(("late", clock.now())))
    clock.advance(1.5)
    assert fired == [("a", 11.0)]
    late.cancel()
    clock.advance(10.0)
    assert fired == [("a", 11.0), ("b", 12.0), ("c", 12.0)]
    assert clock.now() == 21.5


def test_fake_clock_runs_timers_scheduled_by_timers_within_the_same_advance() -> None:
    clock = FakeClock(start=0.0)
    fired: list[float] = []
    clock.call_later(1.0, lambda: clock.call_later(1.0, lambda: fired.append(clock.now())))
    clock.advance(2.0)
    assert fired == [2.0]


def test_fake_clock_refuses_going_backwards() -> None:
    with pytest.raises(ValueError, match="-1"):
        FakeClock().advance(-1)


@pytest.mark.timeout(10)
def test_system_clock_fires_and_survives_a_failing_callback() -> None:
    clock = SystemClock()
    done = threading.Event()
    clock.call_later(0.0, lambda: 1 / 0)
    clock.call_later(0.01, done.set)
    assert done.wait(5.0)


class _CountingCondition(threading.Condition):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


@pytest.mark.timeout(10)
def test_system_clock_wakes_its_thread_only_for_a_timer_due_before_every_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wake is a thread switch on a turn's path (each turn sets deadlines): the scheduler is woken when a new
    timer is due before every other one (it sleeps until the earliest), and not for one due later."""
    with monkeypatch.context() as patch:
        patch.setattr(threading, "Condition", _CountingCondition)
        clock = SystemClock()
    wakeup = clock._wakeup
    assert isinstance(wakeup, _CountingCondition)
    clock.call_later(60.0, lambda: None)
    assert wakeup.notified == 1  # the first timer: the thread slept with none
    clock.call_later(30.0, lambda: None)
    clock.call_later(45.0, lambda: None)
    assert wakeup.notified == 2  # 30 s comes before 60 s: woken; 45 s after 30 s: not
    done = threading.Event()
    clock.call_later(0.01, done.set)
    assert wakeup.notified == 3
    assert done.wait(5.0)


def test_cancelled_timers_do_not_pile_up_and_release_their_callbacks() -> None:
    """A turn deadline (600 s) is cancelled when the turn ends: 100,000 turns must not keep 100,000 timers."""
    clock = FakeClock()
    live = [clock.call_later(10.0, lambda: None, name="kept") for _ in range(10)]
    for _ in range(100_000):
        payload = bytearray(64)
        clock.call_later(600.0, lambda payload=payload: payload, name="deadline").cancel()
    assert len(clock._timers) < 2 * 1024  # bounded by twice the live timers (at least 1024)
    cancelled = clock.call_later(600.0, lambda: "held", name="deadline")
    cancelled.cancel()
    assert cancelled.callback() is None  # what the callback held is freed at cancel
    assert clock.pending_due_times("kept") == [1010.0] * 10
    fired: list[str] = []
    for timer in live:
        timer.callback = lambda: fired.append("kept")
    clock.advance(700.0)
    assert fired == ["kept"] * 10  # live timers survive every sweep and fire in order
