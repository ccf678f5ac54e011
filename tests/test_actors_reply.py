"""`Reply` (actors._refs), the answer a told request's caller waits for: the first answer stands, a wait that times out
changes nothing, and every waiter gets the answer."""

from __future__ import annotations

import threading

import pytest

from agenthost.actors._refs import Reply

pytestmark = pytest.mark.timeout(10)


def test_the_first_answer_stands() -> None:
    value_first = Reply()
    value_first.set("accepted")
    value_first.fail(RuntimeError("crashed later"))
    value_first.set("again")
    assert value_first.wait(0.0) == "accepted"
    assert value_first.wait(0.0) == "accepted"  # a wait takes nothing away

    error_first = Reply()
    error_first.fail(ValueError("refused"))
    error_first.set("accepted")
    for _ in range(2):
        with pytest.raises(ValueError, match="refused"):
            error_first.wait(0.0)


def test_a_wait_that_times_out_raises_and_the_answer_still_comes() -> None:
    reply = Reply()
    with pytest.raises(TimeoutError, match=r"no answer within 0\.01 s"):
        reply.wait(0.01)
    with pytest.raises(TimeoutError):
        reply.wait(-1.0)  # a deadline already past: one look, no wait
    reply.set(7)
    assert reply.wait(0.0) == 7


def test_every_waiting_thread_gets_the_answer() -> None:
    reply = Reply()
    got: list[object] = []
    started = threading.Barrier(5)

    def waiter() -> None:
        started.wait(5.0)
        got.append(reply.wait(5.0))

    threads = [threading.Thread(target=waiter) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait(5.0)  # (the waiters may or may not be blocked yet: either way each gets the answer)
    reply.set("done")
    for thread in threads:
        thread.join(5.0)
    assert got == ["done"] * 4
