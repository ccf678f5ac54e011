"""`LockFuture` (actors._futures), the future every ask of a supervised actor is answered through, keeps pykka's
`ThreadingFuture` contract: one answer, kept; exceptions raised on every get; timeouts; get hooks."""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

import pykka
import pytest

from agenthost.actors._futures import LockFuture
from agenthost.actors._refs import SupervisedActor, ask

pytestmark = pytest.mark.timeout(10)


def test_the_answer_is_kept_and_a_second_answer_is_refused() -> None:
    future = LockFuture()
    future.set("begun")
    assert future.get(timeout=0) == "begun" and future.get() == "begun"
    with pytest.raises(queue.Full):
        future.set("again")
    with pytest.raises(queue.Full):
        future.set_exception((ValueError, ValueError("late"), None))
    with pytest.raises(queue.Full):
        future.set_get_hook(lambda timeout: "hooked")
    assert future.get(timeout=0) == "begun"


def test_an_exception_is_raised_with_its_traceback_on_every_get() -> None:
    future = LockFuture()
    try:
        raise KeyError("thread-1")
    except KeyError:
        future.set_exception()  # from the exception being handled, as pykka does
        traceback = sys.exc_info()[2]
    for _ in range(2):
        with pytest.raises(KeyError, match="thread-1") as raised:
            future.get(timeout=0)
        assert raised.value.__traceback__ is not None
        assert traceback is not None and raised.value.__traceback__.tb_frame is traceback.tb_frame
    typed_only = LockFuture()
    typed_only.set_exception((RuntimeError, None, None))
    with pytest.raises(RuntimeError):
        typed_only.get()


def test_a_get_past_its_timeout_raises_and_the_answer_still_comes() -> None:
    future = LockFuture()
    with pytest.raises(pykka.Timeout, match=r"0\.01 seconds"):
        future.get(timeout=0.01)
    with pytest.raises(pykka.Timeout):
        future.get(timeout=-1.0)  # a deadline already past: one look
    got: list[Any] = []
    waiters = [threading.Thread(target=lambda: got.append(future.get(timeout=5.0))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    threading.Timer(0.05, future.set, args=("late",)).start()
    for waiter in waiters:
        waiter.join(5.0)
    assert got == ["late"] * 3  # every waiter wakes when the answer comes


def test_get_takes_its_timeout_by_keyword_and_without_one_waits_for_the_answer() -> None:
    future = LockFuture()
    positional: Any = future.get
    with pytest.raises(TypeError):
        positional(0.5)  # keyword-only, as pykka's
    threading.Timer(1.3, future.set, args=("slow",)).start()
    assert future.get() == "slow"  # no timeout: longer than any default a bug could slip in


def test_a_deadline_already_past_does_not_wait_for_an_answer_on_its_way() -> None:
    future = LockFuture()
    threading.Timer(0.3, future.set, args=("soon",)).start()
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0)  # one look, now: the answer 0.3 s away is not waited for
    assert future.get(timeout=5.0) == "soon"


def test_a_get_hook_is_called_once_and_its_result_kept() -> None:
    calls: list[float | None] = []
    future = LockFuture()
    future.set_get_hook(lambda timeout: calls.append(timeout) or "from hook")
    assert future.get(timeout=1.0) == "from hook" and future.get() == "from hook"
    assert calls == [1.0]
    with pytest.raises(queue.Full):
        future.set("too late")


class _Echo(SupervisedActor):
    expected_errors = (KeyError,)

    def handle(self, message: Any) -> Any:
        if message == "missing":
            raise KeyError("no such thread")
        return ("echo", message)


def test_asks_of_a_supervised_actor_are_answered_through_it() -> None:
    ref = _Echo.start()
    try:
        future = ref.ask("hello", block=False)
        assert isinstance(future, LockFuture)
        assert future.get(timeout=5.0) == ("echo", "hello")
        with pytest.raises(KeyError, match="no such thread"):
            ask(ref, "missing", timeout_s=5.0)
        assert ask(ref, "still up", timeout_s=5.0) == ("echo", "still up")
    finally:
        ref.stop()
    with pytest.raises(pykka.ActorDeadError):
        ask(ref, "after the stop", timeout_s=5.0)
