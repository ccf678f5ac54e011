"""The reference runtime's running turns: each streams from its own thread, with the approval round trip.

Contract (the message sequences are in protocol/reference_runtime.py):
- `TurnRunner.start(turn)` streams a turn already in `active` from a daemon thread of its own while it runs
  ("turn-<id>"; threads are reused, protocol._runtime_threads), which takes the state lock for every
  check-then-write and writes what it has between waits in one burst (protocol._runtime_io: it flushes before each
  wait, for a delay or an approval). A turn that is finished (completed, interrupted, failed) is never written to
  again, so after the `turn/interrupt` answer no further delta of that turn appears. An exception in that thread
  fails the turn ("reference runtime error: ...") instead of leaving it hanging.
- A reply is split into `deltas_per_reply` pieces (fewer for a shorter text: protocol._chunks); the faults'
  `delta_delay_s` is waited between deltas (an interrupt ends the wait at once); `FaultTriggers` runs before and
  after each delta.
- Input with "RUN: <command>" (up to the end of that line) first asks for approval with a server->client request.
  Those request ids are ints from 0, process-wide; a reply matches only with the same JSON type (`accept_reply`
  ignores and logs any other). accept/acceptForSession -> "completed", decline -> "declined", cancel -> the turn
  ends "interrupted", an error reply or an unknown decision -> "failed".
- `finish_locked` (state lock held) ends a turn: its final status is appended to the thread's file before its
  `turn/completed` is written (a failed save is logged, the turn still completes).
"""

from __future__ import annotations

import itertools
import threading
import traceback
from typing import Any

from agenthost.protocol._chunks import split_text
from agenthost.protocol._jsonrpc import ErrorResponse, Response
from agenthost.protocol._live_faults import FaultTriggers, LiveFaults
from agenthost.protocol._runtime_io import StdoutWriter, log, now_ms
from agenthost.protocol._runtime_store import ThreadHeader, ThreadStore
from agenthost.protocol._runtime_threads import ReusedThreads

__all__ = ["RunningTurn", "TurnRunner"]

APPROVAL_REASON = "reference runtime wants to run a command"
AVAILABLE_DECISIONS = ["accept", "decline", "cancel"]
RUN_MARKER = "RUN:"
_DECISIONS = {"accept": "completed", "acceptForSession": "completed", "decline": "declined", "cancel": "cancel"}


class RunningTurn:
    """A turn that is running in this process; mutated only under the runtime's state lock."""

    __slots__ = ("approval_id", "approval_reply", "done", "record", "steered", "text", "thread", "user_item")

    def __init__(self, thread: ThreadHeader, record: dict[str, Any], text: str, user_item: dict[str, Any]) -> None:
        self.thread = thread
        self.record = record  # the turn as persisted (one line of the thread's file per save)
        self.text = text
        self.user_item = user_item
        self.done = False
        self.approval_id: int | None = None  # the pending server request, if any
        self.approval_reply: Response | ErrorResponse | None = None
        self.steered: list[dict[str, Any]] = []  # userMessage items added by turn/steer

    @property
    def id(self) -> str:
        return str(self.record["id"])


class TurnRunner:
    """The running turns of one runtime and their threads; shares the runtime's state lock."""

    def __init__(
        self,
        *,
        lock: threading.Lock,
        out: StdoutWriter,
        store: ThreadStore,
        live: LiveFaults,
        triggers: FaultTriggers,
        deltas_per_reply: int,
    ) -> None:
        self._lock = lock
        self._changed = threading.Condition(lock)  # notified on interrupt and on approval replies
        self._out = out
        self._store = store
        self._live = live
        self._triggers = triggers
        self._deltas_per_reply = deltas_per_reply
        self.active: dict[str, RunningTurn] = {}  # by thread id; read and written under the state lock
        self._pending: dict[int, RunningTurn] = {}  # server request id -> turn waiting for the reply
        self._request_ids = itertools.count()
        self._item_numbers = itertools.count(1)
        self._threads = ReusedThreads()

    def start(self, turn: RunningTurn) -> None:
        self._threads.run(f"turn-{turn.id}", lambda: self._run_turn(turn))

    def steer_locked(self, turn: RunningTurn, user_item: dict[str, Any]) -> None:
        """More input for a running turn: one more userMessage item of it (kept with the turn). State lock held."""
        turn.steered.append(user_item)
        self._out.notify("item/started", _item_params(turn, user_item, "startedAtMs"))
        self._out.notify("item/completed", _item_params(turn, user_item, "completedAtMs"))

    def accept_reply(self, reply: Response | ErrorResponse) -> None:
        """A client reply to a server request: wake the turn waiting for it (takes the state lock)."""
        with self._lock:
            turn = self._pending.pop(reply.id, None) if isinstance(reply.id, int) else None
            if turn is None:
                log(f"ignoring a reply to unknown request id {reply.id!r}")
                return
            turn.approval_reply = reply
            self._changed.notify_all()

    def finish_locked(
        self,
        turn: RunningTurn,
        status: str,
        agent_item: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """End the turn: persist its final status, then write turn/completed. State lock held."""
        turn.done = True
        if turn.approval_id is not None:
            self._pending.pop(turn.approval_id, None)
            turn.approval_id = None
        del self.active[turn.thread.id]
        final_items = [agent_item] if agent_item is not None else []
        turn.record.update(status=status, items=[turn.user_item, *turn.steered, *final_items], error=error)
        try:
            self._store.save_turn(turn.thread.id, turn.record)
        except OSError as exc:
            log(f"could not persist turn {turn.id} of thread {turn.thread.id}: {exc!r}")
        completed_turn = {"id": turn.id, "status": status, "items": final_items, "error": error}
        self._out.notify("turn/completed", {"threadId": turn.thread.id, "turn": completed_turn})
        self._changed.notify_all()

    # --- turn thread -----------------------------------------------------------------------------------------------
    def _run_turn(self, turn: RunningTurn) -> None:
        try:
            with self._out.burst():  # what it writes between waits goes out in one write
                self._stream_turn(turn)
        except Exception as exc:  # noqa: BLE001 - keep the host informed: the turn fails instead of hanging
            log(f"turn {turn.id} crashed:\n{traceback.format_exc()}")
            with self._lock:
                if not turn.done:
                    self.finish_locked(turn, "failed", error={"message": f"reference runtime error: {exc!r}"})

    def _stream_turn(self, turn: RunningTurn) -> None:
        if not self._emit(turn, "item/started", _item_params(turn, turn.user_item, "startedAtMs")):
            return
        if not self._emit(turn, "item/completed", _item_params(turn, turn.user_item, "completedAtMs")):
            return
        reply_text: str | None = f"Reference reply to: {turn.text}"
        command = _requested_command(turn.text)
        if command is not None:
            reply_text = self._ask_approval(turn, command)
        if reply_text is not None:
            self._stream_reply(turn, reply_text)

    def _ask_approval(self, turn: RunningTurn, command: str) -> str | None:
        """Run the approval round trip; return the reply text, or None when the turn ended meanwhile."""
        with self._lock:
            if turn.done:
                return None
            item: dict[str, Any] = {
                "type": "commandExecution",
                "id": f"call_{next(self._item_numbers)}",
                "command": command,
                "cwd": turn.thread.cwd,
                "status": "inProgress",
                "exitCode": None,
                "aggregatedOutput": None,
            }
            request_id = next(self._request_ids)
            turn.approval_id = request_id
            self._pending[request_id] = turn
            self._out.notify("item/started", _item_params(turn, item, "startedAtMs"))
            self._notify_status(turn, ["waitingOnApproval"])
            self._out.request(
                request_id,
                "item/commandExecution/requestApproval",
                {
                    "threadId": turn.thread.id,
                    "turnId": turn.id,
                    "itemId": item["id"],
                    "startedAtMs": now_ms(),
                    "kind": "command",
                    "command": command,
                    "cwd": turn.thread.cwd,
                    "reason": APPROVAL_REASON,
                    "availableDecisions": AVAILABLE_DECISIONS,
                },
            )
            self._out.flush()  # the request reaches the client before the wait for its answer
            self._changed.wait_for(lambda: turn.done or turn.approval_reply is not None)
            if turn.done:
                return None
            outcome = _approval_outcome(turn.approval_reply)
            turn.approval_id = None
            self._out.notify("serverRequest/resolved", {"threadId": turn.thread.id, "requestId": request_id})
            self._notify_status(turn, [])
            return self._complete_command(turn, item, command, outcome)

    def _complete_command(self, turn: RunningTurn, item: dict[str, Any], command: str, outcome: str) -> str | None:
        if outcome == "completed":
            item.update(status="completed", exitCode=0, aggregatedOutput=f"(reference runtime) ran: {command}\n")
            reply_text: str | None = f"Command finished: {command}"
        elif outcome == "failed":
            item["status"] = "failed"
            reply_text = f"Command failed: {command}"
        else:  # "declined" or "cancel"
            item["status"] = "declined"
            reply_text = f"Command declined: {command}"
        self._out.notify("item/completed", _item_params(turn, item, "completedAtMs"))
        if outcome == "cancel":
            self.finish_locked(turn, "interrupted")
            reply_text = None
        return reply_text

    def _stream_reply(self, turn: RunningTurn, reply_text: str) -> None:
        agent_item = {"type": "agentMessage", "id": f"msg_{next(self._item_numbers)}", "text": ""}
        if not self._emit(turn, "item/started", _item_params(turn, agent_item, "startedAtMs")):
            return
        for index, chunk in enumerate(split_text(reply_text, self._deltas_per_reply)):
            with self._lock:
                if index and self._live.refresh().delta_delay_s:
                    self._out.flush()  # each delay is seen between the deltas
                    self._changed.wait_for(lambda: turn.done, timeout=self._live.refresh().delta_delay_s)
                if turn.done:
                    return
                self._triggers.before_output()
                self._out.delta(
                    {"threadId": turn.thread.id, "turnId": turn.id, "itemId": agent_item["id"], "delta": chunk}
                )
                self._triggers.after_delta()
        with self._lock:
            if turn.done:
                return
            final_item = {**agent_item, "text": reply_text}
            self._out.notify("item/completed", _item_params(turn, final_item, "completedAtMs"))
            self.finish_locked(turn, "completed", final_item)

    def _emit(self, turn: RunningTurn, method: str, params: dict[str, Any]) -> bool:
        with self._lock:
            if turn.done:
                return False
            self._out.notify(method, params)
            return True

    def _notify_status(self, turn: RunningTurn, flags: list[str]) -> None:
        status = {"type": "active", "activeFlags": flags}
        self._out.notify("thread/status/changed", {"threadId": turn.thread.id, "status": status})


def _item_params(turn: RunningTurn, item: dict[str, Any], time_field: str) -> dict[str, Any]:
    return {"threadId": turn.thread.id, "turnId": turn.id, "item": dict(item), time_field: now_ms()}


def _requested_command(text: str) -> str | None:
    """The command after "RUN:" up to the end of that line, or None."""
    start = text.find(RUN_MARKER)
    if start < 0:
        return None
    command = text[start + len(RUN_MARKER) :].split("\n", 1)[0].strip()
    return command or None


def _approval_outcome(reply: Response | ErrorResponse | None) -> str:
    """ "completed", "declined", "cancel" or "failed" (an error reply or an unknown decision)."""
    if not isinstance(reply, Response):
        log(f"approval request failed with client error: {reply!r}")
        return "failed"
    decision = reply.result.get("decision") if isinstance(reply.result, dict) else None
    if isinstance(decision, str) and decision in _DECISIONS:
        return _DECISIONS[decision]
    log(f"failed to deserialize CommandExecutionRequestApprovalResponse: unknown decision {decision!r}")
    return "failed"
