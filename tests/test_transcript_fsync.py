"""The persistence actor's background fsync (actors._transcript_fsync): one batch at a time, its outcome taken once,
and a bug in it fails the batch instead of passing it for synced."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from agenthost.actors._transcript_fsync import BackgroundFsync
from agenthost.storage import AtomicFs, StorageError, StorageRoot, TranscriptStore

pytestmark = pytest.mark.timeout(10)


class _HeldFs(AtomicFs):
    def __init__(self, error: BaseException | None = None) -> None:
        self.release = threading.Event()
        self.synced: list[str] = []
        self.error = error

    def fsync_file(self, path: Path) -> None:
        assert self.release.wait(5.0)
        if self.error is not None:
            raise self.error
        self.synced.append(path.name)
        super().fsync_file(path)


def _batch(tmp_path: Path, *names: str) -> dict[str, Path]:
    paths = {}
    for name in names:
        paths[name] = tmp_path / f"{name}.md"
        paths[name].write_text(name)
    return paths


def test_one_batch_at_a_time_and_its_outcome_is_taken_once(tmp_path: Path) -> None:
    fs, done = _HeldFs(), threading.Event()
    fsync = BackgroundFsync(TranscriptStore(StorageRoot(tmp_path / "root"), fs=fs), done.set)
    assert fsync.start(_batch(tmp_path, "t1", "t2"))
    assert fsync.busy and not fsync.start(_batch(tmp_path, "t3"))  # refused while the first runs
    assert fsync.take() is None and not fsync.wait(0.0)
    fs.release.set()
    assert done.wait(5.0) and fsync.wait(5.0) and not fsync.busy
    assert fsync.take() == {"t1": None, "t2": None}
    assert fsync.take() is None  # once
    assert fs.synced == ["t1.md", "t2.md"]


@pytest.mark.parametrize(
    ("error", "said"), [(OSError(5, "injected"), "fsync of transcript"), (RuntimeError("a bug"), "a bug")]
)
def test_a_failing_fsync_or_a_bug_fails_its_threads(tmp_path: Path, error: BaseException, said: str) -> None:
    """An fsync's OSError fails its thread (the store's StorageIOError); anything else fails the whole batch with a
    StorageError naming it: never an outcome that passes them for synced."""
    fs, done = _HeldFs(error), threading.Event()
    fs.release.set()
    fsync = BackgroundFsync(TranscriptStore(StorageRoot(tmp_path / "root"), fs=fs), done.set)
    assert fsync.start(_batch(tmp_path, "t1", "t2"))
    assert done.wait(5.0)
    outcome: Any = fsync.take()
    assert sorted(outcome) == ["t1", "t2"]
    assert all(isinstance(failure, StorageError) and said in str(failure) for failure in outcome.values())
