"""Issue 10, figure 2 beside a fair baseline: a hand-written host without actors, on the same runtimes.

`measure(threads, work_dir, workers=2, in_flight=64)` does what the host does for `threads` new threads x 1 turn,
in ONE thread of this process, with no actor, no message and no lock: it starts `workers` built-in runtimes
(bench._runtime_floor.start_runtime), creates the threads in a fresh root's database and transcripts (untimed,
as the host's figure creates them before its clock starts), then, timed, keeps `in_flight / workers` conversations
open per runtime (thread/start, then turn/start at its answer, read until turn/completed), polling both runtimes'
stdout with `selectors`. Each pass over what the runtimes wrote does the host's durable work, batched as a host
could batch it: the ends seen are committed in one transaction (`Database.finish_turns`) and appended to their
transcripts before the turn counts as finished (the host's `TurnFinished`), the threads started are begun in one
transaction and appended before their `turn/start` is written (the host's begin durable before dispatch), and
every SYNC_THREADS (256, the host's) ends and at the end the transcripts written are fsynced once each. Timed
from the first thread/start to the last end committed: turns/s. What the host has below it is what its actors
(threads, messages, the GIL passed between them) cost. Any error propagates.
"""

from __future__ import annotations

import os
import selectors
import time
from pathlib import Path

from agenthost.actors._upkeep import SYNC_THREADS
from agenthost.protocol._jsonrpc import ErrorResponse, LineBuffer, Notification, Response, decode_line
from agenthost.storage import Database, TranscriptWriter, TurnFinish
from bench._deltas import READ_CHUNK_BYTES, RawRuntime
from bench._rate import Run
from bench._runtime_floor import start_runtime
from bench._scaling import ASSISTANT_TEXT, TEXT
from bench._store import direct_store, written

__all__ = ["measure"]

SYNC_EVERY = SYNC_THREADS  # ends between two fsyncs of the transcripts written, as the host


def measure(threads: int, work_dir: Path, *, workers: int = 2, in_flight: int = 64) -> Run:
    """Turns/s of the hand-written host (see the module docstring)."""
    runtimes: list[RawRuntime] = []
    try:
        for index in range(workers):
            runtimes.append(start_runtime(work_dir, index))
        with direct_store(work_dir, "runtime-loop-root", "default") as (db, writer):
            thread_ids = [f"fan-{index:06d}" for index in range(threads)]
            for thread_id in thread_ids:
                written(writer.thread_created(db.create_thread(thread_id, "default", thread_id, time.time())))
            return _Loop(runtimes, db, writer, work_dir).run(thread_ids, max(1, in_flight // workers))
    finally:
        for runtime in runtimes:
            runtime.close()


class _Loop:
    def __init__(self, runtimes: list[RawRuntime], db: Database, writer: TranscriptWriter, work_dir: Path) -> None:
        self._runtimes = runtimes
        self._db, self._writer = db, writer
        self._cwd = str(work_dir)
        self._starting: list[dict[object, str]] = [{} for _ in runtimes]  # request id -> our thread id
        self._running: list[dict[str, str]] = [{} for _ in runtimes]  # runtime thread id -> our thread id
        self._waiting: list[str] = []  # our threads not opened yet, last first

    def run(self, thread_ids: list[str], window: int) -> Run:
        self._waiting = thread_ids[::-1]
        selector = selectors.DefaultSelector()
        buffers = [LineBuffer() for _ in self._runtimes]
        for index, runtime in enumerate(self._runtimes):
            selector.register(runtime.stdout_fd, selectors.EVENT_READ, index)
        started = time.perf_counter()
        for index in range(len(self._runtimes)):
            for _ in range(window):
                self._open(index)
        finished = unsynced = 0
        while finished < len(thread_ids):
            begins: list[tuple[int, str, str]] = []
            ends: list[tuple[int, str]] = []
            for key, _ in selector.select():
                index = key.data
                chunk = os.read(self._runtimes[index].stdout_fd, READ_CHUNK_BYTES)
                if not chunk:
                    raise RuntimeError(f"runtime {index} closed its stdout")
                for line in buffers[index].feed(chunk):
                    self._take(index, decode_line(line), begins, ends)
            if ends:
                self._end(ends)
                finished, unsynced = finished + len(ends), unsynced + len(ends)
                if unsynced >= SYNC_EVERY:
                    written(self._writer.sync_appends())
                    unsynced = 0
                for index, _ in ends:
                    self._open(index)
            if begins:
                self._begin(begins)
        written(self._writer.sync_appends())
        selector.close()
        return Run(count=len(thread_ids), seconds=time.perf_counter() - started)

    def _open(self, index: int) -> None:
        if self._waiting:
            request_id = self._runtimes[index].request("thread/start", {"cwd": self._cwd})
            self._starting[index][request_id] = self._waiting.pop()

    def _take(
        self, index: int, message: object, begins: list[tuple[int, str, str]], ends: list[tuple[int, str]]
    ) -> None:
        if isinstance(message, ErrorResponse):
            raise RuntimeError(f"runtime {index} refused a request: {message.error.message}")
        if isinstance(message, Response) and message.id in self._starting[index]:
            thread_id = self._starting[index].pop(message.id)
            begins.append((index, thread_id, message.result["thread"]["id"]))
        elif type(message) is Notification and message.method == "turn/completed":
            ends.append((index, self._running[index].pop(message.params["threadId"])))

    def _end(self, ends: list[tuple[int, str]]) -> None:
        now = time.time()
        finishes = [
            TurnFinish(f"turn-{thread_id}", "completed", ASSISTANT_TEXT, None, now, index + 1)
            for index, thread_id in ends
        ]
        written(self._writer.turns_written(self._db.finish_turns(finishes)))

    def _begin(self, begins: list[tuple[int, str, str]]) -> None:
        with self._db.batch("runtime loop begins"):
            rows = [
                self._db.begin_turn(f"turn-{thread_id}", thread_id, TEXT, time.time()) for _, thread_id, _ in begins
            ]
        written(self._writer.turns_written(rows))
        for index, thread_id, runtime_thread_id in begins:
            self._running[index][runtime_thread_id] = thread_id
            params = {"threadId": runtime_thread_id, "input": [{"type": "text", "text": TEXT}]}
            self._runtimes[index].request("turn/start", params)
