"""CPU time spent by this process and by its live child processes (Linux /proc), for CPU budgets per turn.

`CpuSnapshot.take()` reads `time.process_time()` (this process, every thread: the embedded host and the bench's
own driver threads) and, for every direct child process alive at that moment (found through
`/proc/self/task/*/children`), its utime + stime from `/proc/<pid>/stat` (clock ticks / SC_CLK_TCK). `since(earlier)`
gives (own seconds, children seconds) between two snapshots, counting only children alive at both (a child that
started or exited in between is left out, so the children's figure is a lower bound). Off Linux (no /proc) the
children's figure is 0.0.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

__all__ = ["CpuSnapshot"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuSnapshot(msgspec.Struct, frozen=True):
    own_s: float
    children_s: dict[int, float]  # pid -> CPU seconds so far

    @classmethod
    def take(cls) -> CpuSnapshot:
        return cls(own_s=time.process_time(), children_s={pid: _cpu_s(pid) for pid in _child_pids()})

    def since(self, earlier: CpuSnapshot) -> tuple[float, float]:
        both = self.children_s.keys() & earlier.children_s.keys()
        return self.own_s - earlier.own_s, sum(self.children_s[pid] - earlier.children_s[pid] for pid in both)


def _child_pids() -> set[int]:
    pids: set[int] = set()
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return pids
    for task in tasks.iterdir():
        try:
            pids.update(int(pid) for pid in (task / "children").read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return pids


def _cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime: fields 14 and 15 of stat
