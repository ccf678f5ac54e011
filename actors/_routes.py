"""The turn coordinator's side of the thread-mapping actor: resolves, runtime thread id updates and worker events,
with the routes the mapping gave remembered so that a thread's next turn does not ask again.

Contract:
- `resolve(effects, updates)`: per `Resolve` effect a `Resolved` (worker id, runtime thread id) or `Unresolved`
  (no worker up), in order. The mapping actor is asked, in one `ResolveThreads` (updates first, in order), when an
  update waits or any of the threads has no remembered route; otherwise the remembered routes answer and nothing
  is asked. `resolve([], updates)` sends the updates alone.
- Remembered: the route the mapping answered for a thread, until the coordinator tells the mapping something that
  can change it: an update of that thread's runtime thread id (forgotten before the ask that carries it) or any
  worker event (`worker_event`: up, down or health; every route is forgotten before it is asked). This is exact
  because the coordinator is the mapping's only writer and the mapping answers a thread pinned to a worker that is
  up with that pin, changing nothing. The memory cannot outlive the mapping state it copies: a mapping actor
  that restarts restarts the coordinator with it (the host's strategies are rest_for_one and one_for_all).
- At most `ROUTES_KEPT` threads are remembered; the one resolved longest ago goes first.
- Asks go through the coordinator's `ask` (its deadline rules); a refusal escapes to the coordinator as before.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

from agenthost.actors import _turnevents as ev
from agenthost.actors._errors import NoHealthyWorkerError
from agenthost.protocol._messages import BindRuntimeThread, InvalidateRuntimeThread, ResolveThreads

__all__ = ["ROUTES_KEPT", "Router"]

ROUTES_KEPT = 4096  # threads whose route the coordinator remembers


class Router:
    def __init__(self, ask: Callable[[Any], Any]) -> None:
        self._ask = ask  # asks the mapping actor, with the coordinator's deadline rules
        self._routes: collections.OrderedDict[str, tuple[int, str | None]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._routes)

    def resolve(self, effects: Sequence[ev.Resolve], updates: Sequence[ev.MappingUpdate]) -> list[ev.Event]:
        for update in updates:
            self._routes.pop(update.thread_id, None)
        known = [self._routes.get(effect.thread_id) for effect in effects]
        if updates or None in known:
            return self._ask_mapping(effects, updates)
        for effect in effects:
            self._routes.move_to_end(effect.thread_id)
        return [_resolved(effect.turn_id, route) for effect, route in zip(effects, known, strict=True) if route]

    def worker_event(self, message: Any) -> None:
        """Tell the mapping a worker went up, down or changed health (asked): pins may move, so forget every route."""
        self._routes.clear()
        self._ask(message)

    def _ask_mapping(self, effects: Sequence[ev.Resolve], updates: Sequence[ev.MappingUpdate]) -> list[ev.Event]:
        resolve = ResolveThreads(
            thread_ids=tuple(effect.thread_id for effect in effects), updates=tuple(map(_mapping_update, updates))
        )
        outcomes: list[ev.Event] = []
        for effect, route in zip(effects, self._ask(resolve), strict=True):
            if isinstance(route, NoHealthyWorkerError):
                outcomes.append(ev.Unresolved(turn_id=effect.turn_id, reason=str(route)))
                continue
            known = (route.worker_id, route.runtime_thread_id)
            self._remember(effect.thread_id, known)
            outcomes.append(_resolved(effect.turn_id, known))
        return outcomes

    def _remember(self, thread_id: str, route: tuple[int, str | None]) -> None:
        self._routes[thread_id] = route
        self._routes.move_to_end(thread_id)
        if len(self._routes) > ROUTES_KEPT:
            self._routes.popitem(last=False)


def _resolved(turn_id: str, route: tuple[int, str | None]) -> ev.Resolved:
    return ev.Resolved(turn_id=turn_id, worker_id=route[0], runtime_thread_id=route[1])


def _mapping_update(effect: ev.MappingUpdate) -> BindRuntimeThread | InvalidateRuntimeThread:
    if effect.runtime_thread_id is None:
        return InvalidateRuntimeThread(thread_id=effect.thread_id)
    return BindRuntimeThread(
        thread_id=effect.thread_id, worker_id=effect.worker_id, runtime_thread_id=effect.runtime_thread_id
    )
