"""The data of the turn state machine (actors._turnmachine): its state and the turns in it.

Contract: plain data, no behaviour. Events and effects are frozen msgspec Structs in tagged unions; the state is
mutable and owned by one coordinator. Live objects (a caller's event sink) travel as opaque `Any` fields and are
never looked into. Phases of a turn, in order: "dispatching" (begun, its worker not known yet) -> "held" (no
worker is up: it waits for one) -> "thread_start" | "resume" (the runtime thread is made ready) -> "turn_start" ->
"streaming" (the runtime announced the turn).
"""

from __future__ import annotations

import collections
from typing import Any, Literal

import msgspec

Phase = Literal["dispatching", "held", "thread_start", "resume", "turn_start", "streaming"]
Step = Literal["thread_start", "resume", "turn_start", "interrupt", "steer"]
EndStatus = Literal["completed", "failed", "interrupted"]


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    approval_id: str
    turn_id: str
    worker_id: int
    request_id: int | str
    method: str
    command: str | None = None
    reason: str | None = None
    params: Any = None  # passthrough turns: the runtime's request params, ids replaced by agenthost's


class Extras(msgspec.Struct, frozen=True, kw_only=True):
    """What a send asked for beyond its text, kept while the message waits in the queue."""

    input: tuple[Any, ...] | None = None
    passthrough: bool = False


class Turn(msgspec.Struct, kw_only=True):
    """One active turn (mutable; owned by the state)."""

    turn_id: str
    thread_id: str
    text: str
    sink: Any
    followup_id: str | None = None  # the queued follow-up this turn runs, if it is one
    phase: Phase = "dispatching"
    worker_id: int | None = None
    runtime_thread_id: str | None = None
    runtime_turn_id: str | None = None
    items: dict[str, list[str]] = {}  # agentMessage item id -> its text parts (joined once, at the end)
    approvals: dict[str, Approval] = {}  # open ones
    asked: list[str] = []  # every approval id the runtime asked for in this turn
    stale_retries: int = 0
    interrupt_requested: bool = False
    started: bool = False  # the runtime announced `turn/started` for runtime_turn_id
    runtime_error: str | None = None
    retrying: str | None = None  # the last error the runtime said it is retrying (e.g. "Reconnecting...")
    input: tuple[Any, ...] | None = None  # the runtime's own turn/start input items (None: one text item)
    passthrough: bool = False  # the caller also gets the runtime's notifications (RuntimeNotice)
    thread_params: dict[str, Any] = {}  # the thread's settings for thread/start and thread/resume
    turn_params: dict[str, Any] = {}  # the thread's per-turn settings for turn/start
    options_dropped: bool = False  # the runtime refused turn_params: started again without them
    steers: list[tuple[str, tuple[Any, ...] | None]] = []  # input that waits for the runtime to announce the turn

    def reply_text(self) -> str:
        texts = ("".join(parts) for parts in self.items.values())
        return "\n\n".join(text for text in texts if text)


class Unpersisted(msgspec.Struct, frozen=True, kw_only=True):
    """A turn's end on its way to the storage (or refused by it and kept to be written again)."""

    turn_id: str
    thread_id: str
    status: EndStatus
    text: str
    error: str | None
    worker_id: int | None
    followup_id: str | None
    sink: Any


class State(msgspec.Struct, kw_only=True):
    """Everything the coordinator knows about its turns (see actors._turnmachine for the rules)."""

    max_active_turns: int
    request_timeout_s: float
    turn_timeout_s: float
    approval_policy: str = "on-request"
    sandbox: str = "workspace-write"
    intake_open: bool = True
    dispatching: bool = True  # False after AbortAll (the runtimes are stopping): no queued follow-up starts any more
    turns: dict[str, Turn] = {}
    busy: dict[str, str] = {}  # thread id -> its active turn id
    routes: dict[tuple[int, str], str] = {}  # (worker, runtime thread) -> turn id
    calls: dict[int, tuple[str, Step]] = {}  # call id -> (turn id, step)
    next_call: int = 1
    approvals: dict[str, Approval] = {}
    workers: dict[int, int] = {}  # up workers: worker id -> generation
    loaded: set[tuple[int, int, str]] = set()  # (worker, generation, runtime thread) known loaded
    waiting: collections.deque[str] = msgspec.field(default_factory=collections.deque)  # threads whose queued
    # follow-ups wait, in order
    reserved: int = 0  # slots held for follow-ups being started
    starting: set[str] = set()  # threads whose next follow-up is being started (a new send queues behind it)
    send_next: set[str] = set()  # threads whose next follow-up runs even in manual dispatch mode
    queued: set[str] = set()  # threads that may have follow-ups queued (a start that finds none removes its thread)
    stderr: dict[int, str] = {}  # worker id -> the last error line its runtime wrote to stderr
    extras: dict[str, Extras] = {}  # turn id -> what its send asked for, while it waits in the queue
    beginning: dict[str, str] = {}  # turn id -> thread id: begins asked of the storage, not answered yet
    ending: dict[str, Unpersisted] = {}  # ended turns whose end is not durable yet
    unpersisted: dict[str, Unpersisted] = {}  # turn ends the storage refused, written again by PERSIST_RETRY
    retry_attempt: int = 0
    retry_armed: bool = False
