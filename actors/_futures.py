"""The future every ask of a supervised actor answers through: pykka's `Future` on one lock instead of a condition
variable.

Contract (pykka's, for `ThreadingFuture`): `get(timeout=None)` waits for the answer (forever when None; `timeout`
seconds, a past deadline being one look, then `pykka.Timeout`) and returns it, or raises the exception that was
set, with its traceback, on every call; `set(value)` and `set_exception(exc_info)` answer once: a second answer, or
one after a get hook, raises `queue.Full`; a get hook (`set_get_hook`, pykka's combinators) is called by the first
`get` and its result kept. `wait(timeout)` says whether the answer came in time, raising nothing (actors._refs'
`Reply` waits with it). The wait is one acquire of a lock that the answer releases (C code), so an asker wakes
without a Python-level condition variable in between; pykka's own future takes several times the Python calls for
the same handoff, on both sides of every ask.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TYPE_CHECKING, Any

import pykka

if TYPE_CHECKING:
    from pykka._future import GetHookFunc
    from pykka._types import OptExcInfo

__all__ = ["LockFuture"]


class LockFuture(pykka.Future[Any]):
    def __init__(self) -> None:
        super().__init__()
        self._answered = threading.Lock()
        self._answered.acquire()  # released by the answer (and again by each get that took it)
        self._guard = threading.Lock()
        self._done = False
        self._value: Any = None
        self._exc_info: OptExcInfo | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the answer is here within `timeout` seconds (None: wait for it); nothing is raised."""
        if self._done:
            return True
        if not self._answered.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        self._answered.release()
        return True

    def get(self, *, timeout: float | None = None) -> Any:
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        if not self.wait(timeout):
            raise pykka.Timeout(f"{timeout} seconds")
        if self._exc_info is not None:
            exc_type, exc_value, exc_traceback = self._exc_info
            assert exc_type is not None
            if exc_value is None:
                exc_value = exc_type()
            raise exc_value.with_traceback(exc_traceback)
        return self._value

    def set(self, value: Any | None = None) -> None:
        self._answer(value, None)

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        assert exc_info is None or len(exc_info) == 3
        self._answer(None, sys.exc_info() if exc_info is None else exc_info)

    def set_get_hook(self, func: GetHookFunc[Any]) -> None:
        with self._guard:
            if self._done:
                raise queue.Full
            super().set_get_hook(func)

    def _answer(self, value: Any, exc_info: OptExcInfo | None) -> None:
        with self._guard:
            if self._done or self._get_hook is not None:
                raise queue.Full
            self._value, self._exc_info = value, exc_info
            self._done = True
            self._answered.release()
