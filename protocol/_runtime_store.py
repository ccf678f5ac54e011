"""Thread persistence of the reference runtime: one append-only JSON-lines file per thread, `threads/<id>.jsonl`.

The files live in `<state-dir>/threads/`.

Format: every line is one JSON object ending in "\\n". The first line is the thread's header {id, cwd, approvalPolicy,
sandbox}; each later line is one turn as persisted ({id, status, items, error}, wire-shaped). A later line with the
same turn id replaces the earlier one in place (a turn keeps the position of its first line), so a turn's start and
its end are two appended lines and nothing is ever rewritten: the cost of a save does not depend on the thread's
length.

Durability is codex's (its rollout writer, codex-rs/rollout/src/recorder.rs, writes each line and flushes it to
the OS, never fsyncs): every write reaches the OS before the call returns, so a killed runtime loses nothing, and
nothing is fsynced, so a power cut can lose a thread's newest lines, or a thread created just before it. What is
durable across power loss is the host's record (its database and transcripts), not the runtime's; a thread the
runtime lost is answered "no rollout found" and the host starts it again, as with codex. (The four fsyncs a new
thread's first turn used to cost were half of this runtime's CPU per turn; issue 10.)

Contract:
- A thread id must look like a canonical UUID (8-4-4-4-12 hex digits) before it is used in a path; callers check
  `looks_like_uuid` first, and `ThreadStore` raises ValueError naming the id if they did not.
- `create(header)` creates the thread's file (O_EXCL) holding only its header line, in one write. It raises
  FileExistsError if the thread already has a file.
- `save_turn(thread_id, turn)` appends one line with O_APPEND; it opens no other file and rewrites nothing (but see
  the one-time conversion of the old format below). A line counts only once its "\\n" is in the file, so a reader
  sees each turn as it was before or after the save, never a mix. Before appending, an incomplete last line (left by
  a crash mid-append) is truncated away; if the append itself fails, the file is truncated back to its old length
  (best effort) and the OSError propagates. A thread with no file raises FileNotFoundError; a file without a
  complete header line raises ValueError naming it (and is left alone).
- `load(thread_id)` returns None when there is no file, and when the file has no complete header line (what a power
  cut right after `create` can leave: the thread never durably existed). It only reads: an incomplete last line is
  ignored. A turn persisted as "inProgress" (its process died mid-turn) comes back as "interrupted" holding only its
  userMessage item, as codex does. A corrupt file (bad header, header of another thread, a bad complete line)
  raises ValueError naming it.
- Old format: a thread saved by earlier versions as one JSON record `<id>.json` ({id, cwd, approvalPolicy, sandbox,
  turns}) still loads. The first `save_turn` to such a thread converts it: the `.jsonl` file is written whole to a
  temporary file, fsynced and renamed into place, then the `.json` file is removed. While both exist (a crash in
  between), the `.jsonl` file wins.
- Not thread-safe by itself: the runtime serialises calls with its state lock.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import msgspec

__all__ = ["ThreadHeader", "ThreadRecord", "ThreadStore", "looks_like_uuid"]

_UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TAIL_CHUNK_BYTES = 65536


def looks_like_uuid(value: str) -> bool:
    return _UUID_PATTERN.fullmatch(value) is not None


class ThreadHeader(msgspec.Struct, kw_only=True, rename="camel"):
    """What a thread keeps for its whole life: the first line of its file."""

    id: str
    cwd: str
    approval_policy: Any
    sandbox: Any


class ThreadRecord(msgspec.Struct, kw_only=True):
    """One thread as loaded; `turns` holds wire-shaped dicts {id, status, items, error}, oldest first."""

    header: ThreadHeader
    turns: list[dict[str, Any]] = []


class _LegacyRecord(msgspec.Struct, kw_only=True, rename="camel"):
    """The old single-record format, `<id>.json`."""

    id: str
    cwd: str
    approval_policy: Any
    sandbox: Any
    turns: list[dict[str, Any]] = []


_header_decoder = msgspec.json.Decoder(ThreadHeader)
_turn_decoder = msgspec.json.Decoder(dict[str, Any])
_legacy_decoder = msgspec.json.Decoder(_LegacyRecord)
_encoder = msgspec.json.Encoder()


class ThreadStore:
    def __init__(self, state_dir: str) -> None:
        self._folder = os.path.join(state_dir, "threads")
        os.makedirs(self._folder, exist_ok=True)

    def create(self, header: ThreadHeader) -> None:
        path = self._path(header.id)
        if os.path.exists(self._legacy_path(header.id)):
            raise FileExistsError(f"thread {header.id} already has a file in {self._folder!r}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            raise FileExistsError(f"thread {header.id} already has a file in {self._folder!r}") from None
        try:
            _write_all(fd, _line(header))
        except BaseException:
            os.close(fd)
            _remove_quietly(path)
            raise
        os.close(fd)

    def save_turn(self, thread_id: str, turn: dict[str, Any]) -> None:
        path = self._path(thread_id)
        line = _line(turn)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            self._convert_legacy(thread_id)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        try:
            size = _drop_torn_tail(fd, path)
            try:
                _write_all(fd, line)
            except BaseException:
                _truncate_quietly(fd, size)
                raise
        finally:
            os.close(fd)

    def load(self, thread_id: str) -> ThreadRecord | None:
        path = self._path(thread_id)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            record = self._load_legacy(thread_id)
        else:
            record = _fold(path, thread_id, data)
        if record is not None:
            for turn in record.turns:
                _settle_unfinished(turn)
        return record

    # --- old format ------------------------------------------------------------------------------------------------
    def _load_legacy(self, thread_id: str) -> ThreadRecord | None:
        path = self._legacy_path(thread_id)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return None
        try:
            legacy = _legacy_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"thread file {path!r} is corrupt: {exc}") from None
        if legacy.id != thread_id:
            raise ValueError(f"thread file {path!r} is corrupt: it holds thread {legacy.id!r}")
        header = ThreadHeader(
            id=legacy.id, cwd=legacy.cwd, approval_policy=legacy.approval_policy, sandbox=legacy.sandbox
        )
        return ThreadRecord(header=header, turns=legacy.turns)

    def _convert_legacy(self, thread_id: str) -> None:
        """Write `<id>.jsonl` from `<id>.json`, then remove the old file; FileNotFoundError if neither exists."""
        record = self._load_legacy(thread_id)
        if record is None:
            raise FileNotFoundError(f"thread {thread_id} has no file in {self._folder!r}")
        self._write_whole(thread_id, [_line(record.header), *(_line(turn) for turn in record.turns)])
        os.unlink(self._legacy_path(thread_id))
        self._fsync_folder()

    # --- paths and whole-file writes -------------------------------------------------------------------------------
    def _write_whole(self, thread_id: str, lines: list[bytes]) -> None:
        fd, temp_path = tempfile.mkstemp(dir=self._folder, prefix=f".{thread_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as temp_file:
                temp_file.write(b"".join(lines))
                temp_file.flush()
                os.fsync(temp_file.fileno())
            os.replace(temp_path, self._path(thread_id))
        except BaseException:
            _remove_quietly(temp_path)
            raise
        self._fsync_folder()

    def _path(self, thread_id: str) -> str:
        _check_id(thread_id)
        return os.path.join(self._folder, f"{thread_id}.jsonl")

    def _legacy_path(self, thread_id: str) -> str:
        _check_id(thread_id)
        return os.path.join(self._folder, f"{thread_id}.json")

    def _fsync_folder(self) -> None:
        folder_fd = os.open(self._folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)


def _check_id(thread_id: str) -> None:
    if not looks_like_uuid(thread_id):
        raise ValueError(f"thread id {thread_id!r} is invalid: must look like a UUID")


def _line(value: ThreadHeader | dict[str, Any]) -> bytes:
    return _encoder.encode(value) + b"\n"


def _fold(path: str, thread_id: str, data: bytes) -> ThreadRecord | None:
    """The thread in a `.jsonl` file's bytes: complete lines only, a later line of a turn replacing the earlier;
    None without a complete header line."""
    lines = data.split(b"\n")[:-1]  # the last piece is b"" or an incomplete line: ignored
    if not lines:
        return None  # not even the header line is complete: the thread never durably existed
    try:
        header = _header_decoder.decode(lines[0])
    except msgspec.DecodeError as exc:
        raise ValueError(f"thread file {path!r} is corrupt: line 1 (header): {exc}") from None
    if header.id != thread_id:
        raise ValueError(f"thread file {path!r} is corrupt: its header names thread {header.id!r}")
    turns: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            turn = _turn_decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise ValueError(f"thread file {path!r} is corrupt: line {number}: {exc}") from None
        turn_id = turn.get("id")
        if not isinstance(turn_id, str):
            raise ValueError(f"thread file {path!r} is corrupt: line {number}: a turn without a string id")
        turns[turn_id] = turn
    return ThreadRecord(header=header, turns=list(turns.values()))


def _drop_torn_tail(fd: int, path: str) -> int:
    """The file's length after truncating an incomplete last line (if any) away."""
    size = os.fstat(fd).st_size
    if size > 0 and os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK_BYTES)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end == 0:  # not even the header line is complete: never written by `create`
        raise ValueError(f"thread file {path!r} is corrupt: no complete header line")
    os.ftruncate(fd, end)
    return end


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


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
