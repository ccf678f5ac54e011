"""The base of every supervised actor (let it crash, for asks too) and the helpers actors talk to each other with.

Contract:
- `SupervisedActor.handle(message)` is where a subclass handles its messages. An exception whose type is in
  `expected_errors` (plus `HostUnavailableError`, which means another actor crashed and its own supervisor decides)
  is a domain answer: it goes back to the asker and the actor keeps running. ANY other exception, in an ask or a
  tell, is a crash: the actor runs `on_crash(error)` (its own cleanup, e.g. kill its runtime), reports to its
  supervisor (`report_crash`, by default `ChildFailed(child, error)`), and stops at once without handling another
  message: a half-updated actor never serves again. The asker gets `HostUnavailableError` naming the actor and the
  error; asks still queued get `pykka.ActorDeadError`.
- `on_child_start()` is the start-up work, run in the actor's own thread; when it returns the supervisor hears
  `ChildStarted(child)` (`report_started`), and a failure in it is a crash.
- `fault_hook(child_name, message)`, when given, runs before every handler and may raise: the seam through which
  tests and chaos campaigns crash an actor on purpose (`InjectedFault`).
- `unknown_message` raises `UnknownMessageError`: an actor that gets a message it has no handler for crashes.
- `ask(ref, message, timeout_s)` is the one way actors ask each other: every ask has a deadline (default
  ASK_TIMEOUT_S, 30 s) and raises `pykka.Timeout` when it passes, the receiver's own exception when it raised, or
  `pykka.ActorDeadError` when the receiver is gone.
- `tell_quietly` delivers a message or, when the receiver has stopped, drops it and returns False. It is used for
  events whose receiver may legitimately be gone (a stopped worker, a finished shutdown); it never hides a failure
  of a live receiver, because `tell` itself cannot fail for a live one.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable
from typing import Any, NoReturn

import pykka

from agenthost.actors._errors import HostUnavailableError, UnknownMessageError
from agenthost.actors._futures import LockFuture
from agenthost.actors._log import get_logger

__all__ = ["ASK_TIMEOUT_S", "FaultHook", "Reply", "SupervisedActor", "ask", "tell_quietly", "unknown_message"]

ASK_TIMEOUT_S = 30.0  # seconds an actor waits for another actor's reply
FaultHook = Callable[[str, object], None]

_log = get_logger("agenthost.actors")


class Reply:
    """The answer to a told request, waited for by its caller: `set(value)` or `fail(exception)`; the first answer
    stands (a crash that fails a reply already set changes nothing). It is held by a `LockFuture` (actors._futures),
    so a send's caller wakes as an asker does."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future = LockFuture()

    def set(self, value: Any) -> None:
        with contextlib.suppress(queue.Full):  # answered already: the first answer stands
            self._future.set(value)

    def fail(self, error: BaseException) -> None:
        with contextlib.suppress(queue.Full):
            self._future.set_exception((type(error), error, error.__traceback__))

    def wait(self, timeout_s: float) -> Any:
        """The value, or the error raised; TimeoutError when no answer came within `timeout_s`."""
        if not self._future.wait(timeout_s):
            raise TimeoutError(f"no answer within {timeout_s:g} s")
        return self._future.get(timeout=0)


def ask(ref: pykka.ActorRef[Any], message: Any, timeout_s: float = ASK_TIMEOUT_S) -> Any:
    """Ask `ref` and wait at most `timeout_s` seconds for the reply (see the module contract)."""
    return ref.ask(message, block=True, timeout=timeout_s)


def tell_quietly(ref: Any, message: Any) -> bool:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


class SupervisedActor(pykka.ThreadingActor):
    """An actor whose every unexpected failure stops it and reaches its supervisor (see the module contract).

    `child_name` names the actor in events and errors; `supervisor_ref` may be None for an actor started on its own
    (tests), in which case a crash is only logged.
    """

    child_name = "child"
    expected_errors: tuple[type[BaseException], ...] = ()
    use_daemon_thread = True  # an embedding process that exits without shutdown() must not hang on our threads

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        """The future each ask of this actor is answered through (actors._futures: one lock, no condition)."""
        return LockFuture()

    def __init__(self, *, supervisor_ref: Any = None, fault_hook: FaultHook | None = None) -> None:
        super().__init__()
        self.supervisor_ref = supervisor_ref
        self._fault_hook = fault_hook
        self._crashed = False

    # --- hooks for subclasses -----------------------------------------------------------------------------------
    def on_child_start(self) -> None:
        """Start-up work of the child (runs in the actor's thread); an exception is a crash."""

    def handle(self, message: Any) -> Any:
        """Handle one message; the return value is the reply to an ask."""
        unknown_message(self.child_name, message)

    def on_crash(self, error: BaseException) -> None:
        """Clean up after a crash (runs once, in the actor's thread, before the supervisor hears of it)."""

    def report_started(self) -> None:
        """Tell the supervisor the start-up work is done; the default is `ChildStarted(child)`."""
        from agenthost.protocol._messages import ChildStarted

        if self.supervisor_ref is not None:
            tell_quietly(self.supervisor_ref, ChildStarted(child=self.child_name, urn=self.actor_urn))

    def report_crash(self, error: BaseException) -> None:
        """Tell the supervisor; the default is `ChildFailed(child, error)`."""
        from agenthost.protocol._messages import ChildFailed

        if self.supervisor_ref is not None:
            failed = ChildFailed(child=self.child_name, error=repr(error), urn=self.actor_urn)
            tell_quietly(self.supervisor_ref, failed)

    # --- pykka's hooks ------------------------------------------------------------------------------------------
    def on_start(self) -> None:
        try:
            if self._fault_hook is not None:
                self._fault_hook(self.child_name, "start")
            self.on_child_start()
        except Exception as exc:  # noqa: BLE001 - a child that cannot start has crashed: its supervisor decides
            self._crash(exc)
            return
        self.report_started()

    def on_receive(self, message: Any) -> Any:
        try:
            if self._fault_hook is not None:
                self._fault_hook(self.child_name, message)
            return self.handle(message)
        except HostUnavailableError:
            raise
        except self.expected_errors:
            raise
        except Exception as exc:
            error = HostUnavailableError(
                f"agenthost's {self.child_name} crashed handling {type(message).__name__} ({exc!r}); "
                "its supervisor decides what happens next"
            )
            _fail_reply(message, error)
            self._crash(exc)
            raise error from exc

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """pykka calls this after a tell raised; `_crash` already ran for it in `on_receive`."""
        if not self._crashed:
            self._crash(exception_value)

    def _crash(self, error: BaseException) -> None:
        if self._crashed:
            return
        self._crashed = True
        _log.error("actor.crashed", child=self.child_name, error=repr(error))
        try:
            self.on_crash(error)
        finally:
            self.report_crash(error)
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()  # pykka handles no further message; queued asks get ActorDeadError
            self._fail_queued_replies()

    def _fail_queued_replies(self) -> None:
        """Told messages still queued that carry a `Reply`: their callers hear at once (pykka drops tells)."""
        kept = []
        while not self.actor_inbox.empty():  # this thread is the inbox's only reader: get() cannot block
            envelope = self.actor_inbox.get()
            why = f"agenthost's {self.child_name} stopped (crashed) before handling {type(envelope.message).__name__}"
            if not _fail_reply(envelope.message, HostUnavailableError(why)):
                kept.append(envelope)
        for envelope in kept:  # asks and the rest, in their order, for pykka's own clean-up
            self.actor_inbox.put(envelope)


def _fail_reply(message: Any, error: BaseException) -> bool:
    """Fail the `Reply` a told message carries as `reply_to` (True), if it carries one."""
    reply = getattr(message, "reply_to", None)
    if isinstance(reply, Reply):
        reply.fail(error)
        return True
    return False


def unknown_message(receiver: str, message: object) -> NoReturn:
    raise UnknownMessageError(f"{receiver} got an unknown message {type(message).__name__}")
