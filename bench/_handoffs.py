"""What the thread hand-offs of a host turn cost alone: the part of figure 3's own time that no work of the actors
can remove while the turn crosses the same actors.

A turn through the host crosses threads on its own time (outside codex's, bench/_codex.py) in two legs, each hand-off
one actor (or the caller) woken by a message or an answer:
- `BEGIN_PATH` (send -> turn/start written): the caller asks the coordinator ("turns"), which asks the persistence
  actor for the durable begin, gets its answer, and tells the worker, which writes turn/start to the runtime's stdin;
- `END_PATH` (turn/completed read -> `wait` returns): the stdout reader thread tells the worker, which tells the
  coordinator, which tells the persistence actor the turn's end, whose commit is answered to the coordinator, which
  tells the caller.
tests/test_bench_handoffs.py checks on a real host that these are the actors its turn wakes, in this order.

`measure(turns, idle_s, seconds)` passes one message along a ring of the same number of hand-offs, made of
`SupervisedActor`s (the host's actor class, with its `LockFuture` asks) that do nothing else: per turn the begin
leg (caller -> 4 actors; timed to the 4th receiving it, as the host's begin ends at the worker's write), then
`idle_s` asleep (codex's turn: the host's threads sleep as long, which is what makes their next wake-ups cold on a
virtual machine), then the end leg (a 5-hand-off ring back to the caller; timed to the caller waking), then the next
turn at once (the bench's caller sends its next turn as soon as the last one ends). Each turn's two legs, in
seconds, are appended to `seconds`. One warm-up turn is not timed. The durable floor (bench/_codex.py
`measure_durable_direct`) plus this is the least own time a host of these actors doing this durable work can have.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pykka

from agenthost.actors._futures import LockFuture
from agenthost.actors._refs import SupervisedActor

__all__ = ["BEGIN_PATH", "END_PATH", "HANDOFFS", "measure"]

BEGIN_PATH = ("turns", "persistence", "turns", "worker")  # who wakes, in order, from send to turn/start written
END_PATH = ("worker", "turns", "persistence", "turns", "caller")  # from turn/completed read to wait returning
HANDOFFS = len(BEGIN_PATH) + len(END_PATH)
_TIMEOUT_S = 10.0


class _Baton(msgspec.Struct, frozen=True, kw_only=True):
    """The message passed along: how many receipts it has left, and the future the last one answers."""

    left: int
    arrived: LockFuture  # answered with the perf_counter of the last receipt


class _Next(msgspec.Struct, frozen=True):
    """Closes the ring: the actor to pass batons to."""

    ref: Any


class _Relay(SupervisedActor):
    """One actor of the ring: passes the baton on to the next, or answers it when no hand-off is left."""

    child_name = "relay"

    def __init__(self) -> None:
        super().__init__()
        self.next_ref: pykka.ActorRef[Any] | None = None

    def handle(self, message: Any) -> Any:
        if isinstance(message, _Next):
            self.next_ref = message.ref
            return None
        assert isinstance(message, _Baton) and self.next_ref is not None
        if message.left == 1:
            message.arrived.set(time.perf_counter())
        else:
            self.next_ref.tell(_Baton(left=message.left - 1, arrived=message.arrived))
        return None


def measure(turns: int, idle_s: float, seconds: list[float]) -> None:
    """Time `turns` turns of hand-offs (see the module docstring); each turn's seconds go to `seconds`."""
    relays = [_Relay.start() for _ in BEGIN_PATH]
    try:
        for index, ref in enumerate(relays):
            ref.ask(_Next(relays[(index + 1) % len(relays)]), timeout=_TIMEOUT_S)
        first = relays[0]
        for turn in range(turns + 1):
            begin = _leg(first, len(BEGIN_PATH), caller_wakes=False)
            time.sleep(idle_s)
            end = _leg(first, len(END_PATH) - 1, caller_wakes=True)
            if turn:
                seconds.append(begin + end)
    finally:
        for ref in relays:
            ref.stop()


def _leg(first: pykka.ActorRef[Any], receipts: int, *, caller_wakes: bool) -> float:
    """Seconds from telling the ring's first actor to its `receipts`-th receipt, or, when `caller_wakes`, to this
    thread waking on that receipt's answer."""
    arrived = LockFuture()
    started = time.perf_counter()
    first.tell(_Baton(left=receipts, arrived=arrived))
    stamped = arrived.get(timeout=_TIMEOUT_S)
    return (time.perf_counter() if caller_wakes else stamped) - started
