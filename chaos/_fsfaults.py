"""A faulty ``storage.AtomicFs`` for transcript writes: fail one step of the atomic replace on its Nth call.

Contract:
- ``FailingFs(step=..., nth=...)`` behaves exactly like ``AtomicFs`` except that the ``nth`` (1-based) call of
  ``step`` raises ``OSError(errno.EIO)`` (``error="eio"``) or ``OSError(errno.ENOSPC)`` (``error="enospc"``)
  instead of doing its work; with ``persistent=True`` every later call of that step fails too. Steps map to the
  ``AtomicFs`` methods: "write" -> ``write_temp`` (fails before creating the temp file, as a failed write leaves
  no temp behind once the primitive cleaned up), ``append`` (writes the first half of the data, then fails: a torn
  record) and ``truncate`` (cuts nothing), "fsync_file" -> ``fsync_file`` (after a temp write or an append),
  "replace" -> ``replace`` (nothing renamed), "fsync_dir" -> ``fsync_dir`` (the rename already happened).
- ``calls`` counts every call per step (failed ones included; thread-safe); ``triggered`` is True once a fault was
  raised.
- Bad arguments raise ValueError naming the field and the value.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Literal

from agenthost.storage import AtomicFs

__all__ = ["FS_STEPS", "FailingFs", "FsStep"]

FsStep = Literal["write", "fsync_file", "replace", "fsync_dir"]
FS_STEPS: tuple[FsStep, ...] = ("write", "fsync_file", "replace", "fsync_dir")
_ERRNOS: dict[str, int] = {"eio": errno.EIO, "enospc": errno.ENOSPC}


class FailingFs(AtomicFs):
    """``AtomicFs`` whose ``step`` fails on its ``nth`` call (and after, when ``persistent``)."""

    def __init__(
        self, *, step: FsStep, nth: int, persistent: bool = False, error: Literal["eio", "enospc"] = "eio"
    ) -> None:
        if step not in FS_STEPS:
            raise ValueError(f"fs step {step!r} is invalid: expected one of {FS_STEPS}")
        if isinstance(nth, bool) or not isinstance(nth, int) or nth < 1:
            raise ValueError(f"fs fault nth {nth!r} is invalid: must be an int >= 1")
        if error not in _ERRNOS:
            raise ValueError(f"fs fault error {error!r} is invalid: expected one of {tuple(_ERRNOS)}")
        self.step: FsStep = step
        self.nth = nth
        self.persistent = persistent
        self.error = error
        self.calls: dict[str, int] = dict.fromkeys(FS_STEPS, 0)
        self._lock = threading.Lock()
        self.triggered = False

    def write_temp(self, directory: Path, prefix: str, data: bytes) -> Path:
        self._check("write", directory)
        return super().write_temp(directory, prefix, data)

    def append(self, path: Path, data: bytes) -> None:
        try:
            self._check("write", path)
        except OSError:
            super().append(path, data[: len(data) // 2])  # a write cut short: half a record reaches the file
            raise
        super().append(path, data)

    def truncate(self, path: Path, size: int) -> None:
        self._check("write", path)
        super().truncate(path, size)

    def fsync_file(self, path: Path) -> None:
        self._check("fsync_file", path)
        super().fsync_file(path)

    def replace(self, src: Path, dst: Path) -> None:
        self._check("replace", dst)
        super().replace(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        self._check("fsync_dir", directory)
        super().fsync_dir(directory)

    def _check(self, step: FsStep, path: Path) -> None:
        with self._lock:  # (transcript fsyncs also run on the persistence actor's background thread)
            self.calls[step] += 1
            count = self.calls[step]
        if step == self.step and (count == self.nth or (self.persistent and count > self.nth)):
            self.triggered = True
            code = _ERRNOS[self.error]
            raise OSError(code, f"{os.strerror(code)} (injected: {step} call #{count})", str(path))
