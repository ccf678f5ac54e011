"""The drop-in app-server's request handlers: threads and turns answered by agenthost, in codex 0.169.0's shapes.

Contract (docs/app-server.md lists every method with what happens to it):
- Request-level errors are codex's: code -32600 and its message text ("Invalid request: missing field
  `threadId`", "thread not found: <id>", "no rollout found for thread id <id>", "thread not loaded: <id>", "no
  active turn to interrupt", "expected active turn id ..."); `RequestError` carries them.
- `thread/start` creates an agenthost thread whose id is a UUIDv7 (the id the client keeps, forever) and keeps the
  client's thread-level parameters with it (all but `ephemeral`: agenthost threads are always durable);
  `thread/resume` works for every thread agenthost stores and merges new parameters; `thread/read` and
  `thread/list` read agenthost's database (`thread/list` pages with an offset cursor and lists threads that have a
  turn, newest first); `thread/name/set` renames.
- `turn/start` keeps the sticky per-turn parameters (`TURN_SETTINGS`) with the thread and sends the input items to
  the runtime as they are; on a thread with a running turn it joins that turn, as codex does (turn/steer), and
  answers with the running turn's id. `turn/steer` and `turn/interrupt` check the active turn as codex does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agenthost._appserver_shapes import Defaults, live_turn_json, new_id, sandbox_policy, thread_json
from agenthost._appserver_stream import TurnStream
from agenthost.protocol._runtime_params import (
    RequestError,
    approval_policy,
    object_params,
    optional_field,
    required_field,
)
from agenthost.storage import InvalidIdError, ThreadRow, UnknownThreadError

if TYPE_CHECKING:
    from agenthost._appserver import Session

__all__ = ["THREAD_METHODS", "TURN_SETTINGS"]

# per-turn parameters a client sets once and expects for the following turns too (codex keeps them)
TURN_SETTINGS = (
    "cwd",
    "approvalPolicy",
    "approvalsReviewer",
    "sandboxPolicy",
    "model",
    "effort",
    "summary",
    "personality",
    "serviceTier",
)
_NOT_SETTINGS = ("threadId", "ephemeral", "excludeTurns", "history", "path", "initialTurnsPage")


def _thread_or(session: Session, thread_id: str, message: str) -> ThreadRow:
    """The thread, or codex's error `message` ending with the id (e.g. "thread not found: <id>")."""
    try:
        return session.backend.thread(thread_id)
    except (UnknownThreadError, InvalidIdError):
        raise RequestError(f"{message}{thread_id}") from None


def _status(active: dict[str, str], thread_id: str) -> dict[str, Any]:
    return {"type": "active", "activeFlags": []} if thread_id in active else {"type": "idle"}


def _thread_result(session: Session, row: ThreadRow, *, include_turns: bool) -> dict[str, Any]:
    defaults: Defaults = session.defaults()
    turns = session.backend.turns(row.thread_id)
    status = _status(session.backend.active_turns(), row.thread_id)
    thread = thread_json(row, turns, status, defaults, include_turns=include_turns)
    settings = row.thread_settings()
    mode = settings.thread.get("sandbox") or defaults.sandbox
    return {
        "thread": thread,
        "model": thread["model"],
        "modelProvider": thread["modelProvider"],
        "serviceTier": settings.turn.get("serviceTier"),
        "cwd": thread["cwd"],
        "runtimeWorkspaceRoots": [thread["cwd"]],
        "instructionSources": [],
        "approvalPolicy": settings.thread.get("approvalPolicy") or defaults.approval_policy,
        "approvalsReviewer": settings.thread.get("approvalsReviewer") or "user",
        "sandbox": sandbox_policy(mode),
        "reasoningEffort": settings.turn.get("effort"),
        "disabledPluginIds": [],
    }


def _thread_settings(params: dict[str, Any]) -> dict[str, Any]:
    if "approvalPolicy" in params and params["approvalPolicy"] is not None:
        approval_policy(params["approvalPolicy"])  # codex refuses an unknown policy at once ("on-failure")
    if params.get("sandbox") is not None:
        sandbox_policy(params["sandbox"])
    return {key: value for key, value in params.items() if key not in _NOT_SETTINGS}


def thread_start(session: Session, params: Any) -> dict[str, Any]:
    given = object_params(params, required=False)
    row = session.backend.create_thread(new_id(), _thread_settings(given))
    result = _thread_result(session, row, include_turns=False)
    session.after_response(lambda: session.notify("thread/started", {"thread": result["thread"]}))
    return result


def thread_resume(session: Session, params: Any) -> dict[str, Any]:
    given = object_params(params)
    thread_id = required_field(given, "threadId", str, "a string")
    _thread_or(session, thread_id, "no rollout found for thread id ")
    changes = _thread_settings(given)
    row = session.backend.update_thread(thread_id, thread_settings=changes or None)
    return _thread_result(session, row, include_turns=not given.get("excludeTurns", False))


def thread_read(session: Session, params: Any) -> dict[str, Any]:
    given = object_params(params)
    thread_id = required_field(given, "threadId", str, "a string")
    row = _thread_or(session, thread_id, "thread not loaded: ")
    include = bool(optional_field(given, "includeTurns", bool, "a boolean"))
    return {"thread": _thread_result(session, row, include_turns=include)["thread"]}


def thread_list(session: Session, params: Any) -> dict[str, Any]:
    given = object_params(params, required=False)
    limit = optional_field(given, "limit", int, "an integer") or 25
    cursor = optional_field(given, "cursor", str, "a string") or "0"
    if not cursor.isdigit():
        raise RequestError(f"Invalid request: invalid cursor: {cursor}")
    if given.get("archived"):
        return {"data": [], "nextCursor": None, "backwardsCursor": None}
    search = (optional_field(given, "searchTerm", str, "a string") or "").lower()
    defaults, active = session.defaults(), session.backend.active_turns()
    listed = []
    for row in session.backend.threads():
        turns = session.backend.turns(row.thread_id)
        thread = thread_json(row, turns, _status(active, row.thread_id), defaults)
        if turns and (not search or search in f"{thread['preview']} {thread['name'] or ''}".lower()):
            listed.append(thread)
    key = "createdAt" if given.get("sortKey") == "created_at" else "updatedAt"
    listed.sort(key=lambda thread: (thread[key], thread["id"]), reverse=given.get("sortDirection") != "asc")
    start = int(cursor)
    page = listed[start : start + max(1, limit)]
    more = start + len(page) < len(listed)
    return {"data": page, "nextCursor": str(start + len(page)) if more else None, "backwardsCursor": None}


def thread_name_set(session: Session, params: Any) -> dict[str, Any]:
    given = object_params(params)
    thread_id = required_field(given, "threadId", str, "a string")
    name = required_field(given, "name", str, "a string")
    _thread_or(session, thread_id, "thread not found: ")
    session.backend.update_thread(thread_id, title=name)
    session.after_response(lambda: session.notify("thread/name/updated", {"threadId": thread_id, "threadName": name}))
    return {}


def thread_loaded_list(session: Session, params: Any) -> dict[str, Any]:
    return {"data": sorted(session.backend.active_turns()), "nextCursor": None}


def _input(given: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    """The input items as the runtime gets them, and the text the transcript records."""
    items = required_field(given, "input", list, "a sequence")
    parts = []
    for item in items:
        entry = required_field({"item": item}, "item", dict, "a map")
        kind = required_field(entry, "type", str, "a string")
        if kind == "text":
            parts.append(required_field(entry, "text", str, "a string"))
        else:
            where = entry.get("path") or entry.get("url") or entry.get("name") or ""
            parts.append(f"[{kind}{': ' + str(where) if where else ''}]")
    return tuple(items), "\n".join(parts)


def turn_start(session: Session, params: Any) -> dict[str, Any]:
    given = object_params(params)
    thread_id = required_field(given, "threadId", str, "a string")
    items, text = _input(given)
    _thread_or(session, thread_id, "thread not found: ")
    settings = {key: given[key] for key in TURN_SETTINGS if key in given}
    if given.get("approvalPolicy") is not None:
        approval_policy(given["approvalPolicy"])
    if settings:
        session.backend.update_thread(thread_id, turn_settings=settings)
    running = session.backend.active_turns().get(thread_id)
    if running is not None:  # as codex: the input joins the running turn
        session.backend.steer(running, text, items)
        return {"turn": live_turn_json(running)}
    turn_id = new_id()
    stream = TurnStream(thread_id, turn_id, session.write, session.requests, session.opted_out)
    session.backend.send(thread_id, text, items, turn_id, stream.put)
    session.after_response(stream.release)
    return {"turn": live_turn_json(turn_id)}


def _active(session: Session, thread_id: str, expected: str, verb: str) -> str:
    _thread_or(session, thread_id, "thread not found: ")
    running = session.backend.active_turns().get(thread_id)
    if running is None:
        raise RequestError(f"no active turn to {verb}")
    if expected and expected != running:
        quote = "`" if verb == "steer" else ""
        raise RequestError(f"expected active turn id {quote}{expected}{quote} but found {quote}{running}{quote}")
    return running


def turn_steer(session: Session, params: Any) -> dict[str, Any]:
    given = object_params(params)
    thread_id = required_field(given, "threadId", str, "a string")
    expected = required_field(given, "expectedTurnId", str, "a string")
    items, text = _input(given)
    running = _active(session, thread_id, expected, "steer")
    session.backend.steer(running, text, items)
    return {"turnId": running}


def turn_interrupt(session: Session, params: Any) -> dict[str, Any]:
    given = object_params(params)
    thread_id = required_field(given, "threadId", str, "a string")
    turn_id = required_field(given, "turnId", str, "a string")
    session.backend.interrupt(_active(session, thread_id, turn_id, "interrupt"))
    return {}


THREAD_METHODS = {
    "thread/start": thread_start,
    "thread/resume": thread_resume,
    "thread/read": thread_read,
    "thread/list": thread_list,
    "thread/name/set": thread_name_set,
    "thread/loaded/list": thread_loaded_list,
    "turn/start": turn_start,
    "turn/steer": turn_steer,
    "turn/interrupt": turn_interrupt,
}
