"""Issue 10, figure 4: memory stays flat over a long soak of turns.

One `AgentHost(HostConfig(workers=2, max_active_turns=64))` on the built-in reference runtime and a fresh root
(the host is embedded: its actors, storage and SQLite live in this process; each runtime worker is a child
process). THREADS (50) threads, each driven by its own Python thread that runs its share of the turns one after
another (`host.submit(thread, text, sink)`, then waits for the sink's TurnFinished), so 50 turns are in flight at
once and none is queued. After every tenth of the turns (counted as they finish) the process's resident set is
sampled from `/proc/self/status` (VmRSS) after a `gc.collect()`, and each worker's from `/proc/<pid>/status` (pid
from `host.status()`). Reported: RSS at 10 % and at 100 % of the turns and their ratio (issue 10 target <= 1.1 for
100,000 turns), the whole profile, the workers' RSS at the same points, and the turns/s of the soak. Where /proc
is missing, RSS falls back to `resource.getrusage` (the peak, not the current size; `rss_source` says which).
Any failed turn raises RuntimeError.
"""

from __future__ import annotations

import gc
import resource
import threading
from pathlib import Path

import msgspec

from agenthost import AgentHost, HostConfig, TurnFinished
from bench._rate import run_together, split_evenly

__all__ = ["RSS_TARGET", "THREADS", "Soak", "measure"]

RSS_TARGET = 1.1  # RSS at 100 % of the turns / RSS at 10 %, at most
THREADS = 50
TEXT = "bench soak"
TIMEOUT_S = 120.0


class Soak(msgspec.Struct, frozen=True, kw_only=True):
    turns: int
    threads: int
    seconds: float
    turns_per_s: float
    rss_source: str  # "/proc/self/status VmRSS" or "getrusage ru_maxrss (peak)"
    rss_10_mb: float  # this process after 10 % of the turns
    rss_100_mb: float
    ratio: float  # rss_100_mb / rss_10_mb
    profile_mb: list[tuple[int, float]]  # (turns finished, this process's RSS in MB)
    workers_10_mb: float  # sum of the runtime workers' RSS after 10 %; 0 when not readable
    workers_100_mb: float
    workers_profile_mb: list[tuple[int, float]]


def _proc_rss_mb(pid: int | str) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _self_rss_mb() -> tuple[float, str]:
    rss = _proc_rss_mb("self")
    if rss is not None:
        return rss, "/proc/self/status VmRSS"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "getrusage ru_maxrss (peak)"


class _TurnDone:
    """A sink that wakes its driver on TurnFinished (other events dropped)."""

    def __init__(self) -> None:
        self.finished = threading.Event()
        self.event: TurnFinished | None = None

    def put(self, event: object) -> None:
        if isinstance(event, TurnFinished):
            self.event = event
            self.finished.set()


def measure(turns: int, work_dir: Path, *, threads: int = THREADS) -> Soak:
    """RSS early and late in a soak of `turns` turns over `threads` threads (see the module docstring)."""
    if turns < 10 * threads:
        raise ValueError(f"turns must be at least {10 * threads}, got {turns}")
    config = HostConfig(storage_root=str(work_dir / "soak-root"), workers=2, max_active_turns=max(64, threads))
    lock = threading.Lock()
    marks = [turns * tenth // 10 for tenth in range(1, 11)]
    samples: list[tuple[int, float, float]] = []  # (turns done, self MB, workers MB)
    finished = 0
    errors: list[str] = []
    source = ""

    with AgentHost(config) as host:
        worker_pids = [worker.pid for worker in host.status().workers if worker.pid is not None]

        def sample(done: int) -> None:
            nonlocal source
            gc.collect()
            rss, source = _self_rss_mb()
            workers = sum(_proc_rss_mb(pid) or 0.0 for pid in worker_pids)
            samples.append((done, rss, workers))

        def drive(thread_id: str, count: int) -> None:
            nonlocal finished
            for _ in range(count):
                sink = _TurnDone()
                host.submit(thread_id, TEXT, sink)
                if not sink.finished.wait(TIMEOUT_S) or sink.event is None:
                    errors.append(f"thread {thread_id}: no TurnFinished within {TIMEOUT_S:g} s")
                    return
                if sink.event.status != "completed":
                    errors.append(f"thread {thread_id}: turn ended {sink.event.status}: {sink.event.error}")
                    return
                with lock:
                    finished += 1
                    if marks and finished >= marks[0]:
                        marks.pop(0)
                        sample(finished)

        thread_ids = [host.create_thread(thread_id=f"soak-{index:03d}") for index in range(threads)]
        shares = split_evenly(turns, threads)
        drivers = [
            threading.Thread(target=drive, args=(thread_id, share), name=f"bench-soak-{index}", daemon=True)
            for index, (thread_id, share) in enumerate(zip(thread_ids, shares, strict=True))
        ]
        seconds = run_together(drivers)
        worker_pids_after = [worker.pid for worker in host.status().workers]
    if errors:
        raise RuntimeError(f"soak: {len(errors)} drivers failed, first: {errors[0]}")
    if worker_pids_after != worker_pids:
        samples = [(done, rss, 0.0) for done, rss, _ in samples]  # a worker restarted: its RSS is not comparable
    first, last = samples[0], samples[-1]
    return Soak(
        turns=turns,
        threads=threads,
        seconds=seconds,
        turns_per_s=turns / seconds,
        rss_source=source,
        rss_10_mb=first[1],
        rss_100_mb=last[1],
        ratio=last[1] / first[1],
        profile_mb=[(done, rss) for done, rss, _ in samples],
        workers_10_mb=first[2],
        workers_100_mb=last[2],
        workers_profile_mb=[(done, workers) for done, _, workers in samples],
    )
