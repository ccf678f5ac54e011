"""The reference runtime's faults in force, re-read live from a faults file, and firing them as output is written.

Contract:
- `LiveFaults(base, path)` holds the `--faults` value `base`, overridden by the JSON of the file `path` while that
  file exists (None: no file, `base` always). `refresh()` stat()s the file at most every STAT_INTERVAL_S seconds
  (`force=True`: now) and re-reads it when its mtime or size changed; an unreadable or invalid file is logged and
  ignored (the previous value stays); a file that disappears brings `base` back. `version` grows by one whenever
  the value in force is replaced.
- `FaultTriggers` fires that value, called with the runtime's state lock held. `before_output()` runs before each
  turn start (`turn_start=True`: stats the file at once) and each delta: `stop_self` and `eof_mid_line` fire once
  per loaded value (SIGSTOP of the process itself / half of a JSON line written and flushed to stdout, then exit 0).
  Before either fires, and before a SIGKILL, it calls its `flush` (the StdoutWriter's): the lines written before
  the fault reach stdout, as they would have without bursts.
  `after_delta()` runs after each delta written: a `crash_after_deltas` of a value loaded from the file counts the
  deltas written after it was loaded and SIGKILLs the process at that count (the `--faults` one counts from process
  start and is armed in the StdoutWriter by the caller).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

from agenthost.protocol._faults import RuntimeFaults, decode_faults
from agenthost.protocol._runtime_io import log

__all__ = ["STAT_INTERVAL_S", "FaultTriggers", "LiveFaults"]

STAT_INTERVAL_S = 0.01  # live faults file: stat at most this often on the delta path
_CUT_OFF_LINE = b'{"method":"turn/started","params":{"threadId":"cut-off-here"}}\n'  # eof_mid_line writes half


class LiveFaults:
    """The faults in force: `base`, overridden by `path`'s JSON while that file exists (re-read on change)."""

    def __init__(self, base: RuntimeFaults, path: str | None = None) -> None:
        self._base = base
        self._path = path
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file last loaded; None: no file
        self._faults = base
        self.version = 0  # bumped whenever the faults in force change
        self._fired: set[str] = set()  # one-shot knobs already fired for this version
        self._next_stat = 0.0  # monotonic time before which refresh() does not stat again
        self.refresh(force=True)

    @property
    def faults(self) -> RuntimeFaults:
        return self._faults

    def refresh(self, *, force: bool = False) -> RuntimeFaults:
        """Stat the file (at most every STAT_INTERVAL_S unless `force`); re-read it if it changed; return the faults
        in force. The rate limit keeps the stat off the per-delta hot path."""
        if self._path is None:
            return self._faults
        now = time.monotonic()
        if not force and now < self._next_stat:
            return self._faults
        self._next_stat = now + STAT_INTERVAL_S
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            if self._stamp is not None:
                self._stamp = None
                self._set(self._base)
            return self._faults
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                with open(self._path, encoding="utf-8") as handle:
                    self._set(decode_faults(handle.read().strip() or "{}"))
            except (OSError, ValueError) as exc:
                log(f"faults file {self._path!r} ignored: {exc}")
        return self._faults

    def fire_once(self, knob: str) -> bool:
        """True the first time a one-shot knob (eof_mid_line, stop_self) is seen set in this version."""
        if getattr(self._faults, knob) and knob not in self._fired:
            self._fired.add(knob)
            return True
        return False

    def _set(self, faults: RuntimeFaults) -> None:
        self._faults = faults
        self.version += 1
        self._fired = set()


class FaultTriggers:
    """Fires the live faults at turn starts and deltas (see the module contract); state lock held by callers."""

    def __init__(self, live: LiveFaults, flush: Callable[[], None]) -> None:
        self._live = live
        self._flush = flush
        self._crash_version = live.version  # the value at start is armed in the StdoutWriter by the caller
        self._deltas_left: int | None = None  # deltas until a file-armed crash_after_deltas fires

    def before_output(self, *, turn_start: bool = False) -> None:
        """Before a turn start or a delta: fire eof_mid_line / stop_self once per loaded value.
        A turn start always re-reads the file; deltas at most every STAT_INTERVAL_S."""
        faults = self._live.refresh(force=turn_start)
        if self._live.version != self._crash_version:
            self._crash_version = self._live.version
            self._deltas_left = faults.crash_after_deltas
        if self._live.fire_once("stop_self"):
            self._flush()
            log("fault stop_self: SIGSTOP")
            os.kill(os.getpid(), signal.SIGSTOP)
        if self._live.fire_once("eof_mid_line"):
            self._flush()
            log("fault eof_mid_line: writing half a line, then exit 0")
            sys.stdout.buffer.flush()
            os.write(sys.stdout.fileno(), _CUT_OFF_LINE[: max(1, len(_CUT_OFF_LINE) // 2)])
            os._exit(0)

    def after_delta(self) -> None:
        """After a delta was written: SIGKILL when the file's crash_after_deltas count is reached."""
        if self._deltas_left is None:
            return
        self._deltas_left -= 1
        if self._deltas_left <= 0:
            self._flush()
            log("fault crash_after_deltas (faults file): SIGKILL")
            os.kill(os.getpid(), signal.SIGKILL)
