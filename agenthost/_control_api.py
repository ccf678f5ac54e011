"""The control socket's methods: what a client of `agenthost serve` can ask (names, params, results).

Every method takes a JSON object of params, decoded strictly (unknown or ill-typed fields are -32602 naming the
field) and answers a JSON result:
- `status` -> host state and cause, workers (state, pid, generation, restarts, next restart), pins, active turns,
  queue depths per thread, service facts (version, pid, uptime, socket).
- `threads.create {title?, project_id?, thread_id?, thread_settings?}` -> {thread_id}; `threads.list` -> [thread];
  `threads.get {thread_id}` -> thread; `threads.update {thread_id, title?, thread_settings?, turn_settings?}` ->
  thread (see AgentHost.update_thread); `turns.list {thread_id}` -> [turn]; `transcript.read {thread_id}` -> {text}.
- `turns.send {thread_id, text, stream=true, input?, turn_id?, passthrough=false}` -> {turn_id, queued}; with
  `stream`, the turn's events follow as `turn.event {turn_id, seq, event}` notifications (seq 1, 2, ...; the last
  event has type TurnFinished). `turns.steer {turn_id, text, input?}` adds input to a running turn.
- `runtime.call {method, params?}` -> {result}: a request that belongs to no turn, passed to a runtime; the
  runtime's own error comes back as -32000 with `data.runtime_error` {code, message, data}.
- `turns.attach {turn_id, after_seq=0}` -> {turn_id, replayed, finished}: the events after `after_seq` are replayed,
  then the live ones follow, nothing missed nor repeated. A turn this service run no longer keeps answers with
  its end from the database (`finished`) and no events.
- `turns.interrupt {turn_id}`; `approvals.list` -> [approval]; `approvals.answer {approval_id, decision}`.
- `followups.list {thread_id}`, `followups.move {followup_id, position}`, `followups.edit {followup_id, text}`,
  `followups.cancel {followup_id}`, `followups.retry {followup_id}`, `followups.mode {thread_id, mode}`,
  `followups.send_next {thread_id}`.
- `workers.restart {worker_id, reason?}` -> {generation}; `workers.repair {worker_id}` -> {report}.
- `events.subscribe {names?}`: every structured event (or the named ones) follows as `event {name, level, logger,
  t, fields}` notifications until the connection closes.
- `doctor` -> [finding]: the storage health checks, read-only, as the running host sees them (turns in flight are
  not problems); `service.shutdown {drain_timeout_s?}` drains and stops the service.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from agenthost._api import RuntimeCallError
from agenthost._control import DOMAIN_ERROR, Connection, Handler, MethodError
from agenthost._journal import TurnJournal, event_payload

if TYPE_CHECKING:
    from agenthost._service import Service

__all__ = ["AfterResponse", "methods"]


class AfterResponse(msgspec.Struct):
    """A result, plus what to do right after the response is queued (start the notifications that follow it)."""

    value: Any
    after_response: Callable[[], object]


class _P(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class _None(_P, frozen=True):
    pass


class _Create(_P, frozen=True):
    title: str = ""
    project_id: str = "default"
    thread_id: str | None = None
    thread_settings: dict[str, Any] | None = None


class _Thread(_P, frozen=True):
    thread_id: str


class _Update(_P, frozen=True):
    thread_id: str
    title: str | None = None
    thread_settings: dict[str, Any] | None = None
    turn_settings: dict[str, Any] | None = None


class _Send(_P, frozen=True):
    thread_id: str
    text: str
    stream: bool = True
    input: list[Any] | None = None
    turn_id: str | None = None
    passthrough: bool = False


class _Steer(_P, frozen=True):
    turn_id: str
    text: str
    input: list[Any] | None = None


class _RuntimeCall(_P, frozen=True):
    method: str
    params: Any = None


class _Attach(_P, frozen=True):
    turn_id: str
    after_seq: int = msgspec.field(default=0)


class _Turn(_P, frozen=True):
    turn_id: str


class _Answer(_P, frozen=True):
    approval_id: str
    decision: Any


class _FollowUp(_P, frozen=True):
    followup_id: str


class _Move(_P, frozen=True):
    followup_id: str
    position: int


class _Edit(_P, frozen=True):
    followup_id: str
    text: str


class _Mode(_P, frozen=True):
    thread_id: str
    mode: Literal["auto", "manual"]


class _Worker(_P, frozen=True):
    worker_id: int
    reason: str = "operator request"


class _Subscribe(_P, frozen=True):
    names: list[str] | None = None


class _Shutdown(_P, frozen=True):
    drain_timeout_s: float | None = None


def _params(kind: type[Any], raw: Any) -> Any:
    return msgspec.convert({} if raw is None else raw, kind)


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


def methods(service: Service) -> dict[str, Handler]:
    host = service.host

    def blocking(kind: type[Any], fn: Callable[[Any], Any]) -> Handler:
        async def handler(connection: Connection, raw: Any) -> Any:
            params = _params(kind, raw)
            return _plain(await connection.call(fn, params))

        return handler

    def watch(connection: Connection, journal: TurnJournal, after_seq: int) -> int:
        turn_id = journal.turn_id

        def forward(seq: int, event: Any) -> None:
            connection.notify("turn.event", {"turn_id": turn_id, "seq": seq, "event": event_payload(event)})

        replayed = journal.attach(forward, after_seq)
        connection.cleanups.append(lambda: journal.detach(forward))
        return replayed

    async def send(connection: Connection, raw: Any) -> Any:
        params = _params(_Send, raw)
        journal = TurnJournal(params.thread_id)
        items = None if params.input is None else tuple(params.input)
        submit = functools.partial(host.submit, input=items, turn_id=params.turn_id, passthrough=params.passthrough)
        accepted = await connection.call(submit, params.thread_id, params.text, journal)
        service.journals.add(accepted.turn_id, journal)
        result = {"turn_id": accepted.turn_id, "queued": accepted.queued}
        if not params.stream:
            return result
        return AfterResponse(result, lambda: watch(connection, journal, 0))

    async def attach(connection: Connection, raw: Any) -> Any:
        params = _params(_Attach, raw)
        if params.after_seq < 0:
            raise MethodError(-32602, f"invalid params: after_seq must be >= 0, got {params.after_seq}")
        journal = service.journals.get(params.turn_id)
        if journal is None:
            row = await connection.call(host.turn, params.turn_id)
            if row.status == "pending":
                raise MethodError(
                    DOMAIN_ERROR,
                    f"turn {params.turn_id!r} is not followed by this service run",
                    {"error": "TurnNotActiveError"},
                )
            return {"turn_id": params.turn_id, "replayed": 0, "finished": _plain(row)}
        finished = journal.finished is not None
        result = {"turn_id": params.turn_id, "last_seq": journal.last_seq, "finished": finished}
        return AfterResponse(result, lambda: watch(connection, journal, params.after_seq))

    async def subscribe(connection: Connection, raw: Any) -> Any:
        params = _params(_Subscribe, raw)

        def forward(event: Any) -> None:
            fields = {k: v for k, v in event.fields.items() if k != "exc_info"}
            connection.notify(
                "event",
                {
                    "name": event.name,
                    "level": event.level,
                    "logger": event.logger,
                    "t": event.t,
                    "fields": _jsonable(fields),
                },
            )

        connection.cleanups.append(host.subscribe(forward, params.names))
        return {"subscribed": params.names or "all"}

    async def shutdown(connection: Connection, raw: Any) -> Any:
        params = _params(_Shutdown, raw)
        service.request_stop(params.drain_timeout_s)
        return {"stopping": True}

    def status(_: Any) -> Any:
        snapshot = host.status()
        return {**_plain(snapshot), "queue_depths": host.queue_depths(), "service": service.facts()}

    def create(p: _Create) -> Any:
        thread_id = host.create_thread(p.title, project_id=p.project_id, thread_id=p.thread_id)
        if p.thread_settings:
            host.update_thread(thread_id, thread_settings=p.thread_settings)
        return {"thread_id": thread_id}

    def update(p: _Update) -> Any:
        return host.update_thread(
            p.thread_id, title=p.title, thread_settings=p.thread_settings, turn_settings=p.turn_settings
        )

    def steer(p: _Steer) -> Any:
        host.steer(p.turn_id, p.text, input=None if p.input is None else tuple(p.input))
        return {"steered": p.turn_id}

    def runtime_call(p: _RuntimeCall) -> Any:
        try:
            return {"result": host.runtime_call(p.method, p.params)}
        except RuntimeCallError as exc:
            error = _plain(exc.error)
            raise MethodError(DOMAIN_ERROR, str(exc), {"error": "RuntimeCallError", "runtime_error": error}) from None

    def answer(p: _Answer) -> Any:
        host.answer_approval(p.approval_id, p.decision)
        return {"answered": p.approval_id}

    def interrupt(p: _Turn) -> Any:
        host.interrupt(p.turn_id)
        return {"interrupted": p.turn_id}

    def send_next(p: _Thread) -> Any:
        host.send_next(p.thread_id)
        return {"thread_id": p.thread_id}

    return {
        "status": blocking(_None, status),
        "threads.create": blocking(_Create, create),
        "threads.list": blocking(_None, lambda p: host.threads()),
        "threads.get": blocking(_Thread, lambda p: host.thread(p.thread_id)),
        "threads.update": blocking(_Update, update),
        "turns.steer": blocking(_Steer, steer),
        "runtime.call": blocking(_RuntimeCall, runtime_call),
        "turns.list": blocking(_Thread, lambda p: host.turns(p.thread_id)),
        "transcript.read": blocking(_Thread, lambda p: {"text": host.transcript(p.thread_id)}),
        "turns.send": send,
        "turns.attach": attach,
        "turns.interrupt": blocking(_Turn, interrupt),
        "approvals.list": blocking(_None, lambda p: host.approvals()),
        "approvals.answer": blocking(_Answer, answer),
        "followups.list": blocking(_Thread, lambda p: host.followups(p.thread_id)),
        "followups.move": blocking(_Move, lambda p: host.move_followup(p.followup_id, p.position)),
        "followups.edit": blocking(_Edit, lambda p: host.edit_followup(p.followup_id, p.text)),
        "followups.cancel": blocking(_FollowUp, lambda p: host.cancel_followup(p.followup_id)),
        "followups.retry": blocking(_FollowUp, lambda p: host.retry_followup(p.followup_id)),
        "followups.mode": blocking(_Mode, lambda p: host.set_dispatch_mode(p.thread_id, p.mode)),
        "followups.send_next": blocking(_Thread, send_next),
        "workers.restart": blocking(_Worker, lambda p: {"generation": host.restart_worker(p.worker_id, p.reason)}),
        "workers.repair": blocking(_Worker, lambda p: {"report": host.repair_worker(p.worker_id)}),
        "events.subscribe": subscribe,
        "doctor": blocking(_None, lambda p: host.health()),
        "service.shutdown": shutdown,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
