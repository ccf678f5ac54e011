"""The persistence actor's upkeep: its transcript writes, their fsyncs, and the WAL checkpoints (mixed into it).

Contract (the actor's module docstring, actors._persistence, says when a caller's write is durable):
- `_transcript(write)` runs one write of the `TranscriptWriter`, timed apart from the commit (one
  `StorageTimed(op="transcript")` debug event), or, inside a group commit (`_later` set), keeps it for after the
  commit. A failed write is one `TranscriptFailed` error event, never a failed commit: the database is the truth and
  the thread stays marked there until its transcript is repaired.
- Appends wait for one fsync per thread: once `sync_threads` (SYNC_THREADS, 256) transcripts wait, the actor tells
  itself `_SyncTranscripts` (behind the messages already waiting), which hands them to the background fsync's thread
  (actors._transcript_fsync, one batch at a time); its end is told as `_TranscriptsFsynced`, whose outcome the actor
  takes (a failure leaves its thread stale). `_sync_later` is called after every message.
- Every `checkpoint_interval_s` (CHECKPOINT_INTERVAL_S, 5 s, injected clock) a `_CheckpointTick` takes the
  background outcome, fsyncs what still waits, repairs stale transcripts, unmarks the threads whose transcript holds
  every change, and runs a PASSIVE checkpoint. A WAL hook keeps the WAL's size in pages after each commit; at
  `checkpoint_pages` (CHECKPOINT_PAGES, 1000) or more a PASSIVE checkpoint runs right after the message
  (`_after_commit`, after every message the actor handles alone and every group commit). A checkpoint that moved
  every frame resets that count to 0, so the messages after it do not checkpoint again; one that could not (a
  reader holds an older snapshot) leaves it, so each message after it tries again until one does.
- `_sync_at_stop()` waits up to FSYNC_STOP_WAIT_S (10 s) for the background fsync (past it: "persistence.
  fsync_still_running", and those threads stay marked), then does a tick's transcript work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from agenthost.actors._clock import Clock, Timer
from agenthost.actors._events import StorageTimed, TranscriptFailed
from agenthost.actors._log import get_logger
from agenthost.actors._refs import tell_quietly
from agenthost.actors._transcript_fsync import BackgroundFsync
from agenthost.storage import CheckpointMode, Database, StorageError, TranscriptWriter

__all__ = [
    "CHECKPOINT_INTERVAL_S",
    "CHECKPOINT_PAGES",
    "FSYNC_STOP_WAIT_S",
    "SYNC_THREADS",
    "TranscriptWrite",
    "Upkeep",
]

CHECKPOINT_INTERVAL_S = 5.0  # the tick: a PASSIVE checkpoint and the transcripts' fsync (HostConfig's default too)
CHECKPOINT_PAGES = 1000  # WAL pages after a commit that make a PASSIVE checkpoint run at once
SYNC_THREADS = 256  # transcripts appended to and not fsynced yet that make the actor fsync them before the tick
FSYNC_STOP_WAIT_S = 10.0  # how long a stop waits for the background fsync (after it: those threads stay marked)

_log = get_logger("agenthost.persistence")
TranscriptWrite = Callable[[], list[tuple[str, StorageError]]]  # one write of the TranscriptWriter: its failures


class _CheckpointTick(msgspec.Struct, frozen=True):
    """Timer message: run the periodic PASSIVE checkpoint."""


class _SyncTranscripts(msgspec.Struct, frozen=True):
    """Told to itself once `sync_threads` transcripts wait for their fsync: fsync them (one fsync each), on the
    background fsync's thread."""


class _TranscriptsFsynced(msgspec.Struct, frozen=True):
    """Told by the background fsync's thread when its batch is done: take its outcome."""


class Upkeep:
    """Transcript writes, fsyncs and checkpoints of the persistence actor (the base of its group commit mixin,
    actors._groupcommit; the actor provides `db`, `transcripts`, `actor_ref` and the state below, set in its
    `__init__` and `on_child_start`)."""

    actor_ref: Any
    _clock: Clock
    _interval: float  # checkpoint_interval_s
    _timer: Timer | None
    _checkpoint_pages: int
    _wal_pages: int  # the WAL's size after the last commit (the WAL hook)
    _sync_threads: int
    _sync_told: bool  # a _SyncTranscripts is waiting in the mailbox
    _fsync: BackgroundFsync | None  # fsyncs transcripts while the actor answers
    _transcript_s: float  # transcript time inside the message being handled (kept out of its commit time)
    _later: list[TranscriptWrite] | None  # inside a group commit: its transcript writes
    _transcripts: TranscriptWriter | None  # None until the actor has started

    @property
    def db(self) -> Database:
        raise NotImplementedError

    @property
    def transcripts(self) -> TranscriptWriter:
        raise NotImplementedError

    def _start_upkeep(self) -> None:
        """Once the database and the writer are open: the background fsync, the WAL hook and the first tick."""
        ref = self.actor_ref
        self._fsync = BackgroundFsync(self.transcripts.store, lambda: tell_quietly(ref, _TranscriptsFsynced()))
        self.db.set_wal_hook(self._on_wal_commit)
        self._schedule_checkpoint()

    def _upkeep(self, message: Any) -> bool:
        """Handle an upkeep message (True), or say it is not one (False)."""
        match message:
            case _SyncTranscripts():
                self._sync_told = False
                if self._fsync is not None and not self._fsync.busy and self.transcripts.unsynced:
                    self._fsync.start(self.transcripts.take_unsynced())
            case _TranscriptsFsynced():
                self._take_fsynced()
                self._sync_later()
            case _CheckpointTick():
                self._sync_transcripts()
                self._checkpoint("PASSIVE")
                self._schedule_checkpoint()
            case _:
                return False
        return True

    def _sync_at_stop(self) -> None:
        if self._fsync is not None and not self._fsync.wait(FSYNC_STOP_WAIT_S):
            _log.warning("persistence.fsync_still_running", waited_s=FSYNC_STOP_WAIT_S)
        self._sync_transcripts()

    def _sync_transcripts(self) -> None:
        """A tick's transcript work: the background outcome, an fsync of what waits, stale repairs, unmarking."""
        self._take_fsynced()
        self._transcript(self.transcripts.sync_appends)
        if self.transcripts.stale:
            self._transcript(self.transcripts.retry_stale)
        self._mark_synced()

    def _schedule_checkpoint(self) -> None:
        ref = self.actor_ref
        self._timer = self._clock.call_later(self._interval, lambda: tell_quietly(ref, _CheckpointTick()))

    def _on_wal_commit(self, pages: int) -> None:
        self._wal_pages = pages

    def _sync_later(self) -> None:
        """Tell `_SyncTranscripts` once `sync_threads` transcripts wait (unless one is told or a batch runs: its
        end checks again)."""
        transcripts, fsync = self._transcripts, self._fsync
        if self._sync_told or transcripts is None or transcripts.unsynced < self._sync_threads:
            return
        if fsync is None or not fsync.busy:
            self._sync_told = True
            tell_quietly(self.actor_ref, _SyncTranscripts())

    def _take_fsynced(self) -> None:
        """Take the outcome of the background fsync's last batch, if it has one not taken yet."""
        outcome = None if self._fsync is None else self._fsync.take()
        if outcome is not None:
            self._transcript(lambda: self.transcripts.note_synced(outcome))

    def _after_commit(self) -> None:
        if self._wal_pages >= self._checkpoint_pages:
            self._checkpoint("PASSIVE")

    def _transcript(self, write: TranscriptWrite) -> None:
        """Run one transcript write (see the module contract)."""
        if self._later is not None:
            self._later.append(write)
            return
        started = time.perf_counter()
        failures = write()
        seconds = time.perf_counter() - started
        self._transcript_s += seconds
        _log.record(StorageTimed(op="transcript", seconds=seconds), "debug")
        for thread_id, exc in failures:
            _log.record(TranscriptFailed(thread=thread_id, error=str(exc)), "error")

    def _mark_synced(self) -> None:
        """Unmark the threads whose transcript holds every change (a refusal only makes the next start check more)."""
        synced = self.transcripts.take_synced()
        if synced:
            try:
                self.db.mark_transcripts_synced(synced)
            except StorageError as exc:
                _log.warning("persistence.mark_synced_failed", threads=len(synced), error=repr(exc))

    def _checkpoint(self, mode: CheckpointMode) -> tuple[int, int]:
        frames = self.db.checkpoint(mode)
        if frames[0] == frames[1]:
            self._wal_pages = 0
        _log.debug("persistence.checkpoint", mode=mode, wal_frames=frames[0], checkpointed=frames[1])
        return frames
