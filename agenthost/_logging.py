"""Logging for the `agenthost` command line (the library itself never configures logging; see actors._log).

Contract:
- `configure(level, fmt, stream)`: structlog prints events at `level` or above to `stream` (default stderr), one
  line per event, with an ISO-8601 UTC timestamp including the date (`2026-11-29T10:20:24.123456Z`), the level and
  the logger name. `fmt` "json" writes one JSON object per line; "console" writes `key=value` text without colours.
- `default_format(stream)`: "console" when the stream is a terminal, else "json" (a service's stderr is a journal
  or a file, read by machines).
- `LEVELS` and `FORMATS` are the accepted values; anything else raises ValueError naming the value (the CLI turns
  it into exit code 2).
- `LogFile(path)` is a log destination that can be reopened (after logrotate moved it: SIGHUP); created mode 0600.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, TextIO, cast

import structlog

__all__ = ["FORMATS", "LEVELS", "LogFile", "configure", "default_format"]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("console", "json")


class LogFile:
    """An append-only log file that `reopen()` reopens at the same path (thread-safe)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = self._open()

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")

    def write(self, text: str) -> int:
        with self._lock:
            return self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def isatty(self) -> bool:
        return False

    def reopen(self) -> None:
        with self._lock:
            old, self._file = self._file, self._open()
            old.close()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def default_format(stream: TextIO | LogFile | None = None) -> str:
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure(level: str = "warning", fmt: str | None = None, stream: TextIO | LogFile | None = None) -> None:
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    fmt = fmt or default_format(stream)
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, stream or sys.stderr)),  # LogFile: write+flush
        cache_logger_on_first_use=False,
    )
