"""The runner side of a campaign's control protocol: one host process (`python -m agenthost.chaos._serve`).

Contract:
- Protocol (JSON lines): runner -> host `{"id": n, "op": name, ...args}`; host -> runner
  `{"id": n, "ok": true, "result": ...}` / `{"id": n, "ok": false, "error": "..."}` and unsolicited
  `{"event": {"kind": ..., "t": monotonic, ...}}` (turn events of every acknowledged send, and every event of
  RECORDED_EVENTS, the typed events of actors._events, stamped when emitted). Ops: create_thread, send, answer,
  status, set_faults, storage_fault, actor_crash, power_cut, fd_count, settle, shutdown (chaos._plugin.EmbeddedHost
  answers them).
- `SubprocessHost(config, on_event, log_path)` starts `python -m agenthost.chaos._serve CONFIG_JSON` (cwd: the
  repository root; the host's stderr is appended to `log_path`) and waits at most 60 s for its first line
  (`{"id": 0, "ok": true, ...}`): a host that does not start in time (it is killed) or reports `ok: false` raises
  HostGoneError. Events go to `on_event` on the reader thread; stdout lines that are not JSON are skipped.
- `request(op, timeout_s=30.0, **args)` returns the result; RuntimeError(error) when the host answered with an
  error; HostGoneError when the process is gone, exits during the request or does not answer within `timeout_s`.
- `kill()` SIGKILLs the process (one already gone is fine) and reaps it (30 s at most); `close(timeout_s=30.0)` asks
  for "shutdown", waits `timeout_s` for the exit, then kills.
- `HostDriver` is what the campaign loop needs of one host incarnation: this class, or chaos._plugin's in-process
  driver (requests are direct calls; it cannot be killed).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agenthost.actors._events import EVENT_TYPES, HostEvent

__all__ = ["RECORDED_EVENTS", "EventSink", "HostDriver", "HostGoneError", "SubprocessHost"]

RECORDED_EVENTS: tuple[type[HostEvent], ...] = EVENT_TYPES  # every typed event (actors._events) is recorded
EventSink = Callable[[dict[str, Any]], None]


class HostGoneError(RuntimeError):
    """The host process died or stopped answering."""


class HostDriver(Protocol):
    pid: int

    def request(self, op: str, timeout_s: float = 30.0, **args: Any) -> Any: ...
    def kill(self) -> None: ...
    def close(self, timeout_s: float = 30.0) -> None: ...


class SubprocessHost:
    """Runner side of the control protocol: one host process."""

    def __init__(self, config: dict[str, Any], on_event: EventSink, log_path: Path) -> None:
        self._on_event = on_event
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        self._dead = False
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "agenthost.chaos._serve", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=Path(__file__).resolve().parent.parent,
            )
        self.pid = self._proc.pid
        self._ready: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"chaos-host-{self.pid}", daemon=True)
        self._reader.start()
        try:
            hello = self._ready.get(timeout=60.0)
        except queue.Empty:
            self.kill()
            raise HostGoneError(f"host process {self.pid} did not start within 60 s") from None
        if not hello.get("ok"):
            self.kill()
            raise HostGoneError(f"host process {self.pid} failed to start: {hello.get('error')}")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if "event" in message:
                self._on_event(message["event"])
            elif message.get("id") == 0:
                self._ready.put(message)
            else:
                with self._lock:
                    waiter = self._replies.pop(message.get("id"), None)
                if waiter is not None:
                    waiter.put(message)
        self._dead = True
        self._ready.put({"ok": False, "error": "host process exited"})
        with self._lock:
            waiters, self._replies = list(self._replies.values()), {}
        for waiter in waiters:
            waiter.put({"ok": False, "error": "host process exited", "gone": True})

    def request(self, op: str, timeout_s: float = 30.0, **args: Any) -> Any:
        if self._dead:
            raise HostGoneError(f"host process {self.pid} is gone")
        waiter: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            self._replies[request_id] = waiter
            line = json.dumps({"id": request_id, "op": op, **args}) + "\n"
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._replies.pop(request_id, None)
                raise HostGoneError(f"host process {self.pid} is gone") from None
        try:
            reply = waiter.get(timeout=timeout_s)
        except queue.Empty:
            raise HostGoneError(f"host process {self.pid}: no answer to {op} within {timeout_s:g} s") from None
        if reply.get("gone"):
            raise HostGoneError(f"host process {self.pid} exited during {op}")
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error")))
        return reply.get("result")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.wait(30)
        self._reader.join(10)

    def close(self, timeout_s: float = 30.0) -> None:
        try:
            self.request("shutdown", timeout_s=timeout_s)
        except (HostGoneError, RuntimeError):
            pass
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reader.join(10)
