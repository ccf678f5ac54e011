"""One turn of the drop-in app-server: agenthost's turn events become codex app-server notifications and requests.

Contract (events are plain dicts with "type", as `agenthost._journal.event_payload` makes them):
- Nothing is written before `release()`: the `turn/start` answer goes first, then what the turn produced so far,
  in order, then the rest as it comes.
- `RuntimeNotice`: the runtime's own notification (its ids already agenthost's) is passed on, unless the client
  opted out of its method. Two are not: the runtime's `serverRequest/resolved` (it names the runtime's request id;
  this front end sends its own), and its `turn/completed`, which is held until the host's `TurnFinished` says the
  end is durable.
- `ApprovalRequested` -> a server request with the front end's own id (ints from 0, `Requests`), the runtime's
  params. A client answer -> the host; `serverRequest/resolved` follows at once. `ApprovalResolved` (the runtime
  withdrew it) and `ApprovalReset` (agenthost reset it: its worker died, the turn ended) -> `serverRequest/resolved`,
  the reset with a `warning` notification explaining it; a late answer is ignored.
- `OptionsDropped` -> a `warning` notification naming the options the runtime refused.
- `TurnFinished`: the held runtime `turn/completed` when it says the same status; otherwise (the host ended the turn:
  worker died, deadline, shutdown) an `error` notification (failed only), `thread/status/changed` idle and a
  `turn/completed` in codex's shape with the host's error, preceded by `turn/started` if the runtime never sent it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Requests", "TurnStream"]

Write = Callable[[dict[str, Any]], None]


class Requests:
    """Server->client requests in flight: the front end's own ids (0, 1, 2 ...) -> (approval id, thread id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0
        self._open: dict[int, tuple[str, str]] = {}
        self._by_approval: dict[str, int] = {}

    def open(self, approval_id: str, thread_id: str) -> int:
        with self._lock:
            request_id, self._next = self._next, self._next + 1
            self._open[request_id] = (approval_id, thread_id)
            self._by_approval[approval_id] = request_id
            return request_id

    def take(self, request_id: Any) -> tuple[str, str] | None:
        """Close the request the client answered; None for an id that is not open (wrong value or JSON type)."""
        if type(request_id) is not int:
            return None
        with self._lock:
            entry = self._open.pop(request_id, None)
            if entry is not None:
                self._by_approval.pop(entry[0], None)
            return entry

    def close_approval(self, approval_id: str) -> int | None:
        """Close the request of an approval agenthost settled; its id, or None if it was already answered."""
        with self._lock:
            request_id = self._by_approval.pop(approval_id, None)
            if request_id is not None:
                self._open.pop(request_id, None)
            return request_id


class TurnStream:
    """The event sink of one passthrough turn (events may arrive on any thread, even before `release`)."""

    def __init__(self, thread_id: str, turn_id: str, write: Write, requests: Requests, opted_out: frozenset[str]):
        self.thread_id, self.turn_id = thread_id, turn_id
        self._write, self._requests, self._opted_out = write, requests, opted_out
        self._lock = threading.Lock()
        self._released = False
        self._early: list[dict[str, Any]] = []
        self._held_completion: dict[str, Any] | None = None
        self._started = False
        self._began_at = time.time()
        self.finished = threading.Event()

    # --- the sink -------------------------------------------------------------------------------------------
    def put(self, event: dict[str, Any]) -> None:
        with self._lock:
            if not self._released:
                self._early.append(event)
                return
            self._translate(event)

    def release(self) -> None:
        with self._lock:
            self._released = True
            early, self._early = self._early, []
            for event in early:
                self._translate(event)

    # --- translation (lock held) ------------------------------------------------------------------------------
    def _translate(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "RuntimeNotice":
            self._notice(event["method"], event.get("params"))
        elif kind == "ApprovalRequested":
            request_id = self._requests.open(event["approval_id"], self.thread_id)
            params = event.get("params") or {"threadId": self.thread_id, "turnId": self.turn_id}
            self._write({"id": request_id, "method": event["method"], "params": params})
        elif kind == "ApprovalResolved":
            self._resolved(event["approval_id"])
        elif kind == "ApprovalReset":
            if self._resolved(event["approval_id"]):
                self._notify("warning", {"threadId": self.thread_id, "message": f"agenthost: {event['message']}"})
        elif kind == "OptionsDropped":
            message = (
                f"agenthost: the runtime refused this turn's options {', '.join(event['options'])} "
                f"({event['reason']}); the turn runs without them, and they are no longer kept with the thread"
            )
            self._notify("warning", {"threadId": self.thread_id, "message": message})
        elif kind == "TurnFinished":
            self._finished(event)

    def _notice(self, method: str, params: Any) -> None:
        if method == "serverRequest/resolved":
            return
        if method == "turn/completed":
            self._held_completion = params
            return
        if method == "turn/started":
            self._started = True
        self._notify(method, params)

    def _resolved(self, approval_id: str) -> bool:
        request_id = self._requests.close_approval(approval_id)
        if request_id is None:
            return False
        self._notify("serverRequest/resolved", {"threadId": self.thread_id, "requestId": request_id})
        return True

    def _finished(self, event: dict[str, Any]) -> None:
        status, error = event["status"], event.get("error")
        held = self._held_completion
        if held is not None and (held.get("turn") or {}).get("status") == status:
            self._notify("turn/completed", held)
        else:
            self._host_ended(status, error, event.get("text") or "")
        self.finished.set()

    def _host_ended(self, status: str, error: str | None, text: str) -> None:
        now = time.time()
        turn_error = {"message": error, "codexErrorInfo": "other", "additionalDetails": None} if error else None
        if not self._started:
            started: dict[str, Any] = {"id": self.turn_id, "items": [], "status": "inProgress", "error": None}
            self._notify("turn/started", {"threadId": self.thread_id, "turn": started})
        if status == "failed" and turn_error is not None:
            self._notify(
                "error",
                {"threadId": self.thread_id, "turnId": self.turn_id, "error": turn_error, "willRetry": False},
            )
        self._notify("thread/status/changed", {"threadId": self.thread_id, "status": {"type": "idle"}})
        items = [{"type": "agentMessage", "id": f"{self.turn_id}-agent", "text": text, "phase": None}] if text else []
        turn: dict[str, Any] = {
            "id": self.turn_id,
            "rootTurnId": self.turn_id,
            "items": items,
            "itemsView": "summary",
            "status": status,
            "error": None if status == "completed" else turn_error,
            "startedAt": int(self._began_at),
            "completedAt": int(now),
            "durationMs": int((now - self._began_at) * 1000),
        }
        self._notify("turn/completed", {"threadId": self.thread_id, "turn": turn})

    def _notify(self, method: str, params: Any) -> None:
        if method not in self._opted_out:
            self._write({"method": method, "params": params})
