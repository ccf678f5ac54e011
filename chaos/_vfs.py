"""SQLite fault injection through APSW VFS shims: fail the Nth read/write/sync, or cut the power.

Contract:
- ``FaultyVFS(plan)`` registers an APSW VFS under a unique name (``vfs_name``; pass it as
  ``Database.open(path, vfs=...)``) that passes every call through to ``base`` ("" = SQLite's default VFS) and
  counts the ``xRead``/``xWrite``/``xSync`` calls of every file it opened (main database, ``-wal``, ``-journal``).
  ``calls`` counts all of them per op; the plan's ``nth`` is 1-based and counts only the calls of ``plan.op`` on
  files whose name ends with ``plan.file_suffix`` (every file when None), from the moment the plan was set (at
  creation, or when ``plan`` is reassigned: arm a fault after set-up, or assign None to heal the disk).
  The Nth matching call raises instead of reaching the disk: ``apsw.IOError`` ("disk I/O error ...") for
  ``error="ioerr"`` or ``apsw.FullError`` ("database or disk is full ...") for ``error="full"``; when
  ``persistent`` every later matching call raises too. ``triggered`` turns True at the first raised fault and
  ``failures`` counts the raised faults. What reaches the caller is SQLite's own error (often its generic text,
  e.g. "disk I/O error"), with the injected exception chained as ``__context__``.
  ``slow_syncs(delay_s, count=None)`` makes each of the next ``count`` ``xSync`` calls (every one while ``count`` is
  None) sleep ``delay_s`` seconds before it reaches the disk (then it succeeds, unless the plan fails it): a slow
  fsync. ``slow_syncs(None)`` (or ``heal()``, which also drops the plan) ends it and wakes a sync that is sleeping.
  ``delayed_syncs`` counts the syncs that were delayed. Arming and healing are safe from any thread.
- ``CrashVFS(crash_at=None)`` passes everything through and remembers, per file path, the bytes last made durable:
  the file's content when first opened, then its full content after every successful ``xSync``; a delete through
  the VFS is durable. ``crash()`` is a power cut: it rewrites every file it tracks to its durable bytes (dropping
  unsynced writes and truncations), and from then on every write, sync, truncate and delete through the VFS raises
  ``PowerCutError`` (an ``apsw.IOError``; ``refusals`` counts them) and every new open raises
  ``apsw.CantOpenError``. With ``crash_at=N`` (1-based) the VFS crashes by itself right before the Nth change
  (write, truncate or sync) reaches the disk; ``changes`` counts the changes attempted so far. Close the old
  connection (ignoring its errors), then reopen with another VFS. One crash per ``CrashVFS``. The ``-shm`` file is not
  tracked: SQLite rebuilds it when the first connection opens the database after the crash.
  ``crash()`` uses plain OS calls, which drop the process's POSIX locks on those files: only the dead connection
  holds them.
- Both classes unregister with ``unregister()`` (safe to call twice) or on leaving a ``with`` block.
- Not thread-safe: one connection on one thread, as the persistence actor uses its database.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Literal

import apsw
import msgspec

__all__ = ["CrashVFS", "FaultPlan", "FaultyVFS", "PowerCutError"]

FaultOp = Literal["read", "write", "sync"]

_OPS: tuple[FaultOp, ...] = ("read", "write", "sync")
_ERRORS: tuple[str, ...] = ("ioerr", "full")
_ERROR_TEXT: dict[str, str] = {"ioerr": "disk I/O error", "full": "database or disk is full"}
_names = itertools.count(1)


class FaultPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Which call fails: the ``nth`` (1-based) ``op`` call on files ending with ``file_suffix`` (None = all)."""

    op: FaultOp
    nth: int
    persistent: bool = False  # False: only the Nth call fails; True: the Nth and every later one
    error: Literal["ioerr", "full"] = "ioerr"  # apsw.IOError (SQLITE_IOERR) or apsw.FullError (SQLITE_FULL)
    file_suffix: str | None = None  # e.g. "-wal" to hit only the write-ahead log

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"fault op {self.op!r} is invalid: expected one of {_OPS}")
        if isinstance(self.nth, bool) or not isinstance(self.nth, int) or self.nth < 1:
            raise ValueError(f"fault nth {self.nth!r} is invalid: must be an int >= 1")
        if self.error not in _ERRORS:
            raise ValueError(f"fault error {self.error!r} is invalid: expected one of {_ERRORS}")


class PowerCutError(apsw.IOError):
    """Raised by every write/sync/truncate/delete through a ``CrashVFS`` after ``crash()``."""


class FaultyVFS(apsw.VFS):
    """A pass-through VFS that fails calls according to its ``plan`` (see the module docstring)."""

    def __init__(self, plan: FaultPlan | None, *, name: str | None = None, base: str = "") -> None:
        self._plan = plan
        self.calls: dict[str, int] = dict.fromkeys(_OPS, 0)
        self.matching_calls = 0  # calls of plan.op on files matching plan.file_suffix since the plan was set
        self.triggered = False
        self.failures = 0
        self.delayed_syncs = 0
        self._slow_lock = threading.Lock()
        self._sync_delay_s: float | None = None
        self._slow_left: int | None = None  # None: every sync while the delay is set
        self._woken = threading.Event()  # set when the delay is healed: a sleeping sync goes on at once
        self._base = base
        self._name = name if name is not None else f"agenthost-faulty-{os.getpid()}-{next(_names)}"
        super().__init__(self._name, base)

    @property
    def vfs_name(self) -> str:
        return self._name

    @property
    def plan(self) -> FaultPlan | None:
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan | None) -> None:
        self._plan = plan
        self.matching_calls = 0

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:
        return _FaultyFile(self, self._base, name, flags)

    def slow_syncs(self, delay_s: float | None, count: int | None = None) -> None:
        """Delay each of the next `count` syncs (all while None) by `delay_s` seconds; `delay_s=None` heals."""
        if delay_s is not None and not delay_s > 0:
            raise ValueError(f"sync delay_s {delay_s!r} is invalid: must be > 0 or None")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"slow sync count {count!r} is invalid: must be an int >= 1 or None")
        with self._slow_lock:
            self._sync_delay_s, self._slow_left = delay_s, count
            if delay_s is None:
                self._woken.set()
            else:
                self._woken = threading.Event()

    def heal(self) -> None:
        """No planned failure and no slow sync any more."""
        self.plan = None
        self.slow_syncs(None)

    def delay_sync(self) -> None:
        """Sleep before a sync while slow syncs are armed (see `slow_syncs`)."""
        with self._slow_lock:
            delay_s, woken = self._sync_delay_s, self._woken
            if delay_s is None:
                return
            if self._slow_left is not None:
                self._slow_left -= 1
                if self._slow_left <= 0:
                    self._sync_delay_s, self._slow_left = None, None
            self.delayed_syncs += 1
        woken.wait(delay_s)

    def __enter__(self) -> FaultyVFS:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unregister()

    def check(self, op: FaultOp, file_name: str) -> None:
        """Count one ``op`` call on ``file_name``; raise the planned error if this call must fail."""
        self.calls[op] += 1
        plan = self._plan
        if plan is None or plan.op != op or not _matches(file_name, plan.file_suffix):
            return
        self.matching_calls += 1
        if self.matching_calls == plan.nth or (plan.persistent and self.matching_calls > plan.nth):
            self.triggered = True
            self.failures += 1
            error_class = apsw.FullError if plan.error == "full" else apsw.IOError
            raise error_class(
                f"{_ERROR_TEXT[plan.error]} (injected: {op} call #{self.matching_calls} on {file_name!r})"
            )


class _FaultyFile(apsw.VFSFile):
    def __init__(self, owner: FaultyVFS, base: str, name: str | apsw.URIFilename | None, flags: list[int]) -> None:
        self._owner = owner
        self._file_name = _file_name(name)
        super().__init__(base, name, flags)

    def xRead(self, amount: int, offset: int) -> bytes:
        self._owner.check("read", self._file_name)
        return super().xRead(amount, offset)

    def xWrite(self, data: bytes, offset: int) -> None:
        self._owner.check("write", self._file_name)
        super().xWrite(data, offset)

    def xSync(self, flags: int) -> None:
        self._owner.delay_sync()
        self._owner.check("sync", self._file_name)
        super().xSync(flags)


class CrashVFS(apsw.VFS):
    """Keeps, per file, the bytes last made durable by xSync; `crash()` rewrites every file it touched to its last
    synced content (dropping unsynced writes) — as after a power cut. Files are real files on disk."""

    def __init__(self, *, crash_at: int | None = None, name: str | None = None, base: str = "") -> None:
        if crash_at is not None and (isinstance(crash_at, bool) or not isinstance(crash_at, int) or crash_at < 1):
            raise ValueError(f"crash_at {crash_at!r} is invalid: must be an int >= 1 or None")
        self.crash_at = crash_at
        self.crashed = False
        self.changes = 0
        self.refusals = 0
        self._durable: dict[str, bytes] = {}
        self._base = base
        self._name = name if name is not None else f"agenthost-crash-{os.getpid()}-{next(_names)}"
        super().__init__(self._name, base)

    @property
    def vfs_name(self) -> str:
        return self._name

    @property
    def tracked_paths(self) -> list[str]:
        """The files whose durable content ``crash()`` would restore."""
        return sorted(self._durable)

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:
        if self.crashed:
            raise apsw.CantOpenError(f"cannot open {_file_name(name)!r}: the power is off (CrashVFS crashed)")
        return _CrashFile(self, self._base, name, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        self.ensure_power(f"delete {filename!r}")
        super().xDelete(filename, syncdir)
        self._durable.pop(filename, None)

    def __enter__(self) -> CrashVFS:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unregister()

    def ensure_power(self, action: str) -> None:
        """Raise ``PowerCutError`` naming ``action`` once the VFS has crashed."""
        if self.crashed:
            self.refusals += 1
            raise PowerCutError(f"cannot {action}: the power is off (CrashVFS crashed)")

    def before_change(self, action: str) -> None:
        """Count one change (write, truncate, sync); crash first when it is the ``crash_at``-th; then as above."""
        if not self.crashed:
            self.changes += 1
            if self.changes == self.crash_at:
                self.crash()
        self.ensure_power(action)

    def remember(self, path: str, content: bytes, *, first_open: bool) -> None:
        """Record ``content`` as the durable bytes of ``path`` (on first open only if not tracked yet)."""
        if not first_open or path not in self._durable:
            self._durable[path] = content

    def crash(self) -> None:
        """Cut the power: every tracked file gets its durable bytes back; the VFS refuses all changes from now on."""
        if self.crashed:
            raise RuntimeError(f"CrashVFS {self._name!r} has already crashed; make a new one")
        self.crashed = True
        for path, content in self._durable.items():
            _rewrite(path, content)


class _CrashFile(apsw.VFSFile):
    def __init__(self, owner: CrashVFS, base: str, name: str | apsw.URIFilename | None, flags: list[int]) -> None:
        self._owner = owner
        self._file_name = _file_name(name)
        super().__init__(base, name, flags)
        if name is not None:  # a nameless file is a temp file, deleted on close: nothing survives a crash
            self._owner.remember(self._file_name, self._content(), first_open=True)

    def xWrite(self, data: bytes, offset: int) -> None:
        self._owner.before_change(f"write to {self._file_name!r}")
        super().xWrite(data, offset)

    def xTruncate(self, newsize: int) -> None:
        self._owner.before_change(f"truncate {self._file_name!r}")
        super().xTruncate(newsize)

    def xSync(self, flags: int) -> None:
        self._owner.before_change(f"sync {self._file_name!r}")
        super().xSync(flags)
        if self._file_name:
            self._owner.remember(self._file_name, self._content(), first_open=False)

    def _content(self) -> bytes:
        size = super().xFileSize()
        return super().xRead(size, 0) if size else b""


def _file_name(name: str | apsw.URIFilename | None) -> str:
    if name is None:
        return ""
    if isinstance(name, apsw.URIFilename):
        return name.filename()
    return name


def _matches(file_name: str, suffix: str | None) -> bool:
    return suffix is None or file_name.endswith(suffix)


def _rewrite(path: str, content: bytes) -> None:
    """Put ``content`` back into ``path`` (creating it), durably."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(descriptor, 0)
        view = memoryview(content)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
