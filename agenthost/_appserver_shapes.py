"""codex app-server 0.169.0 JSON shapes built from agenthost's own records: threads, turns, items, sandbox policies.

Contract (pure functions, no I/O): the shapes are the ones `codex app-server` answers with (docs/app-server.md lists
the fields), filled from agenthost's database rows and a thread's stored settings:
- `thread_json(row, turns, status, defaults, include_turns)`: `Thread`; `preview` is the first user message,
  `name` the title unless it is just the id, times are whole seconds, `path` is null (agenthost keeps Markdown
  transcripts, not rollout files) and `source` is "appServer". Turns are listed only with `include_turns`.
- `turn_json(row)`: a stored turn with its `userMessage` and `agentMessage` items (`itemsView` "full"); a failed
  turn carries `error {message}`. `live_turn_json(turn_id)` is a turn that has just been accepted.
- `sandbox_policy(mode)`: codex's `SandboxMode` string -> its `SandboxPolicy` object (protocol._runtime_params has
  the table); an object passes through.
- `new_id()`: a UUID version 7 (time-ordered, as codex's thread and turn ids), from os.urandom.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from agenthost.protocol._runtime_params import sandbox_policy as mode_policy
from agenthost.storage import ThreadRow, TurnRow

__all__ = ["Defaults", "live_turn_json", "new_id", "sandbox_policy", "thread_json", "turn_json"]


class Defaults(msgspec.Struct, frozen=True, kw_only=True):
    """What a thread runs with when its client did not say: from the runtime's own configuration when it tells
    (`config/read`), else agenthost's."""

    model: str = "agenthost-builtin"
    model_provider: str = "agenthost"
    approval_policy: str = "on-request"
    sandbox: str = "workspace-write"
    cwd: str = "/"
    cli_version: str = "0"


def new_id() -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, version 7, 74 random bits, variant 10."""
    value = (int(time.time() * 1000) & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def sandbox_policy(mode: Any) -> Any:
    """A `SandboxMode` string -> its policy object (an unknown one raises codex's "unknown variant" RequestError);
    anything else (already a policy object) as it is."""
    return mode_policy(mode) if isinstance(mode, str) else mode


def _user_item(row: TurnRow) -> dict[str, Any]:
    return {
        "type": "userMessage",
        "id": f"{row.turn_id}-user",
        "clientId": None,
        "content": [{"type": "text", "text": row.user_text, "text_elements": []}],
    }


def _agent_item(row: TurnRow) -> dict[str, Any]:
    return {"type": "agentMessage", "id": f"{row.turn_id}-agent", "text": row.assistant_text, "phase": None}


def turn_json(row: TurnRow) -> dict[str, Any]:
    items = [_user_item(row)] + ([_agent_item(row)] if row.assistant_text else [])
    status = "inProgress" if row.status == "pending" else row.status
    finished = None if row.finished_at is None else int(row.finished_at)
    duration = None if row.finished_at is None else int((row.finished_at - row.created_at) * 1000)
    return {
        "id": row.turn_id,
        "rootTurnId": row.turn_id,
        "items": items,
        "itemsView": "full",
        "status": status,
        "error": {"message": row.error, "codexErrorInfo": "other"} if row.error and status != "completed" else None,
        "startedAt": int(row.created_at),
        "completedAt": finished,
        "durationMs": duration,
    }


def live_turn_json(turn_id: str) -> dict[str, Any]:
    return {
        "id": turn_id,
        "rootTurnId": turn_id,
        "items": [],
        "itemsView": "notLoaded",
        "status": "inProgress",
        "error": None,
        "startedAt": None,
        "completedAt": None,
        "durationMs": None,
    }


def thread_json(
    row: ThreadRow,
    turns: Sequence[TurnRow],
    status: dict[str, Any],
    defaults: Defaults,
    *,
    include_turns: bool = False,
) -> dict[str, Any]:
    settings = row.thread_settings()
    cwd = str(settings.thread.get("cwd") or defaults.cwd)
    created = int(row.created_at)
    updated = int(max([row.created_at, *(t.finished_at or t.created_at for t in turns)]))
    return {
        "id": row.thread_id,
        "environments": [{"environmentId": "local", "cwd": cwd, "runtimeWorkspaceRoots": [cwd]}],
        "extra": None,
        "sessionId": row.thread_id,
        "forkedFromId": None,
        "attachedToThreadId": None,
        "parentThreadId": None,
        "preview": turns[0].user_text if turns else "",
        "ephemeral": False,
        "section": None,
        "sectionEnteredAt": None,
        "projectId": None,
        "historyMode": "paginated",
        "modelProvider": settings.thread.get("modelProvider") or defaults.model_provider,
        "model": settings.turn.get("model") or settings.thread.get("model") or defaults.model,
        "reasoningEffort": settings.turn.get("effort"),
        "createdAt": created,
        "updatedAt": updated,
        "recencyAt": updated,
        "status": status,
        "path": None,
        "cwd": cwd,
        "cliVersion": defaults.cli_version,
        "originator": "agenthost",
        "source": "appServer",
        "canAcceptDirectInput": True,
        "threadSource": None,
        "agentNickname": None,
        "agentRole": None,
        "gitInfo": None,
        "name": None if row.title in ("", row.thread_id) else row.title,
        "daybreakEnabled": None,
        "turns": [turn_json(t) for t in turns] if include_turns else [],
    }
