"""Test kit for `agenthost serve`: the service as a real subprocess, systemd's notify socket played by the test,
and a minimal raw client of the control socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agenthost._client import ControlClient
from agenthost._sockpath import socket_path


class NotifyListener:
    """A datagram socket playing systemd's NOTIFY_SOCKET: keeps every message the service sends."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(fields)

    def wait_for(self, key: str, value: str | None = None, timeout_s: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                for message in self.messages:
                    if key in message and (value is None or message[key] == value):
                        return message
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value} notification within {timeout_s} s: {self.messages}")

    def close(self) -> None:
        self._done.set()
        self._sock.close()


class ServiceProcess:
    """`agenthost serve` in a subprocess, ready (READY=1 received) when `start()` returns."""

    def __init__(
        self, root: Path, folder: Path, config: str = "", args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> None:
        self.root, self.folder = root, folder
        self.notify = NotifyListener(folder)
        self.stderr_path = folder / "serve.stderr"
        config_path = folder / "serve.toml"
        config_path.write_text(f'[host]\nstorage_root = "{root}"\n{config}')
        command = [
            sys.executable,
            "-m",
            "agenthost",
            "--log-format",
            "json",
            "serve",
            "--config",
            str(config_path),
            *args,
        ]
        environ = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})}
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, env=environ
        )

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        try:
            self.notify.wait_for("READY", "1", timeout_s)
        except AssertionError:
            self.process.kill()
            raise AssertionError(f"the service did not become ready: {self.stderr_path.read_text()[-3000:]}") from None
        return self

    @property
    def socket(self) -> Path:
        return socket_path(self.root / "system")

    def client(self, timeout_s: float = 30.0) -> ControlClient:
        return ControlClient(self.socket, timeout_s)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = 60.0) -> int:
        return self.process.wait(timeout_s)

    def events(self) -> list[dict[str, Any]]:
        """The service's JSON log lines so far."""
        found = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._stderr.close()
        self.notify.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """start(config="", args=(), env=None): a ready service on tmp_path/root; every one is stopped afterwards."""
    started: list[ServiceProcess] = []

    def start(config: str = "", args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> ServiceProcess:
        process = ServiceProcess(tmp_path / "root", tmp_path, config, args, env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def turn_events(client: ControlClient, turn_id: str, timeout_s: float = 30.0) -> Iterator[dict[str, Any]]:
    """The `turn.event` notifications of one turn, up to and including its TurnFinished."""
    while True:
        note = client.next_notification(timeout_s)
        if note.method != "turn.event" or note.params.get("turn_id") != turn_id:
            continue
        yield note.params
        if note.params["event"]["type"] == "TurnFinished":
            return


def raw_connect(path: Path, timeout_s: float = 10.0) -> socket.socket:
    from agenthost._sockpath import connect

    return connect(path, timeout_s)


def read_lines(sock: socket.socket, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    sock.settimeout(timeout_s)
    buffer = b""
    lines: list[dict[str, Any]] = []
    while len(lines) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer and len(lines) < count:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(json.loads(line))
    return lines
