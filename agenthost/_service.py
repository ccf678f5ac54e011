"""`agenthost serve`: one host, running in the foreground, with a control socket, as systemd expects a service.

Contract:
- Start: the storage root is made private (actors of this module: folders 0700, files 0600), the host starts
  (workers ready or decided), the control socket `ROOT/system/agenthost.sock` listens (agenthost._control), metrics
  start when asked (loopback only), then READY=1 and a STATUS= line go to systemd (NOTIFY_SOCKET), and a watchdog
  ping every half WATCHDOG_USEC while the host answers its status. A host that cannot start: exit 1 with the cause.
- SIGTERM or SIGINT: drain. STOPPING=1; no new turns (sends get "shutting down"); open turns get up to
  `drain_timeout_s` to finish; those still open then end failed and persisted; runtimes stop; exit 0. Queued
  follow-ups stay queued (they run at the next start). A second SIGTERM/SIGINT during the drain stops at once
  (still persisting every turn's end). SIGHUP reopens the log file. SIGUSR1 dumps every thread's stack to stderr.
- `service.shutdown` over the socket drains the same way.
- Logs: structured JSON (or console) to stderr or `log_file`; every decision, every client refused or dropped.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from agenthost._api import AgentHost, HostStartError
from agenthost._config import HostConfig
from agenthost._control import ControlServer
from agenthost._control_api import methods
from agenthost._http import HttpServer
from agenthost._http_auth import write_token
from agenthost._journal import Journals
from agenthost._logging import FORMATS, LEVELS, LogFile, configure
from agenthost._metrics import Metrics
from agenthost._notify import Notifier
from agenthost._sockpath import socket_path
from agenthost._version import __version__
from agenthost._view import Recorder, view_methods
from agenthost.actors._log import get_logger
from agenthost.storage import make_private

__all__ = ["Service", "ServiceOptions"]

_log = get_logger("agenthost.service")
_STATUS_EVERY_S = 5.0


class ServiceOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    log_level: str = "info"
    log_format: str | None = None  # console | json; default json unless stderr is a terminal
    log_file: str | None = None
    metrics: str | None = None  # "127.0.0.1:PORT"
    control_buffer_bytes: int = 8 * 1024 * 1024  # what a client may leave unread before it is dropped
    http: str | None = None  # the status page, "127.0.0.1:PORT" (agenthost._http)
    http_allow_remote: bool = False  # let `http` bind a non-loopback address (a warning says it is exposed)

    def __post_init__(self) -> None:
        if self.log_level not in LEVELS:
            raise ValueError(f"service.log_level must be one of {LEVELS}, got {self.log_level!r}")
        if self.log_format is not None and self.log_format not in FORMATS:
            raise ValueError(f"service.log_format must be one of {FORMATS}, got {self.log_format!r}")
        if type(self.control_buffer_bytes) is not int or self.control_buffer_bytes < 4096:
            raise ValueError(f"service.control_buffer_bytes {self.control_buffer_bytes!r} is invalid: must be >= 4096")


class Service:
    def __init__(self, config: HostConfig, options: ServiceOptions, environ: dict[str, str] | None = None) -> None:
        self.config, self.options = config, options
        self.host = AgentHost(config)
        self.journals = Journals()
        self.notifier = Notifier(environ)
        self.started_at = time.monotonic()
        self.metrics: Metrics | None = None
        self.server: ControlServer | None = None
        self.recorder = Recorder(self.host)  # the history the status page and `agenthost top` show
        self.http: HttpServer | None = None
        self._log_file: LogFile | None = None
        self._stop: asyncio.Event | None = None
        self._drain_s = config.drain_timeout_s
        self._fast = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def facts(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "socket": str(self.server.path) if self.server else None,
            "metrics_port": None if self.metrics is None else self.metrics.port,
            "http": None if self.http is None else self.http.base_url,
        }

    # --- lifecycle ------------------------------------------------------------------------------------------
    def run(self) -> int:
        if self.options.log_file:
            self._log_file = LogFile(self.options.log_file)
        configure(self.options.log_level, self.options.log_format, self._log_file)
        if not self._bind_http():  # before the host starts: a busy port costs nothing
            self.recorder.close()
            return 1
        make_private(self.host.root)
        try:
            self.host.start()
        except HostStartError as exc:
            print(f"agenthost: {exc}", file=sys.stderr)
            if self.http is not None:
                self.http.close()
            self.recorder.close()
            return 1
        try:
            asyncio.run(self._main())
        finally:
            if self.http is not None:
                self.http.close()
            self.recorder.close()
            self.host.shutdown(drain_timeout_s=0.0)
            if self.metrics is not None:
                self.metrics.close()
            if self._log_file is not None:
                self._log_file.close()
        return 0

    def _bind_http(self) -> bool:
        """Bind the status page when asked (served once the socket listens); False, said on stderr, when it cannot."""
        if not self.options.http:
            return True
        try:
            self.http = HttpServer(
                self.options.http,
                socket_path(self.host.root.system_dir),
                allow_remote=self.options.http_allow_remote,
            )
        except OSError as exc:
            print(f"agenthost: --http {self.options.http} cannot be served: {exc.strerror or exc}", file=sys.stderr)
            return False
        if not self.http.loopback_only:
            print(
                f"agenthost: WARNING: the status page listens on {self.http.base_url}, reachable from other "
                "hosts (token-protected, plain HTTP); prefer 127.0.0.1 and an ssh port forward",
                file=sys.stderr,
            )
            _log.warning("http.remote_bind", url=self.http.base_url)
        return True

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        table = methods(self)
        table.update(view_methods(self, table))
        self.server = ControlServer(
            socket_path(self.host.root.system_dir), table, max_buffer_bytes=self.options.control_buffer_bytes
        )
        await self.server.start()
        if self.http is not None:
            self.http.start(write_token(self.host.root.system_dir))  # a new token at every start
        if self.options.metrics:
            self.metrics = Metrics(self.host)
            port = self.metrics.serve(self.options.metrics)
            _log.info("service.metrics", address=self.options.metrics, port=port)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._on_stop_signal, sig)
        self._loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        self._loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)
        self.notifier.ready(self._status_line())
        _log.info("service.ready", root=str(self.host.root.root), socket=str(self.server.path), pid=os.getpid())
        ticker = asyncio.create_task(self._tick())
        await self._stop.wait()
        ticker.cancel()
        await self._drain()
        if self.http is not None:
            self.http.close()
        await self.server.close()
        _log.info("service.stopped")

    def request_stop(self, drain_timeout_s: float | None = None) -> None:
        """Drain and stop (from any thread)."""
        if drain_timeout_s is not None:
            self._drain_s = max(0.0, drain_timeout_s)
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def _on_stop_signal(self, sig: int) -> None:
        assert self._stop is not None
        if self._stop.is_set():
            self._fast = True
            _log.warning("service.stop_now", signal=signal.Signals(sig).name)
            return
        _log.warning("service.draining", signal=signal.Signals(sig).name, drain_timeout_s=self._drain_s)
        self._stop.set()

    def _on_hup(self) -> None:
        if self._log_file is not None:
            self._log_file.reopen()
        _log.info("service.log_reopened", path=self.options.log_file)

    def _on_usr1(self) -> None:
        _log.warning("service.stack_dump")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)

    async def _drain(self) -> None:
        self.notifier.stopping()
        loop = asyncio.get_running_loop()
        assert self.server is not None
        self.server.closing = True
        await loop.run_in_executor(None, _quietly(self.host.close_intake))
        deadline = time.monotonic() + self._drain_s
        while not self._fast and time.monotonic() < deadline:
            status = await loop.run_in_executor(None, _quietly(self.host.status))
            if status is None or not status.active_turns:
                break
            await asyncio.sleep(0.05)
        await loop.run_in_executor(None, lambda: self.host.shutdown(drain_timeout_s=0.0))

    async def _tick(self) -> None:
        """STATUS= every few seconds, and the watchdog ping while the host answers."""
        interval = self.notifier.watchdog_interval_s
        period = min(_STATUS_EVERY_S, interval) if interval else _STATUS_EVERY_S
        loop = asyncio.get_running_loop()
        last_status = time.monotonic()
        while True:
            await asyncio.sleep(period)
            line = await loop.run_in_executor(None, _quietly(self._status_line))
            if line is None:
                continue  # a host that cannot answer gets no watchdog ping: systemd restarts the service
            if interval:
                self.notifier.watchdog()
            if time.monotonic() - last_status >= _STATUS_EVERY_S:
                self.notifier.status(line)
                last_status = time.monotonic()

    def _status_line(self) -> str:
        status = self.host.status()
        ready = sum(1 for w in status.workers if w.state == "ready")
        return f"{status.state}: {ready}/{len(status.workers)} workers ready, {len(status.active_turns)} active turns"


def _quietly(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - logged; the caller treats None as "could not answer"
            _log.warning("service.host_call_failed", call=getattr(fn, "__name__", repr(fn)), error=repr(exc))
            return None

    return call
