"""Figure 3's verdict (bench/__main__.py): judged on own times, never on whole turns of two codex processes."""

from __future__ import annotations

import pytest

from bench.__main__ import CodexSamples, codex_overhead, codex_overhead_met


def _samples(*, host: float, direct: float, host_own: float, direct_own: float) -> CodexSamples:
    """Seconds per turn, three turns each (the p50 is the middle one)."""
    return CodexSamples(
        direct=[direct] * 3,
        direct_own=[direct_own] * 3,
        direct_again=[direct + 0.005] * 3,
        host=[host] * 3,
        host_own=[host_own] * 3,
        durable_own=[0.0012] * 3,
        handoffs=[0.0004, 0.0005, 0.0009],
    )


def test_whole_turns_within_the_target_but_own_times_over_it_is_not_met() -> None:
    codex = codex_overhead(_samples(host=0.0510, direct=0.0500, host_own=0.0025, direct_own=0.00001))
    assert codex is not None
    assert codex.added_p50_ms == pytest.approx(1.0)  # whole turns would say "met"
    assert codex.own_added_p50_ms == pytest.approx(2.49)
    assert codex.durable_own_p50_ms == pytest.approx(1.2)
    assert codex.handoffs_p50_ms == pytest.approx(0.5)
    assert codex.least_own_ms == pytest.approx(1.7)  # the durable floor plus the hand-offs' p50
    assert codex_overhead_met(codex) is False


def test_whole_turns_over_the_target_but_own_times_within_it_is_met() -> None:
    codex = codex_overhead(_samples(host=0.0600, direct=0.0500, host_own=0.0019, direct_own=0.00001))
    assert codex is not None
    assert codex.added_p50_ms == pytest.approx(10.0)  # a slower codex process, not the host
    assert codex_overhead_met(codex) is True


def test_no_codex_run_gives_no_figure() -> None:
    assert codex_overhead(CodexSamples()) is None
