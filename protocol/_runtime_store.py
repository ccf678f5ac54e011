"""Thread persistence of the reference runtime: one JSON file per thread under `<state-dir>/threads/<id>.json`.

Contract:
- A thread id must look like a canonical UUID (8-4-4-4-12 hex digits) before it is used in a path; callers check
  `looks_like_uuid` first, and `ThreadStore` raises ValueError naming the id if they did not.
- `save` is atomic: the whole record goes to a temporary file in the same folder, which is fsynced and then
  `os.replace`d over the old file; the folder is fsynced afterwards. A reader sees the old or the new record, never a
  mix. OSError from the disk propagates.
- `load` returns None when there is no file. A turn persisted as "inProgress" (its process died mid-turn) comes back
  as "interrupted" holding only its userMessage item, as codex does. A corrupt file raises ValueError naming it.
- Not thread-safe by itself: the runtime serialises calls with its state lock.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import msgspec

__all__ = ["ThreadRecord", "ThreadStore", "looks_like_uuid"]

_UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def looks_like_uuid(value: str) -> bool:
    return _UUID_PATTERN.fullmatch(value) is not None


class ThreadRecord(msgspec.Struct, kw_only=True, rename="camel"):
    """One thread as persisted; `turns` holds wire-shaped dicts {id, status, items, error}."""

    id: str
    cwd: str
    approval_policy: Any
    sandbox: Any
    turns: list[dict[str, Any]] = []


_record_decoder = msgspec.json.Decoder(ThreadRecord)


class ThreadStore:
    def __init__(self, state_dir: str) -> None:
        self._folder = os.path.join(state_dir, "threads")
        os.makedirs(self._folder, exist_ok=True)

    def save(self, record: ThreadRecord) -> None:
        final_path = self._path(record.id)
        fd, temp_path = tempfile.mkstemp(dir=self._folder, prefix=f".{record.id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as temp_file:
                temp_file.write(msgspec.json.encode(record))
                temp_file.flush()
                os.fsync(temp_file.fileno())
            os.replace(temp_path, final_path)
        except BaseException:
            _remove_quietly(temp_path)
            raise
        self._fsync_folder()

    def load(self, thread_id: str) -> ThreadRecord | None:
        path = self._path(thread_id)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return None
        try:
            record = _record_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"thread file {path!r} is corrupt: {exc}") from None
        for turn in record.turns:
            _settle_unfinished(turn)
        return record

    def _path(self, thread_id: str) -> str:
        if not looks_like_uuid(thread_id):
            raise ValueError(f"thread id {thread_id!r} is invalid: must look like a UUID")
        return os.path.join(self._folder, f"{thread_id}.json")

    def _fsync_folder(self) -> None:
        folder_fd = os.open(self._folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)


def _settle_unfinished(turn: dict[str, Any]) -> None:
    """A turn left "inProgress" by a dead process reads as "interrupted" with only its userMessage."""
    if turn.get("status") != "inProgress":
        return
    turn["status"] = "interrupted"
    turn["items"] = [item for item in turn.get("items", []) if item.get("type") == "userMessage"]


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
