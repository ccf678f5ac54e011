"""Opening the persistence actor's database (actors/_storage_open.py): the start-up repairs and their events, the
full check after a rebuild, the fault-injection path's own quick_check, and that a database that fails any of it is
closed without a checkpoint."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from agenthost.actors import _storage_open
from agenthost.actors._storage_open import open_and_repair
from agenthost.chaos import FaultyVFS
from agenthost.storage import (
    Database,
    StorageCorruptError,
    StorageIOError,
    StorageRoot,
    TranscriptWriter,
    private_mkdir,
)
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def root(tmp_path: Path) -> StorageRoot:
    """A root with project p, thread t1 (its transcript written) and a pending turn u1 of it; closed."""
    root = StorageRoot(tmp_path / "root")
    db = open_and_repair(root, None, time.time())
    private_mkdir(root.threads_dir("p"))
    db.ensure_project("p", "p", time.time())
    TranscriptWriter(root, db).thread_created(db.create_thread("t1", "p", "t1", time.time()))
    db.begin_turn("u1", "t1", "q", time.time())
    db.close()
    return root


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every Database.close from now on appends its `checkpoint` argument."""
    calls: list[bool] = []
    original = Database.close

    def close(self: Database, *, checkpoint: bool = True) -> None:
        calls.append(checkpoint)
        original(self, checkpoint=checkpoint)

    monkeypatch.setattr(Database, "close", close)
    return calls


def test_start_up_repairs_what_it_finds_one_event_each_warning_unless_ok(root: StorageRoot) -> None:
    """D18: a lost project folder (and the transcript in it) is repaired at open; an ok finding is info."""
    shutil.rmtree(root.threads_dir("p"))
    with capture_events("storage.health") as log:
        db = open_and_repair(root, None, time.time())
    try:
        assert root.transcript_path("p", "t1").exists()
        found = {(e["kind"], e["status"], e["level"]) for e in log.events}
        assert {("project-folder", "repaired", "warning"), ("transcript", "repaired", "warning")} <= found
        assert ("mappings", "ok", "info") in found
        assert all(e["level"] == ("info" if e["status"] == "ok" else "warning") for e in log.events)
        assert db.get_turn("u1").status == "pending"  # the coordinator ends it, with words its callers know
    finally:
        db.close()


def test_after_a_rebuild_the_whole_root_is_checked_and_otherwise_only_what_changed(root: StorageRoot) -> None:
    with capture_events("storage.health") as healthy:
        open_and_repair(root, None, time.time()).close()
    root.db_path.write_bytes(b"\x00" * 100 + root.db_path.read_bytes()[100:])  # garbage over the header
    with capture_events("storage.health", "storage.quarantined") as rebuilt:
        db = open_and_repair(root, None, time.time())
    try:
        assert [e["rebuilt_threads"] for e in rebuilt.of("storage.quarantined")] == [1]
        assert "integrity" in {e["kind"] for e in rebuilt.of("storage.health")}  # the full check's
        assert "integrity" not in {e["kind"] for e in healthy.events}
    finally:
        db.close()


@pytest.mark.parametrize(
    "problems",
    [["row 5 missing from index turns_by_thread"], ["*** in database main ***", "Page 3: btreeInitPage() error"]],
)
def test_under_fault_injection_a_failed_quick_check_is_raised_not_quarantined(
    root: StorageRoot, monkeypatch: pytest.MonkeyPatch, closes: list[bool], problems: list[str]
) -> None:
    monkeypatch.setattr(Database, "quick_check", lambda self: problems)
    with FaultyVFS(None) as vfs, pytest.raises(StorageCorruptError, match="failed quick_check") as raised:
        open_and_repair(root, vfs.vfs_name, time.time())
    assert str(problems) in str(raised.value)
    assert closes == [False]  # nothing more is written to it
    assert root.db_path.exists()  # left where it is: not quarantined


def test_a_failed_quick_check_names_its_first_five_problems(root: StorageRoot, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = [f"problem {index}" for index in range(7)]
    monkeypatch.setattr(Database, "quick_check", lambda self: problems)
    with FaultyVFS(None) as vfs, pytest.raises(StorageCorruptError) as raised:
        open_and_repair(root, vfs.vfs_name, time.time())
    assert str(problems[:5]) in str(raised.value) and "problem 5" not in str(raised.value)


def test_under_fault_injection_a_sound_database_opens_and_is_repaired(root: StorageRoot, closes: list[bool]) -> None:
    shutil.rmtree(root.threads_dir("p"))
    with FaultyVFS(None) as vfs:
        db = open_and_repair(root, vfs.vfs_name, time.time())
        try:
            assert root.threads_dir("p").is_dir() and db.get_turn("u1").status == "pending"
        finally:
            db.close(checkpoint=False)
    assert closes == [False]


def test_a_repair_that_fails_closes_the_database_without_a_checkpoint_and_is_raised(
    root: StorageRoot, monkeypatch: pytest.MonkeyPatch, closes: list[bool]
) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        raise StorageIOError("injected: the disk failed during the start-up checks")

    monkeypatch.setattr(_storage_open, "check_storage", failing)
    with pytest.raises(StorageIOError, match="during the start-up checks"):
        open_and_repair(root, None, time.time())
    assert closes == [False]
