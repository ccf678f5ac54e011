"""The bench's parameters and its work folder, shared by bench/__main__.py and bench/_issue10.py.

- `BenchParams`: the sizes of one run, `FULL` (the default) and `QUICK` (`--quick`); `python -m bench` may replace
  `repeats` and `soak_turns` (`--repeats`, `--soak-turns`).
- `in_temp(measure)`: `measure` called with a fresh folder under the work folder of the run in progress, the last
  item of `_WORK_ROOT`, which `run()` (bench/__main__.py) appends for the run and pops after it; only inside
  `run()`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

__all__ = ["FULL", "QUICK", "BenchParams", "in_temp"]

T = TypeVar("T")


class BenchParams(msgspec.Struct, frozen=True, kw_only=True):
    deltas_per_reply: int
    turns: int
    completions: int
    repeats: int
    codex_turns: int = 20
    service_turns: int = 300
    growth_turns: int = 10_000  # issue 10 figure 1: turns on one thread
    fanout_threads: int = 2_000  # figure 2: threads x 1 turn
    soak_turns: int = 30_000  # figure 4 (the 100,000 take about 9 minutes here: --soak-turns)
    startup_threads: int = 100_000  # figure 5


FULL = BenchParams(deltas_per_reply=5000, turns=40, completions=2000, repeats=3)
QUICK = BenchParams(
    deltas_per_reply=2000,
    turns=3,
    completions=200,
    repeats=1,
    codex_turns=3,
    service_turns=20,
    growth_turns=2_000,
    fanout_threads=300,
    soak_turns=3_000,
    startup_threads=10_000,
)


_WORK_ROOT: list[str] = []  # the work folder of the run in progress


def in_temp(measure: Callable[[Path], T]) -> T:
    """`measure` in a fresh folder under the run's work folder, which is deleted only when the run ends: ext4 passes
    over the inodes of files deleted in the last minutes when it makes a new one (fs/ext4/ialloc.c
    `recently_deleted`; perf on this VM: half of a create's time), so deleting one measurement's thousands of files
    made every file the next one created cost up to ~0.5 ms of CPU instead of ~0.02 ms (figure 2's runtimes
    create one file per new thread: their CPU per turn doubled in the full run). `Machine.file_create_us` is that
    cost as the run starts, from what ran before it."""
    assert _WORK_ROOT, "only inside run()"
    return measure(Path(tempfile.mkdtemp(prefix="agenthost-bench-", dir=_WORK_ROOT[-1])))
