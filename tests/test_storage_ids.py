"""Tests for storage id validation and the on-disk layout of StorageRoot."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agenthost.storage import ID_PATTERN, InvalidIdError, StorageError, StorageRoot, validate_id


@pytest.mark.parametrize("value", ["a", "A", "0", "thread-1", "p_2", "x" * 64, "9-_"])
def test_valid_ids_are_returned_unchanged(value: str) -> None:
    assert validate_id("thread id", value) == value
    assert re.fullmatch(ID_PATTERN, value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "must not be empty"),
        ("a/b", "path separator"),
        ("..", "must not contain '..'"),
        ("../x", "path separator"),
        ("a..b", "'..'"),
        ("a\x00", "NUL"),
        (" a", "whitespace"),
        ("a b", "whitespace"),
        ("a\n", "whitespace"),
        ("x" * 65, "at most 64 characters, got 65"),
        (5, "must be a str, got int"),
        (None, "must be a str, got NoneType"),
        ("é", "must match"),
        ("-a", "must match"),
        ("_a", "must match"),
    ],
)
def test_invalid_ids_raise_naming_kind_value_and_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidIdError) as caught:
        validate_id("project id", value)
    message = str(caught.value)
    assert message.startswith(f"project id {value!r} is invalid: ")
    assert reason in message


def test_invalid_id_error_is_a_storage_error_and_value_error() -> None:
    with pytest.raises(StorageError):
        validate_id("thread id", "a/../b")
    with pytest.raises(ValueError, match=re.escape("thread id 'a/../b' is invalid")):
        validate_id("thread id", "a/../b")


def test_storage_root_layout_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = StorageRoot("state")
    assert root.root == tmp_path / "state"
    assert root.root.is_absolute()
    assert root.projects_dir == tmp_path / "state" / "projects"
    assert root.global_dir == tmp_path / "state" / "global"
    assert root.system_dir == tmp_path / "state" / "system"
    assert root.db_path == tmp_path / "state" / "system" / "agenthost.db"
    assert root.runtime_state_dir == tmp_path / "state" / "system" / "runtime-state"
    assert root.project_dir("p1") == root.projects_dir / "p1"
    assert root.threads_dir("p1") == root.projects_dir / "p1" / "threads"
    assert root.transcript_path("p1", "t1") == root.projects_dir / "p1" / "threads" / "t1.md"
    assert root == StorageRoot(os.fspath(tmp_path / "state"))


def test_ensure_creates_folders_idempotently(tmp_path: Path) -> None:
    root = StorageRoot(tmp_path / "state")
    assert not root.root.exists()
    root.ensure()
    root.ensure()
    for directory in (root.projects_dir, root.global_dir, root.system_dir, root.runtime_state_dir):
        assert directory.is_dir()
    assert not root.db_path.exists()


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", "/etc", "", "a\x00"])
def test_paths_refuse_ids_that_escape_the_root(tmp_path: Path, bad: str) -> None:
    root = StorageRoot(tmp_path)
    with pytest.raises(InvalidIdError, match=re.escape(repr(bad))):
        root.project_dir(bad)
    with pytest.raises(InvalidIdError, match="project id"):
        root.transcript_path(bad, "t1")
    with pytest.raises(InvalidIdError, match="thread id"):
        root.transcript_path("p1", bad)


@pytest.mark.parametrize(("project_id", "thread_id"), [("p", "t"), ("A-1", "b_2"), ("x" * 64, "y" * 64)])
def test_valid_paths_stay_inside_the_root(tmp_path: Path, project_id: str, thread_id: str) -> None:
    root = StorageRoot(tmp_path)
    path = root.transcript_path(project_id, thread_id).resolve()
    assert path.is_relative_to(root.projects_dir.resolve())
    assert path.name == f"{thread_id}.md"
