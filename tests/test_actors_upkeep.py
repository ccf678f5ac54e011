"""The persistence actor's upkeep (actors/_upkeep.py): when transcripts are handed to the background fsync, when
checkpoints run, what a tick repairs, and what a stop waits for. The decisions are checked on the mixin alone
(stubs for the database, the writer and the background fsync), the outcomes on a real actor."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import wait_until
from persistencekit import Collector

from agenthost.actors import FakeClock, HostUnavailableError
from agenthost.actors._persistence import PersistenceActor
from agenthost.actors._refs import ask
from agenthost.actors._upkeep import (
    CHECKPOINT_INTERVAL_S,
    CHECKPOINT_PAGES,
    FSYNC_STOP_WAIT_S,
    SYNC_THREADS,
    Upkeep,
    _SyncTranscripts,
)
from agenthost.protocol._messages import BeginTurn, CreateThread, ListThreads
from agenthost.storage import AtomicFs, Database, StorageIOError, StorageRoot, parse_checkpoints
from agenthost.testing import capture_events

pytestmark = pytest.mark.timeout(30)


# --- the mixin's decisions --------------------------------------------------------------------------------------
class _Writer:
    def __init__(self, unsynced: int) -> None:
        self.unsynced = unsynced
        self.taken = 0

    def take_unsynced(self) -> dict[str, Path]:
        self.taken += 1
        paths = {f"t{index}": Path(f"t{index}.md") for index in range(self.unsynced)}
        self.unsynced = 0
        return paths


class _Fsync:
    def __init__(self, *, busy: bool) -> None:
        self.busy = busy
        self.started: list[dict[str, Path]] = []

    def start(self, paths: dict[str, Path]) -> bool:
        self.started.append(paths)
        return True


class _Db:
    def __init__(self, frames: tuple[int, int]) -> None:
        self.frames = frames

    def checkpoint(self, mode: str) -> tuple[int, int]:
        return self.frames


class _Upkept(Upkeep):
    """The mixin on stubs: `sync_threads` 4, `checkpoint_pages` 20."""

    def __init__(
        self,
        *,
        unsynced: int = 0,
        busy: bool = False,
        pages: int = 0,
        frames: tuple[int, int] = (0, 0),
        started: bool = True,
    ) -> None:
        self.actor_ref = Collector()
        self._sync_threads, self._sync_told = 4, False
        self._checkpoint_pages, self._wal_pages = 20, pages
        self._writer = _Writer(unsynced)
        self._transcripts = self._writer if started else None  # type: ignore[assignment]
        self._fsync = _Fsync(busy=busy)  # type: ignore[assignment]
        self._stub_db = _Db(frames)
        self._later = None

    @property
    def db(self) -> Any:
        return self._stub_db

    @property
    def transcripts(self) -> Any:
        return self._writer

    def told_syncs(self) -> int:
        return sum(isinstance(message, _SyncTranscripts) for message in self.actor_ref.told())


@pytest.mark.parametrize(
    ("unsynced", "busy", "told_already", "started", "tells"),
    [
        (3, False, False, True, 0),  # fewer than sync_threads wait: the tick fsyncs them
        (4, False, False, True, 1),  # exactly sync_threads
        (9, False, False, True, 1),  # one group appended past it at once
        (9, False, True, True, 0),  # one is told already and not handled yet
        (9, True, False, True, 0),  # a batch runs: its end checks again
        (9, False, False, False, 0),  # not started yet
    ],
)
def test_the_background_fsync_is_told_once_sync_threads_wait_and_only_once(
    unsynced: int, busy: bool, told_already: bool, started: bool, tells: int
) -> None:
    upkept = _Upkept(unsynced=unsynced, busy=busy, started=started)
    upkept._sync_told = told_already
    upkept._sync_later()
    upkept._sync_later()  # the next message: nothing more is told while one waits
    assert upkept.told_syncs() == tells
    assert upkept._sync_told is (told_already or tells == 1)


def test_handling_the_sync_starts_one_batch_and_the_next_threshold_tells_again() -> None:
    upkept = _Upkept(unsynced=5)
    upkept._sync_later()
    assert upkept._upkeep(_SyncTranscripts()) is True
    assert [sorted(paths) for paths in upkept._fsync.started] == [["t0", "t1", "t2", "t3", "t4"]]  # type: ignore[union-attr]
    upkept._writer.unsynced = 4  # appends since; the batch ended (not busy)
    upkept._sync_later()
    assert upkept.told_syncs() == 2


@pytest.mark.parametrize(("unsynced", "busy"), [(0, False), (5, True)])
def test_the_sync_starts_no_batch_when_nothing_waits_or_one_runs(unsynced: int, busy: bool) -> None:
    """A tick may have fsynced everything before the sync was handled; a running batch is never joined."""
    upkept = _Upkept(unsynced=unsynced, busy=busy)
    upkept._sync_told = True
    assert upkept._upkeep(_SyncTranscripts()) is True
    assert upkept._fsync.started == [] and upkept._sync_told is False  # type: ignore[union-attr]


def test_anything_else_is_not_upkeep() -> None:
    assert _Upkept()._upkeep(ListThreads()) is False


@pytest.mark.parametrize(("pages", "checkpoints"), [(19, 0), (20, 1), (27, 1)])
def test_a_checkpoint_runs_after_a_message_once_the_wal_holds_checkpoint_pages(pages: int, checkpoints: int) -> None:
    upkept = _Upkept(pages=pages, frames=(pages, pages))
    with capture_events("persistence.checkpoint") as log:
        upkept._after_commit()
    assert [event["mode"] for event in log.events] == ["PASSIVE"] * checkpoints


@pytest.mark.parametrize(
    ("frames", "pages_after"),
    [((27, 27), 0), ((27, 11), 27), ((0, 0), 0), ((int("1000"), int("1000")), 0)],  # equal values, two objects
)
def test_only_a_checkpoint_that_moved_every_frame_resets_the_count(frames: tuple[int, int], pages_after: int) -> None:
    upkept = _Upkept(pages=27, frames=frames)
    with capture_events("persistence.checkpoint") as log:
        assert upkept._checkpoint("PASSIVE") == frames
    assert [(e["mode"], e["wal_frames"], e["checkpointed"]) for e in log.events] == [("PASSIVE", *frames)]
    assert upkept._wal_pages == pages_after
    upkept._after_commit()  # the next message (a read: no commit in between)
    assert upkept._wal_pages == pages_after  # an incomplete one is tried again, a complete one is not


def test_the_defaults_are_256_waiting_transcripts_a_10_s_stop_wait_a_5_s_tick_and_1000_pages() -> None:
    assert (SYNC_THREADS, FSYNC_STOP_WAIT_S) == (256, 10.0)  # D4's 256 and the persistence contract's wait
    assert (CHECKPOINT_INTERVAL_S, CHECKPOINT_PAGES) == (5.0, 1000)  # the README's tick and D9's pages
    assert inspect.signature(PersistenceActor.__init__).parameters["sync_threads"].default == SYNC_THREADS


# --- on a real actor ---------------------------------------------------------------------------------------------
class _FailingAppends(AtomicFs):
    """Fails every append to the transcripts named in `failing` (an I/O error)."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    def append(self, path: Any, data: bytes) -> None:
        if path.stem in self.failing:
            raise OSError(5, "injected append failure")
        super().append(path, data)


def _actor(tmp_path: Path, **kwargs: Any) -> tuple[Any, StorageRoot, FakeClock]:
    clock, root = FakeClock(), StorageRoot(tmp_path / "root")
    ref = PersistenceActor.start(root=root, clock=clock, wall=time.time, **kwargs)
    ask(ref, CreateThread(thread_id="t1", project_id="p", title="t1"), 10.0)
    return ref, root, clock


def test_a_stale_transcript_is_repaired_at_the_tick_without_a_new_write(tmp_path: Path) -> None:
    """D22: the tick repairs a transcript whose append failed, though nothing was written to its thread since."""
    fs = _FailingAppends()
    ref, root, clock = _actor(tmp_path, transcript_fs=fs)
    try:
        fs.failing.add("t1")
        ask(ref, BeginTurn(turn_id="u1", thread_id="t1", user_text="q"), 10.0)  # committed; its append failed
        assert "u1" not in dict(parse_checkpoints(root.transcript_path("p", "t1").read_text()))
        fs.failing.clear()
        clock.advance(5.0)
        ask(ref, ListThreads(), 10.0)  # handled after the tick
        assert dict(parse_checkpoints(root.transcript_path("p", "t1").read_text()))["u1"] == "pending"
    finally:
        ref.stop()


def test_a_refused_unmark_is_logged_and_the_actor_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Database, thread_ids: Any) -> None:
        raise StorageIOError("injected: disk I/O error while unmarking")

    ref, _root, clock = _actor(tmp_path)
    try:
        ask(ref, BeginTurn(turn_id="u1", thread_id="t1", user_text="q"), 10.0)
        monkeypatch.setattr(Database, "mark_transcripts_synced", refuse)
        with capture_events("persistence.mark_synced_failed") as log:
            clock.advance(5.0)
            assert [thread.thread_id for thread in ask(ref, ListThreads(), 10.0)] == ["t1"]  # still answering
        assert [event["threads"] for event in log.events] == [1]
    finally:
        ref.stop()


def test_an_unknown_message_crashes_the_persistence_actor(tmp_path: Path) -> None:
    """S16: an unknown message is a crash its supervisor decides about, never silently answered."""

    class Stranger(msgspec.Struct, frozen=True):
        pass

    ref, _root, _clock = _actor(tmp_path)
    with pytest.raises(HostUnavailableError, match="Stranger"):
        ref.ask(Stranger(), timeout=10)
    wait_until("the actor stopped", lambda: not ref.is_alive())


@pytest.mark.parametrize("done", [True, False])
def test_a_stop_says_so_only_when_the_background_fsync_outlived_its_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, done: bool
) -> None:
    from agenthost.actors import _transcript_fsync

    waited: list[float] = []

    def wait(self: Any, timeout_s: float) -> bool:
        waited.append(timeout_s)
        return done

    monkeypatch.setattr(_transcript_fsync.BackgroundFsync, "wait", wait)
    ref, _root, _clock = _actor(tmp_path)
    with capture_events("persistence.fsync_still_running") as log:
        ref.stop()
    assert waited == [FSYNC_STOP_WAIT_S]
    assert [event["waited_s"] for event in log.events] == ([] if done else [FSYNC_STOP_WAIT_S])


def test_a_transcript_writes_time_is_its_own_and_never_negative(tmp_path: Path) -> None:
    ref, _root, _clock = _actor(tmp_path)
    try:
        with capture_events("persistence.timed") as log:
            started = time.perf_counter()
            ask(ref, BeginTurn(turn_id="u1", thread_id="t1", user_text="q"), 10.0)
            elapsed = time.perf_counter() - started
        timed = [event["seconds"] for event in log.events if event["op"] == "transcript"]
        assert timed and all(0.0 <= seconds <= elapsed for seconds in timed)
    finally:
        ref.stop()
