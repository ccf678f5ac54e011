"""Issue 10, figures 1 and 2: per-turn cost in a thread's length, and durable turns/s across many threads.

Both drive the public API only (`AgentHost`, `HostConfig`, `agenthost.storage`), on the built-in reference runtime,
`HostConfig(workers=2)`, each on a fresh storage root, so they survive changes inside actors/ and storage/.

- `measure_turn_growth(turns, ...)`: one thread, `turns` sequential turns, each `host.send(thread, text).wait()`
  timed with `time.perf_counter()` (send -> TurnFinished seen). Every turn is a real turn: nothing is
  pre-populated, because the built-in runtime keeps its own per-thread state (`<root>/system/runtime-state/
  threads/<uuid>.jsonl`, one line appended and fsynced at each turn start and end), which a storage-only
  pre-population would leave short and so make the late turns look cheaper than they are. Reported: the median
  per-turn time over the early window (turns 51-150, "around turn 100") and the late window (the last 100 turns,
  "around turn `turns`"), growth = late / early (issue 10 target <= 1.2 with turns = 10,000), the median of every
  tenth of the run (the profile), and at the end the sizes of agenthost's transcript and of the runtime's own
  thread file (what the late turns rewrite or append to).
- `measure_prepopulated(history, ...)`: agenthost's own part of that growth, without the runtime's: a thread whose
  `history` completed turns (and their clean transcript) are written through `agenthost.storage` before the host
  starts (as bench/_startup.py builds its root: one `ThreadRow`, `history` `TurnRow`s inserted in one transaction,
  the transcript rendered from those rows by `render_transcript`, the thread unmarked with
  `mark_transcripts_synced`; no runtime state and no mapping, so the runtime starts that thread afresh and its own
  file is small), then PREPOPULATED_TURNS (300) real turns on top, the median of the last 200 reported. Compared
  with `measure_turn_growth`'s early window it shows whether the host's per-turn work grows with the thread's
  length; it is not the issue's figure (the runtime's file is part of a real thread's cost).
- `measure_fanout(threads, ...)`: `threads` threads created through `host.create_thread` (untimed), then one turn
  per thread, all sent at once: `host.submit(thread, text, sink)` from `SENDERS` (64) Python threads of a
  ThreadPoolExecutor (`submit` returns once the turn's begin is durable, so one sender would serialise the
  begins), `max_active_turns=64`. Timed from the first send to the last `TurnFinished` (seen by the sinks): durable
  turns/s (issue 10 target >= 1,000/s with 2,000 threads). `submit` is used rather than `send` because `send`
  keeps a per-host dict of open handles that it rebuilds on every call (not meant for many sending threads).
  Also the CPU per turn over the same run (bench._cpu: this process, i.e. the host and its senders; the runtime
  processes) and the cap it puts on turns/s: `os.cpu_count()` / (host + runtime CPU per turn), what no scheduling
  can beat on this machine.
- `measure_loop(threads, ...)`: the baseline for `measure_fanout`, with no actors: on a fresh root, the same
  threads created through `Database.create_thread` + `TranscriptWriter.thread_created` (untimed), then, per batch
  of up to BATCH (256) turns: every begin committed in ONE transaction (`Database.begin_turn` calls inside one
  outer APSW transaction on the Database's connection, synchronous=FULL), the begin records appended to their
  transcripts (`TranscriptWriter.turns_written`: one append per thread), every end committed in one transaction
  (`Database.finish_turns`), the end records appended the same way, then every transcript of the batch fsynced
  once (`TranscriptWriter.sync_appends`, what the persistence actor does after answering). That is the durable
  work a host turn must do (begin durable before `send` returns, end durable before TurnFinished), batched as well
  as a host could batch it; it does not run a runtime, so host/loop also prices the runtime round trip. It
  returns a `LoopRun`: the `Run` and the loop's CPU per turn (`time.process_time`, this process: the loop has no
  other thread and no child), the least CPU the durable work of a turn takes here.
Any error propagates (a failed or missing turn raises RuntimeError).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from agenthost import AgentHost, HostConfig, TurnFinished
from agenthost.storage import (
    Database,
    StorageRoot,
    ThreadRow,
    TranscriptStore,
    TurnFinish,
    TurnRow,
    render_transcript,
)
from bench._cpu import CpuSnapshot
from bench._rate import Run
from bench._startup import insert_rows
from bench._store import direct_store, written

__all__ = [
    "BATCH",
    "GROWTH_TARGET",
    "LOOP_TARGET_PCT",
    "SENDERS",
    "THROUGHPUT_TARGET_PER_S",
    "Fanout",
    "LoopRun",
    "Prepopulated",
    "TurnGrowth",
    "measure_fanout",
    "measure_loop",
    "measure_prepopulated",
    "measure_turn_growth",
]

GROWTH_TARGET = 1.2  # median per-turn time at turn 10,000 / at turn 100, at most
THROUGHPUT_TARGET_PER_S = 1000.0  # durable turns/s across 2,000 threads, at least
LOOP_TARGET_PCT = 80.0  # host / hand-written loop, at least
SENDERS = 64
BATCH = 256
WINDOW = 100  # turns per window
PREPOPULATED_TURNS = 300  # real turns on top of a pre-populated history; the last 200 are the window
TEXT = "bench question"
ASSISTANT_TEXT = "Reference reply to: bench question"
TIMEOUT_S = 120.0


class TurnGrowth(msgspec.Struct, frozen=True, kw_only=True):
    turns: int
    early_turns: tuple[int, int]  # first and last turn (1-based, inclusive) of the early window
    late_turns: tuple[int, int]
    early_ms: float  # median per-turn time over the window
    late_ms: float
    growth: float  # late_ms / early_ms
    profile_ms: list[tuple[int, float]]  # (last turn of each tenth of the run, its median ms)
    seconds: float  # the whole run's timed turns
    transcript_bytes: int
    runtime_state_bytes: int  # the built-in runtime's own file of the thread (0: not found)


def _median_ms(samples: Sequence[float]) -> float:
    return 1000.0 * statistics.median(samples)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _largest_file(folder: Path, pattern: str) -> int:
    return max((_file_size(path) for path in folder.rglob(pattern)), default=0)


def measure_turn_growth(turns: int, work_dir: Path, *, window: int = WINDOW) -> TurnGrowth:
    """Per-turn time early and late in one thread's life (see the module docstring)."""
    if turns < 150 + window:
        raise ValueError(f"turns must be at least {150 + window}, got {turns}")
    root = work_dir / "growth-root"
    samples: list[float] = []
    with AgentHost(HostConfig(storage_root=str(root), workers=2)) as host:
        thread_id = host.create_thread("bench growth")
        for _ in range(turns):
            started = time.perf_counter()
            done = host.send(thread_id, TEXT).wait(TIMEOUT_S)
            samples.append(time.perf_counter() - started)
            if done.status != "completed":
                raise RuntimeError(f"turn {len(samples)} of the growth thread ended {done.status}: {done.error}")
        transcript = _file_size(host.root.transcript_path("default", thread_id))
        runtime_state = _largest_file(host.root.runtime_state_dir, "*.jsonl")
    early = (51, 150)
    late = (turns - window + 1, turns)
    early_ms = _median_ms(samples[early[0] - 1 : early[1]])
    late_ms = _median_ms(samples[late[0] - 1 : late[1]])
    tenth = turns // 10
    profile = [(end, _median_ms(samples[end - tenth : end])) for end in range(tenth, tenth * 10 + 1, tenth)]
    return TurnGrowth(
        turns=turns,
        early_turns=early,
        late_turns=late,
        early_ms=early_ms,
        late_ms=late_ms,
        growth=late_ms / early_ms,
        profile_ms=profile,
        seconds=sum(samples),
        transcript_bytes=transcript,
        runtime_state_bytes=runtime_state,
    )


class Prepopulated(msgspec.Struct, frozen=True, kw_only=True):
    history: int  # completed turns written through agenthost.storage before the host started
    window: tuple[int, int]  # the real turns timed (1-based turn numbers of the thread)
    median_ms: float


def measure_prepopulated(history: int, work_dir: Path, *, turns: int = PREPOPULATED_TURNS) -> Prepopulated:
    """Per-turn time on a thread with `history` turns written through storage (see the module docstring)."""
    root = StorageRoot(work_dir / "prepopulated-root")
    root.ensure()
    now = time.time()
    thread = ThreadRow(thread_id="long-thread", project_id="default", title="long thread", created_at=now)
    rows = [
        TurnRow(
            turn_id=f"long-{index:06d}",
            thread_id=thread.thread_id,
            seq=index + 1,
            user_text=TEXT,
            assistant_text=ASSISTANT_TEXT,
            status="completed",
            error=None,
            worker_id=1,
            created_at=now + index * 1e-3,
            finished_at=now + index * 1e-3 + 5e-4,
        )
        for index in range(history)
    ]
    db = Database.open(root.db_path)
    try:
        db.ensure_project("default", "default", now)
        with db._conn:
            insert_rows(db._conn, "threads", ThreadRow, [thread])
            insert_rows(db._conn, "turns", TurnRow, list(rows))
        store = TranscriptStore(root)
        store.write(thread.project_id, thread.thread_id, render_transcript(thread, rows, []))
        db.mark_transcripts_synced([thread.thread_id])
    finally:
        db.close()
    samples: list[float] = []
    with AgentHost(HostConfig(storage_root=str(root.root), workers=2)) as host:
        for _ in range(turns):
            started = time.perf_counter()
            done = host.send(thread.thread_id, TEXT).wait(TIMEOUT_S)
            samples.append(time.perf_counter() - started)
            if done.status != "completed":
                raise RuntimeError(f"turn {history + len(samples)} of the long thread ended {done.status}")
    first = max(0, turns - 200)
    return Prepopulated(
        history=history, window=(history + first + 1, history + turns), median_ms=_median_ms(samples[first:])
    )


class _Finished:
    """The event sink of every fan-out turn: counts TurnFinished (any other event is dropped), never blocks."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self._left = expected
        self.done = threading.Event()
        self.last = 0.0  # perf_counter() when the last TurnFinished arrived
        self.statuses: dict[str, int] = {}
        self.first_error: str | None = None

    def put(self, event: object) -> None:
        if not isinstance(event, TurnFinished):
            return
        now = time.perf_counter()
        with self._lock:
            self.statuses[event.status] = self.statuses.get(event.status, 0) + 1
            if event.status != "completed" and self.first_error is None:
                self.first_error = f"turn {event.turn_id} ended {event.status}: {event.error}"
            self._left -= 1
            self.last = now
            if self._left == 0:
                self.done.set()


class Fanout(msgspec.Struct, frozen=True, kw_only=True):
    threads: int
    seconds: float  # first send -> last TurnFinished
    sends_seconds: float  # first send -> last send returned
    turns_per_s: float  # threads / seconds
    queued: int  # sends the host answered with queued=True (durable in the follow-up queue first)
    statuses: dict[str, int]
    host_cpu_ms: float  # CPU of this process (the host, its senders) per turn over the timed run, ms
    runtime_cpu_ms: float  # CPU of the runtime processes per turn over the same run, ms
    cpu_cap_per_s: float  # the most turns/s this machine's CPUs allow at that CPU per turn: cpus / (host + runtime)


def measure_fanout(
    threads: int, work_dir: Path, *, senders: int = SENDERS, max_active_turns: int = 64, workers: int = 2
) -> Fanout:
    """Durable turns/s for `threads` threads x 1 turn, all sent at once (see the module docstring)."""
    config = HostConfig(storage_root=str(work_dir / "fanout-root"), workers=workers, max_active_turns=max_active_turns)
    with AgentHost(config) as host:
        thread_ids = [host.create_thread(thread_id=f"fan-{index:06d}") for index in range(threads)]
        sink = _Finished(threads)
        cpu_before = CpuSnapshot.take()
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=senders, thread_name_prefix="bench-send") as pool:
            accepted = list(pool.map(lambda thread_id: host.submit(thread_id, TEXT, sink), thread_ids))
        sent = time.perf_counter()
        if not sink.done.wait(TIMEOUT_S):
            raise RuntimeError(f"fan-out: not every turn finished within {TIMEOUT_S:g} s (so far {sink.statuses})")
        host_cpu_s, runtime_cpu_s = CpuSnapshot.take().since(cpu_before)
        if sink.first_error is not None:
            raise RuntimeError(f"fan-out: {sink.first_error}")
    cpu_ms_per_turn = 1000.0 * (host_cpu_s + runtime_cpu_s) / threads
    return Fanout(
        threads=threads,
        seconds=sink.last - started,
        turns_per_s=threads / (sink.last - started),
        sends_seconds=sent - started,
        queued=sum(1 for turn in accepted if turn.queued),
        statuses=dict(sink.statuses),
        host_cpu_ms=1000.0 * host_cpu_s / threads,
        runtime_cpu_ms=1000.0 * runtime_cpu_s / threads,
        cpu_cap_per_s=(os.cpu_count() or 1) * 1000.0 / cpu_ms_per_turn if cpu_ms_per_turn > 0 else float("inf"),
    )


class LoopRun(Run, frozen=True, kw_only=True):
    cpu_ms: float  # the loop's CPU per turn (process_time), the durable work alone


def measure_loop(threads: int, work_dir: Path, *, batch: int = BATCH) -> LoopRun:
    """The same durable work without actors, batched (see the module docstring)."""
    with direct_store(work_dir, "loop-root", "default") as (db, writer):
        thread_ids = [f"fan-{index:06d}" for index in range(threads)]
        for thread_id in thread_ids:
            written(writer.thread_created(db.create_thread(thread_id, "default", thread_id, time.time())))
        started, cpu_started = time.perf_counter(), time.process_time()
        for first in range(0, threads, batch):
            chunk = thread_ids[first : first + batch]
            with db._conn:  # one transaction for the batch's begins (each begin_turn nests as a savepoint)
                begun = [db.begin_turn(f"turn-{thread_id}", thread_id, TEXT, time.time()) for thread_id in chunk]
            written(writer.turns_written(begun))
            now = time.time()
            finished = db.finish_turns(
                [TurnFinish(turn.turn_id, "completed", ASSISTANT_TEXT, None, now, 1) for turn in begun]
            )
            written(writer.turns_written(finished))
            written(writer.sync_appends())
        seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    return LoopRun(count=threads, seconds=seconds, cpu_ms=1000.0 * cpu_s / threads)
