"""The live view of a running service: what the status page (agenthost._http) and `agenthost top` show.

Contract:
- One source of truth: `view.snapshot` is a control-socket method (added to the table of agenthost._control_api by
  the service). It calls the socket's own methods (`status`, `approvals.list`, `threads.list`, `followups.list`)
  and adds only what no method keeps: the recent history that a `Recorder` collects from the host's typed events,
  and the streamed text of open turns from the service's turn journals. The page and `top` are clients of it.
- `Recorder(host, clock)` subscribes to `SupervisorDecision`, `TurnDispatched` and `TurnEnded`; it keeps the last
  `keep_decisions` decisions (restart, give_up, escalate, degrade, kill, ... with their reasons) and every turn end
  of the last `window_s` seconds (900: 15 minutes) with its duration from dispatch, measured on the injected
  `clock` (monotonic seconds, the same clock as `next_restart_at`). `series()` buckets them (`bucket_s`, 15 s):
  turns per second and the median and maximum turn latency of each bucket, oldest first.
- `StreamTexts` follows the open turns' journals (attach, never blocking) and returns each one's reply text so far
  (the last `max_chars` characters).
- The snapshot: {now, wall, status (as `status` answers it), approvals, threads (the newest `max_threads`),
  followups {thread_id: [row]} (threads with a queued follow-up), active [{turn_id, thread_id, worker_id, phase,
  pending_approvals, text}], decisions and recent turn ends [newest first], series}. `now` is the clock the
  countdowns are measured on.
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from agenthost._control import Connection, Handler
from agenthost._journal import TurnJournal
from agenthost.actors._events import SupervisorDecision, TurnDispatched, TurnEnded
from agenthost.actors._log import Event
from agenthost.protocol import Delta, TurnEvent

if TYPE_CHECKING:
    from agenthost._service import Service

__all__ = ["DecisionRecord", "Recorder", "StreamTexts", "TurnRecord", "view_methods"]

_MAX_OPEN = 10_000  # dispatched turns whose end the recorder waits for


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    t: float  # the clock's seconds (monotonic)
    wall: float  # seconds since the epoch, when it was recorded
    supervisor: str
    child: str
    decision: str
    reason: str
    attempt: int = 0
    delay_s: float = 0.0


class TurnRecord(msgspec.Struct, frozen=True, kw_only=True):
    t: float
    wall: float
    turn_id: str
    thread_id: str
    status: str
    seconds: float | None  # from dispatch to end; None when the dispatch was not seen (before the recorder)


class Bucket(msgspec.Struct, frozen=True, kw_only=True):
    start: float  # seconds relative to now (negative)
    turns_per_s: float
    p50_s: float | None
    max_s: float | None


class Recorder:
    def __init__(
        self,
        host: Any,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        *,
        window_s: float = 900.0,
        bucket_s: float = 15.0,
        keep_decisions: int = 200,
    ) -> None:
        self._clock, self._wall = clock, wall
        self.window_s, self.bucket_s = window_s, bucket_s
        self._lock = threading.Lock()
        self._decisions: collections.deque[DecisionRecord] = collections.deque(maxlen=keep_decisions)
        self._turns: collections.deque[TurnRecord] = collections.deque()
        self._started: dict[str, float] = {}
        self._unsubscribe: Callable[[], None] = host.subscribe(
            self.on_event, [SupervisorDecision, TurnDispatched, TurnEnded]
        )

    def close(self) -> None:
        self._unsubscribe()

    def now(self) -> float:
        return self._clock()

    def on_event(self, event: Event) -> None:
        payload, now = event.payload, self._clock()
        with self._lock:
            if isinstance(payload, TurnDispatched):
                self._started[payload.turn] = now
                while len(self._started) > _MAX_OPEN:  # ends never seen (a host restart): forget the oldest
                    del self._started[next(iter(self._started))]
            elif isinstance(payload, TurnEnded):
                started = self._started.pop(payload.turn, None)
                seconds = None if started is None else max(0.0, now - started)
                self._turns.append(
                    TurnRecord(
                        t=now,
                        wall=self._wall(),
                        turn_id=payload.turn,
                        thread_id=payload.thread,
                        status=payload.status,
                        seconds=seconds,
                    )
                )
                self._prune(now)
            elif isinstance(payload, SupervisorDecision):
                self._decisions.append(
                    DecisionRecord(
                        t=now,
                        wall=self._wall(),
                        supervisor=payload.supervisor,
                        child=payload.child,
                        decision=payload.decision,
                        reason=payload.reason,
                        attempt=payload.attempt,
                        delay_s=payload.delay_s,
                    )
                )

    def _prune(self, now: float) -> None:
        while self._turns and self._turns[0].t < now - self.window_s:
            self._turns.popleft()

    def decisions(self) -> list[DecisionRecord]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._decisions))

    def recent(self, count: int = 20) -> list[TurnRecord]:
        """The last `count` turn ends of the window, newest first."""
        with self._lock:
            return list(reversed(list(self._turns)[-count:]))

    def series(self) -> list[Bucket]:
        now = self._clock()
        count = max(1, round(self.window_s / self.bucket_s))
        with self._lock:
            self._prune(now)
            turns = list(self._turns)
        grouped: list[list[TurnRecord]] = [[] for _ in range(count)]
        for turn in turns:
            index = count - 1 - int((now - turn.t) // self.bucket_s)
            if 0 <= index < count:
                grouped[index].append(turn)
        buckets = []
        for index, group in enumerate(grouped):
            latencies = [t.seconds for t in group if t.seconds is not None]
            buckets.append(
                Bucket(
                    start=-(count - index) * self.bucket_s,
                    turns_per_s=len(group) / self.bucket_s,
                    p50_s=statistics.median(latencies) if latencies else None,
                    max_s=max(latencies) if latencies else None,
                )
            )
        return buckets


class StreamTexts:
    """The reply text so far of every open turn the service follows (its journal)."""

    def __init__(self, max_chars: int = 4000) -> None:
        self.max_chars = max_chars
        self._lock = threading.Lock()
        self._texts: dict[str, list[str]] = {}

    def texts(self, journals: list[TurnJournal]) -> dict[str, str]:
        open_ids = {j.turn_id for j in journals if j.turn_id is not None}
        with self._lock:
            for gone in set(self._texts) - open_ids:
                del self._texts[gone]
            new = [j for j in journals if j.turn_id is not None and j.turn_id not in self._texts]
            for journal in new:
                self._texts[str(journal.turn_id)] = []
        for journal in new:
            journal.attach(self._collector(str(journal.turn_id)))
        with self._lock:
            return {turn_id: "".join(parts)[-self.max_chars :] for turn_id, parts in self._texts.items()}

    def _collector(self, turn_id: str) -> Callable[[int, TurnEvent], None]:
        def collect(_: int, event: TurnEvent) -> None:
            if isinstance(event, Delta):
                with self._lock:
                    parts = self._texts.get(turn_id)
                    if parts is not None:
                        parts.append(event.text)
                        if len(parts) > 256:  # keep it compact: join and trim
                            self._texts[turn_id] = ["".join(parts)[-self.max_chars :]]

        return collect


def view_methods(service: Service, table: dict[str, Handler], max_threads: int = 200) -> dict[str, Handler]:
    """`view.snapshot`, built from the methods of `table` (the control socket's own) plus the recorder's history."""
    recorder: Recorder = service.recorder
    streams = StreamTexts()

    async def snapshot(connection: Connection, raw: Any) -> Any:
        if raw not in (None, {}):
            raise msgspec.ValidationError("view.snapshot takes no params")
        status = await table["status"](connection, None)
        approvals = await table["approvals.list"](connection, None)
        threads = await table["threads.list"](connection, None)
        followups = {}
        for thread_id, depth in sorted(status.get("queue_depths", {}).items()):
            if depth:
                followups[thread_id] = await table["followups.list"](connection, {"thread_id": thread_id})
        texts = streams.texts(service.journals.open_turns())
        active = [{**turn, "text": texts.get(turn["turn_id"])} for turn in status.get("active_turns", [])]
        return {
            "now": recorder.now(),
            "wall": time.time(),
            "status": status,
            "approvals": approvals,
            "threads": threads[-max_threads:],
            "thread_count": len(threads),
            "followups": followups,
            "active": active,
            "decisions": msgspec.to_builtins(recorder.decisions()),
            "recent": msgspec.to_builtins(recorder.recent()),
            "series": {"bucket_s": recorder.bucket_s, "buckets": msgspec.to_builtins(recorder.series())},
        }

    return {"view.snapshot": snapshot}
