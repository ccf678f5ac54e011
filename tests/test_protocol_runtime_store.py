"""The reference runtime's thread store (protocol._runtime_store): append-only saves, recovery, the old format."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from agenthost.protocol import _runtime_store
from agenthost.protocol._runtime_store import ThreadHeader, ThreadStore

SANDBOX = {"type": "workspaceWrite"}


def _header(thread_id: str) -> ThreadHeader:
    return ThreadHeader(id=thread_id, cwd="/work", approval_policy="never", sandbox=SANDBOX)


def _user_item(text: str) -> dict[str, Any]:
    return {"type": "userMessage", "id": f"u-{text}", "content": [{"type": "text", "text": text}]}


def _turn(number: int, status: str = "completed") -> dict[str, Any]:
    items = [_user_item(str(number)), {"type": "agentMessage", "id": f"m-{number}", "text": f"reply {number}"}]
    return {"id": f"turn-{number}", "status": status, "items": items, "error": None}


def _new_thread(tmp_path: Path) -> tuple[ThreadStore, str, Path]:
    store = ThreadStore(str(tmp_path))
    thread_id = str(uuid.uuid4())
    store.create(_header(thread_id))
    return store, thread_id, tmp_path / "threads" / f"{thread_id}.jsonl"


def test_create_then_load_and_no_file_is_none(tmp_path: Path) -> None:
    store, thread_id, path = _new_thread(tmp_path)
    record = store.load(thread_id)
    assert record is not None and record.header == _header(thread_id) and record.turns == []
    assert path.read_bytes().count(b"\n") == 1
    assert store.load(str(uuid.uuid4())) is None
    with pytest.raises(FileExistsError):
        store.create(_header(thread_id))


def test_a_save_on_a_long_thread_appends_one_line_and_rewrites_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(_runtime_store.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    store, thread_id, path = _new_thread(tmp_path)
    with open(path, "a", encoding="utf-8") as file:  # 1,000 turns, written by hand in the documented format
        file.writelines(json.dumps(_turn(n)) + "\n" for n in range(1000))
    before_bytes, before = path.read_bytes(), path.stat()
    new_turn = _turn(1000, status="inProgress")
    store.save_turn(thread_id, new_turn)
    after_bytes, after = path.read_bytes(), path.stat()
    assert after.st_ino == before.st_ino  # not replaced by a rewritten copy
    assert after_bytes.startswith(before_bytes)
    appended = after_bytes[len(before_bytes) :]
    assert appended.endswith(b"\n") and appended.count(b"\n") == 1 and json.loads(appended) == new_turn
    assert fsyncs == []  # codex's durability: neither the create nor the save fsyncs (module docstring)
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temporary file left or made
    store.save_turn(thread_id, _turn(1000))  # the turn's end replaces its start, in place
    record = store.load(thread_id)
    assert record is not None and len(record.turns) == 1001
    assert record.turns[0] == _turn(0) and record.turns[-1] == _turn(1000)


def test_a_later_line_replaces_the_turn_in_its_first_position(tmp_path: Path) -> None:
    store, thread_id, _ = _new_thread(tmp_path)
    for turn in (_turn(1, "inProgress"), _turn(2, "inProgress"), _turn(1), _turn(2, "failed")):
        store.save_turn(thread_id, turn)
    record = store.load(thread_id)
    assert record is not None and record.turns == [_turn(1), _turn(2, "failed")]


def test_a_torn_last_line_is_ignored_then_truncated_by_the_next_save(tmp_path: Path) -> None:
    store, thread_id, path = _new_thread(tmp_path)
    store.save_turn(thread_id, _turn(1))
    complete = path.read_bytes()
    with open(path, "ab") as file:  # a crash in the middle of an append
        file.write(json.dumps(_turn(2)).encode()[:25])
    record = store.load(thread_id)
    assert record is not None and record.turns == [_turn(1)]
    assert len(path.read_bytes()) == len(complete) + 25  # load only reads
    store.save_turn(thread_id, _turn(3))
    assert path.read_bytes() == complete + json.dumps(_turn(3), separators=(",", ":")).encode() + b"\n"
    record = store.load(thread_id)
    assert record is not None and record.turns == [_turn(1), _turn(3)]


def test_a_failed_append_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, thread_id, path = _new_thread(tmp_path)
    store.save_turn(thread_id, _turn(1))
    before = path.read_bytes()

    real_write = os.write
    calls: list[int] = []

    def disk_full_after_ten_bytes(fd: int, data: bytes | memoryview) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))  # part of the line reached the file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_runtime_store.os, "write", disk_full_after_ten_bytes)
    with pytest.raises(OSError, match="No space left"):
        store.save_turn(thread_id, _turn(2))
    assert len(calls) == 2
    assert path.read_bytes() == before


def test_in_progress_turn_reloads_interrupted_with_only_its_user_message(tmp_path: Path) -> None:
    store, thread_id, _ = _new_thread(tmp_path)
    store.save_turn(thread_id, _turn(1))
    store.save_turn(thread_id, _turn(2, "inProgress"))
    record = store.load(thread_id)
    assert record is not None
    assert record.turns[0] == _turn(1)
    assert record.turns[1] == {"id": "turn-2", "status": "interrupted", "items": [_user_item("2")], "error": None}


def test_the_old_json_format_loads_and_converts_on_the_first_save(tmp_path: Path) -> None:
    store = ThreadStore(str(tmp_path))
    thread_id = str(uuid.uuid4())
    legacy = tmp_path / "threads" / f"{thread_id}.json"
    old = {"id": thread_id, "cwd": "/work", "approvalPolicy": "never", "sandbox": SANDBOX}
    legacy.write_text(json.dumps({**old, "turns": [_turn(1), _turn(2, "inProgress")]}))
    interrupted = {"id": "turn-2", "status": "interrupted", "items": [_user_item("2")], "error": None}
    record = store.load(thread_id)
    assert record is not None and record.header == _header(thread_id)
    assert record.turns == [_turn(1), interrupted]
    with pytest.raises(FileExistsError):
        store.create(_header(thread_id))
    store.save_turn(thread_id, _turn(3))
    assert not legacy.exists()
    assert sorted(os.listdir(legacy.parent)) == [f"{thread_id}.jsonl"]
    record = store.load(thread_id)
    assert record is not None and record.header == _header(thread_id)
    assert record.turns == [_turn(1), interrupted, _turn(3)]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not json\n", "line 1"),
        (b'{"id": "OTHER", "cwd": "/w", "approvalPolicy": "never", "sandbox": {}}\n', "header names thread"),
        (
            b'{"id": "THREAD", "cwd": "/w", "approvalPolicy": "never", "sandbox": {}}\n{"id": "t"}\n{oops\n{"id": 2',
            "line 3",
        ),
        (
            b'{"id": "THREAD", "cwd": "/w", "approvalPolicy": "never", "sandbox": {}}\n{"status": "completed"}\n',
            "line 2",
        ),
    ],
    ids=["bad-header", "other-thread", "bad-middle-line", "turn-without-id"],
)
def test_a_corrupt_file_raises_value_error_naming_it(tmp_path: Path, content: bytes, problem: str) -> None:
    store = ThreadStore(str(tmp_path))
    thread_id = str(uuid.uuid4())
    path = tmp_path / "threads" / f"{thread_id}.jsonl"
    path.write_bytes(content.replace(b"THREAD", thread_id.encode()).replace(b"OTHER", str(uuid.uuid4()).encode()))
    with pytest.raises(ValueError, match=problem) as raised:
        store.load(thread_id)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    "content", [b"", b'{"id": "THREAD", "cwd": "/w", "approvalPolicy": "never"'], ids=["empty", "torn-header"]
)
def test_a_file_without_a_complete_header_is_no_thread_and_is_not_written_to(tmp_path: Path, content: bytes) -> None:
    """What a power cut right after `create` can leave (nothing is fsynced): the thread never durably existed."""
    store = ThreadStore(str(tmp_path))
    thread_id = str(uuid.uuid4())
    path = tmp_path / "threads" / f"{thread_id}.jsonl"
    path.write_bytes(content.replace(b"THREAD", thread_id.encode()))
    assert store.load(thread_id) is None
    with pytest.raises(ValueError, match="no complete header line") as raised:
        store.save_turn(thread_id, _turn(1))
    assert str(path) in str(raised.value)
    assert path.read_bytes() == content.replace(b"THREAD", thread_id.encode())


def test_a_corrupt_old_json_file_raises_value_error_naming_it(tmp_path: Path) -> None:
    store = ThreadStore(str(tmp_path))
    thread_id = str(uuid.uuid4())
    legacy = tmp_path / "threads" / f"{thread_id}.json"
    legacy.write_text('{"id": "truncated')
    for action in (lambda: store.load(thread_id), lambda: store.save_turn(thread_id, _turn(1))):
        with pytest.raises(ValueError, match="corrupt") as raised:
            action()
        assert str(legacy) in str(raised.value)


def test_a_save_to_a_thread_without_a_file_raises_file_not_found(tmp_path: Path) -> None:
    store = ThreadStore(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        store.save_turn(str(uuid.uuid4()), _turn(1))
    assert os.listdir(tmp_path / "threads") == []


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "not-a-uuid", f"{uuid.uuid4()}/x", ""])
def test_ids_must_look_like_uuids_before_any_path_is_touched(tmp_path: Path, bad_id: str) -> None:
    store = ThreadStore(str(tmp_path))
    header = _header(bad_id)
    for action in (lambda: store.load(bad_id), lambda: store.save_turn(bad_id, _turn(1)), lambda: store.create(header)):
        with pytest.raises(ValueError, match="must look like a UUID"):
            action()
    assert os.listdir(tmp_path / "threads") == []
