"""Transcript fsyncs on a thread of their own, so the persistence actor answers while the disk works.

Contract:
- `BackgroundFsync(store, on_done)`: `start(paths)` fsyncs `paths` (thread id -> transcript path, what
  `TranscriptWriter.take_unsynced` hands over) with `storage.fsync_transcripts` on a new daemon thread and returns
  True; it returns False and does nothing while an earlier batch runs (one batch at a time: fsyncs of one disk do
  not go faster side by side, and the order of a thread's fsyncs stays simple). When the batch is done,
  `on_done()` is called on that thread (the actor tells itself; it must not block) and `take()` returns the batch's
  outcome once (thread id -> None or its StorageError), then None.
- `busy` is True from `start` until the outcome is ready. `wait(timeout_s)` waits at most `timeout_s` (seconds) for
  a running batch and says whether none runs any more (the actor's stop, before its final sync).
- An exception other than StorageError in the thread (a bug) fails every path of the batch with a StorageError
  naming it: the threads stay stale and are repaired, never taken for synced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from agenthost.storage import StorageError, TranscriptStore, fsync_transcripts

__all__ = ["BackgroundFsync", "Outcome"]

Outcome = dict[str, StorageError | None]


class BackgroundFsync:
    def __init__(self, store: TranscriptStore, on_done: Callable[[], object]) -> None:
        self._store = store
        self._on_done = on_done
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._outcome: Outcome | None = None

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def start(self, paths: dict[str, Path]) -> bool:
        with self._lock:
            if not self._idle.is_set():
                return False
            self._idle.clear()
        threading.Thread(target=self._run, args=(paths,), name="agenthost-transcript-fsync", daemon=True).start()
        return True

    def take(self) -> Outcome | None:
        with self._lock:
            outcome, self._outcome = self._outcome, None
        return outcome

    def wait(self, timeout_s: float) -> bool:
        return self._idle.wait(timeout_s)

    def _run(self, paths: dict[str, Path]) -> None:
        try:
            outcome: Outcome = fsync_transcripts(self._store, paths)
        except Exception as exc:  # noqa: BLE001 - a bug here must leave the threads stale, not synced
            error = StorageError(f"fsync of {len(paths)} transcripts failed: {exc!r}")
            outcome = dict.fromkeys(paths, error)
        with self._lock:
            self._outcome = outcome
            self._idle.set()
        self._on_done()
