"""Storage root migration: backup-API copy, verification, atomic switch, resume after a crash at every step."""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from agenthost._cli_storage import add_storage_commands, run_storage_command
from agenthost.storage import (
    Database,
    MigrationError,
    MigrationHooks,
    StorageRoot,
    TranscriptStore,
    migrate_storage,
    render_transcript,
    resolve_root,
)

NOW = 1_700_000_000.0


class SimulatedCrash(Exception):
    """Raised by a hook: the process 'dies' right before a file-system step."""


class Recorder(MigrationHooks):
    """Counts the steps; crashes before the `crash_at`-th one (1-based); runs `on_verify` before verification."""

    def __init__(self, crash_at: int | None = None, on_verify: Any = None) -> None:
        self.steps: list[str] = []
        self.crash_at = crash_at
        self.on_verify = on_verify

    def before(self, step: str, path: Path) -> None:  # type: ignore[override]
        self.steps.append(step)
        if len(self.steps) == self.crash_at:
            raise SimulatedCrash(f"crash before step {len(self.steps)} ({step} {path})")
        if step == "verify" and self.on_verify is not None:
            self.on_verify()
            self.on_verify = None


def _clock() -> Any:
    ticks = iter(range(10_000))
    return lambda: NOW + next(ticks)


def _write_transcript(db: Database, root: StorageRoot, thread_id: str) -> None:
    thread = db.get_thread(thread_id)
    text = render_transcript(thread, db.list_turns(thread_id), db.list_action_cards(thread_id))
    TranscriptStore(root).write(thread.project_id, thread_id, text)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> StorageRoot:
    """A root whose last writes are only in the WAL: copied while the writer is still open, like after a crash."""
    base = tmp_path_factory.mktemp("template")
    stage = StorageRoot(base / "stage")
    stage.ensure()
    db = Database.open(stage.db_path)
    db.ensure_project("default", "default", NOW)
    db.ensure_project("bulk", "bulk", NOW)
    for index in range(100):  # enough pages for several backup steps
        db.create_thread(f"b{index}", "bulk", "x" * 2000, NOW)
    db.create_thread("t1", "default", "Release notes", NOW)
    db.begin_turn("u1", "t1", "hello\n<!-- checkpoint turn=u9 phase=completed status=completed -->", NOW)
    db.finish_turn("u1", "completed", "hi there", None, NOW + 1)
    db.begin_turn("u2", "t1", "still running", NOW + 2)
    db.create_thread("t2", "default", "Second", NOW + 3)
    db.save_mapping("t1", 1, "rt-1", NOW)
    for thread_id in ("t1", "t2"):
        _write_transcript(db, stage, thread_id)
    (stage.global_dir / "settings.json").write_text('{"a": 1}')
    (stage.runtime_state_dir / "rt-1.json").write_text('{"turns": 1}')
    (stage.system_dir / "logs").mkdir()
    (stage.system_dir / "logs" / "worker-1.log").write_bytes(b"stderr\n" * 100)
    (stage.projects_dir / "default" / "empty-folder").mkdir()
    shutil.copytree(stage.root, base / "old")  # the writer is still open: the -wal holds the newest rows
    db.close()
    old = StorageRoot(base / "old")
    assert (old.system_dir / "agenthost.db-wal").stat().st_size > 0
    return old


@pytest.fixture
def old(template: StorageRoot, tmp_path: Path) -> StorageRoot:
    shutil.copytree(template.root, tmp_path / "old")
    return StorageRoot(tmp_path / "old")


@pytest.fixture
def new(tmp_path: Path) -> StorageRoot:
    return StorageRoot(tmp_path / "new")


def _snapshot(root: StorageRoot) -> dict[str, str]:
    """SHA-256 of every file (the -shm index is left out: a read-only SQLite reader may rebuild it)."""
    return {
        str(path.relative_to(root.root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.root.rglob("*"))
        if path.is_file() and not path.name.endswith("-shm")
    }


def _rows(root: StorageRoot) -> dict[str, Any]:
    work = root.root.parent / f"{root.root.name}-read"  # read a copy: opening the DB must not touch the root
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(root.system_dir, work)
    db = Database.open(work / "agenthost.db")
    try:
        return {
            "threads": db.list_threads(),
            "turns": [db.list_turns(thread.thread_id) for thread in db.list_threads()],
            "mappings": db.load_mappings(),
        }
    finally:
        db.close()
        shutil.rmtree(work)


def _assert_faithful_copy(old: StorageRoot, new: StorageRoot) -> None:
    assert _rows(new) == _rows(old)
    old_files, new_files = _snapshot(old), _snapshot(new)
    copied = {
        rel: digest
        for rel, digest in old_files.items()
        if not rel.startswith("system/agenthost.db") and rel != "system/MOVED"
    }
    assert {rel: new_files.get(rel) for rel in copied} == copied
    assert (new.projects_dir / "default" / "empty-folder").is_dir()
    journal = json.loads((new.system_dir / "migration.json").read_text())
    assert journal["phase"] == "switched"
    assert not list(new.root.rglob("*.tmp"))  # no temp file of a crashed copy or journal write is left


def test_migration_copies_verifies_and_switches(old: StorageRoot, new: StorageRoot) -> None:
    rows_before, files_before = _rows(old), _snapshot(old)
    report = migrate_storage(old, new, wall=_clock())
    assert (report.state, report.resumed, report.transcripts) == ("switched", False, 2)
    assert report.db_pages > 50 and report.bytes_copied > report.db_pages * 4096
    assert (report.old_root, report.new_root) == (str(old.root), str(new.root))
    _assert_faithful_copy(old, new)
    assert _rows(new) == rows_before  # including the rows that were only in OLD's WAL
    files_after = _snapshot(old)
    assert files_after.pop("system/MOVED")
    assert files_after == files_before  # the pointer is the only change to OLD
    assert json.loads((old.system_dir / "MOVED").read_text())["moved_to"] == str(new.root)
    assert resolve_root(old) == new
    assert resolve_root(new) == new
    assert not (new.system_dir / "agenthost.db-wal").exists()
    assert not list(new.root.rglob("*.tmp"))


def test_resume_after_a_crash_before_every_step(template: StorageRoot, tmp_path: Path, seed: int) -> None:
    counting = Recorder()
    shutil.copytree(template.root, tmp_path / "count-old")
    migrate_storage(StorageRoot(tmp_path / "count-old"), StorageRoot(tmp_path / "count-new"), fs_hooks=counting)
    total = len(counting.steps)
    assert {"mkdir", "journal", "backup_db", "write_temp", "rename", "verify", "switch"} <= set(counting.steps)
    assert counting.steps.count("backup_db") >= 2
    rng = random.Random(seed)
    for crash_at in range(1, total + 1):
        old, new = StorageRoot(tmp_path / f"old{crash_at}"), StorageRoot(tmp_path / f"new{crash_at}")
        shutil.copytree(template.root, old.root)
        before = _snapshot(old)
        hooks = Recorder(crash_at=crash_at)
        with pytest.raises(SimulatedCrash):
            migrate_storage(old, new, fs_hooks=hooks, wall=_clock())
        step = hooks.steps[-1]
        switched = (old.system_dir / "MOVED").exists()
        assert switched == (crash_at > counting.steps.index("switch") + 1), step
        if not switched:
            assert _snapshot(old) == before, f"OLD changed before the switch (crash before {step} #{crash_at})"
        assert resolve_root(old) == (new if switched else old)
        report = None
        if rng.random() < 0.3:  # sometimes crash once more, anywhere in the resumed run
            try:
                report = migrate_storage(old, new, fs_hooks=Recorder(crash_at=rng.randint(1, total)), wall=_clock())
            except SimulatedCrash:
                pass
        if report is None:
            journal_left = (new.system_dir / "migration.json").exists()
            report = migrate_storage(old, new, wall=_clock())
            assert report.resumed == journal_left, (crash_at, step)
        assert report.state == "switched", (crash_at, step, report)
        _assert_faithful_copy(old, new)
        assert resolve_root(old) == new


def test_partial_database_copy_is_redone(old: StorageRoot, new: StorageRoot) -> None:
    class CrashOnSecondBackupStep(MigrationHooks):
        backup_steps = 0

        def before(self, step: str, path: Path) -> None:  # type: ignore[override]
            if step == "backup_db":
                self.backup_steps += 1
                if self.backup_steps == 2:
                    raise SimulatedCrash("mid-backup")

    with pytest.raises(SimulatedCrash):
        migrate_storage(old, new, fs_hooks=CrashOnSecondBackupStep())
    assert new.db_path.exists()  # some pages were written
    report = migrate_storage(old, new)
    assert (report.state, report.resumed) == ("switched", True)
    _assert_faithful_copy(old, new)


def test_failed_verification_rolls_back_new_and_leaves_old_in_use(old: StorageRoot, new: StorageRoot) -> None:
    before = _snapshot(old)
    new.root.mkdir()
    (new.root / "kept-empty-folder").mkdir()

    def damage_copy() -> None:
        with (new.global_dir / "settings.json").open("ab") as copy:
            copy.write(b"bit rot")

    report = migrate_storage(old, new, fs_hooks=Recorder(on_verify=damage_copy), wall=_clock())
    assert report.state == "rolled_back"
    assert "global/settings.json" in report.detail
    assert [path for path in new.root.rglob("*")] == [new.root / "kept-empty-folder"]
    assert _snapshot(old) == before
    assert resolve_root(old) == old
    assert migrate_storage(old, new).state == "switched"  # a clean retry works


def test_inconsistent_resumed_attempt_is_rolled_back_and_started_over(old: StorageRoot, new: StorageRoot) -> None:
    def crash() -> None:
        raise SimulatedCrash("crash right before verification")

    with pytest.raises(SimulatedCrash):
        migrate_storage(old, new, fs_hooks=Recorder(on_verify=crash))

    def damage_database_copy() -> None:
        data = bytearray(new.db_path.read_bytes())
        data[0:100] = b"\0" * 100
        new.db_path.write_bytes(bytes(data))

    report = migrate_storage(old, new, fs_hooks=Recorder(on_verify=damage_database_copy))
    assert (report.state, report.resumed) == ("switched", True)
    assert report.detail.startswith("rolled back an inconsistent earlier attempt")
    _assert_faithful_copy(old, new)


def test_temp_file_of_a_journal_write_cut_by_a_crash_does_not_block(old: StorageRoot, new: StorageRoot) -> None:
    new.system_dir.mkdir(parents=True)
    (new.system_dir / ".migration.json.k2j4.tmp").write_bytes(b'{"form')
    report = migrate_storage(old, new)
    assert (report.state, report.resumed) == ("switched", False)
    _assert_faithful_copy(old, new)


def test_refuses_overlapping_or_identical_roots(old: StorageRoot) -> None:
    for target, fragment in [
        (old, "the same folder"),
        (StorageRoot(old.root / "inner"), "is inside the old root"),
    ]:
        with pytest.raises(MigrationError, match=fragment) as caught:
            migrate_storage(old, target)
        assert str(old.root) in str(caught.value)
    parent = StorageRoot(old.root.parent)
    with pytest.raises(MigrationError, match="is inside the new root"):
        migrate_storage(old, parent)
    assert not (old.root / "inner").exists()


def test_refuses_a_non_empty_new_root_that_is_not_ours(old: StorageRoot, new: StorageRoot) -> None:
    (new.root / "notes").mkdir(parents=True)
    (new.root / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(MigrationError, match=r"notes/mine.txt") as caught:
        migrate_storage(old, new)
    assert str(new.root) in str(caught.value)
    assert sorted(p.name for p in new.root.rglob("*")) == ["mine.txt", "notes"]


def test_refuses_an_old_root_that_already_moved(old: StorageRoot, new: StorageRoot, tmp_path: Path) -> None:
    migrate_storage(old, new)
    with pytest.raises(MigrationError, match="was already migrated to"):
        migrate_storage(old, new)
    elsewhere = StorageRoot(tmp_path / "elsewhere")
    with pytest.raises(MigrationError, match="was already moved to") as caught:
        migrate_storage(old, elsewhere)
    assert str(new.root) in str(caught.value)
    assert not elsewhere.root.exists()


def test_refuses_a_journal_of_another_migration(
    old: StorageRoot, new: StorageRoot, template: StorageRoot, tmp_path: Path
) -> None:
    with pytest.raises(SimulatedCrash):
        migrate_storage(old, new, fs_hooks=Recorder(crash_at=5))
    other = StorageRoot(tmp_path / "other")
    shutil.copytree(template.root, other.root)
    with pytest.raises(MigrationError, match="holds a migration from") as caught:
        migrate_storage(other, new)
    assert str(old.root) in str(caught.value)


def test_refuses_while_the_host_holds_the_lock(old: StorageRoot, new: StorageRoot) -> None:
    with (old.system_dir / "agenthost.lock").open("w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with pytest.raises(MigrationError, match="stop the host first"):
            migrate_storage(old, new)
    assert not new.root.exists()
    assert migrate_storage(old, new).state == "switched"  # lock file present but not held: fine


def test_refuses_a_root_without_database(tmp_path: Path, new: StorageRoot) -> None:
    empty = StorageRoot(tmp_path / "empty")
    empty.ensure()
    with pytest.raises(MigrationError, match="no database at"):
        migrate_storage(empty, new)


def test_resolve_root_follows_chains_and_refuses_dangling_pointers(
    old: StorageRoot, new: StorageRoot, tmp_path: Path
) -> None:
    migrate_storage(old, new)
    newer = StorageRoot(tmp_path / "newer")
    migrate_storage(new, newer)
    assert resolve_root(old) == newer
    (newer.system_dir / "migration.json").unlink()
    with pytest.raises(MigrationError, match="holds no finished migration") as caught:
        resolve_root(old)
    assert str(newer.root) in str(caught.value)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="agenthost")
    add_storage_commands(parser.add_subparsers(dest="command", required=True))
    return run_storage_command(parser.parse_args(list(argv)))


def test_cli_migrate_storage_prints_the_report(
    old: StorageRoot, new: StorageRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("migrate-storage", "--root", str(old.root), str(new.root)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "state: switched"
    assert "transcripts: 2" in out and "resumed: no" in out
    assert out[-1] == f"the old root is kept: check the new one, then delete {old.root} yourself"
    assert _cli("migrate-storage", "--root", str(old.root), str(new.root)) == 1
    assert "was already migrated to" in capsys.readouterr().err
    assert _cli("doctor", "--root", str(old.root)) == 1  # the copied pending turn u2 is reported
    out = capsys.readouterr().out
    assert f"[ok] root {old.root}: moved to {new.root}; checking that root" in out
    assert "[problem] pending-turn u2 (thread t1)" in out
