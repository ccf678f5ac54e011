"""A minimal `codex app-server` client for the tests: it drives `agenthost app-server` and the real `codex
app-server` the same way, so one flow can run against both and their answers can be compared.

`AppServerClient(argv, env)` spawns the server on pipes; `request(method, params, id=...)` sends one request with
the id exactly as given (int, "1", a UUID ...) and returns the raw response dict (result or error) with that id;
every other message that arrives meanwhile is kept in order. Server requests (approvals) are answered by
`answer(request, decision)`, or automatically by the `approvals` policy given to `run_turn`. Every wait is bounded.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["AppServerClient", "TurnRun"]

WAIT_S = 30.0


def _same_id(answer_id: Any, request_id: Any) -> bool:
    """The same id with the same JSON type (0 and "0" differ)."""
    return answer_id == request_id and type(answer_id) is type(request_id)


class TurnRun:
    """What one turn produced: every notification and server request of it, in order, up to turn/completed."""

    def __init__(self, turn_id: str, messages: list[dict[str, Any]]) -> None:
        self.turn_id = turn_id
        self.messages = messages

    @property
    def methods(self) -> list[str]:
        return [m["method"] for m in self.messages]

    @property
    def completed(self) -> dict[str, Any]:
        return next(m for m in reversed(self.messages) if m["method"] == "turn/completed")["params"]["turn"]

    @property
    def text(self) -> str:
        return "".join(m["params"]["delta"] for m in self.messages if m["method"] == "item/agentMessage/delta")

    def first(self, method: str) -> dict[str, Any]:
        return next(m for m in self.messages if m["method"] == method)


class AppServerClient:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None, stderr_path: Path | None = None) -> None:
        self._stderr = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, bufsize=0
        )
        self._incoming: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.kept: list[dict[str, Any]] = []  # messages that arrived while waiting for something else
        self.raw_lines: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.raw_lines.append(line)
            self._incoming.put(json.loads(line))
        self._incoming.put(None)

    # --- sending -----------------------------------------------------------------------------------------------
    def send_line(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps(message).encode() + b"\n")

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"method": method} if params is None else {"method": method, "params": params})

    def request(self, method: str, params: Any = None, *, id: Any = None, wait_s: float = WAIT_S) -> dict[str, Any]:
        request_id = self._next_id() if id is None else id
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.wait(lambda m: "method" not in m and _same_id(m.get("id"), request_id), wait_s)

    def initialize(self, name: str = "appserverkit") -> dict[str, Any]:
        answer = self.request("initialize", {"clientInfo": {"name": name, "title": "test client", "version": "1.0"}})
        self.notify("initialized")
        return answer

    _ids = 0

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # --- receiving ---------------------------------------------------------------------------------------------
    def next_message(self, wait_s: float = WAIT_S) -> dict[str, Any]:
        try:
            message = self._incoming.get(timeout=wait_s)
        except queue.Empty:
            raise TimeoutError(f"nothing from the server within {wait_s} s") from None
        if message is None:
            self._incoming.put(None)
            raise EOFError(f"the server closed stdout (exit {self.process.poll()})")
        return message

    def wait(self, matches: Callable[[dict[str, Any]], bool], wait_s: float = WAIT_S) -> dict[str, Any]:
        for index, message in enumerate(self.kept):
            if matches(message):
                return self.kept.pop(index)
        deadline = time.monotonic() + wait_s
        while True:
            message = self.next_message(max(0.0, deadline - time.monotonic()))
            if matches(message):
                return message
            self.kept.append(message)

    def messages_until(
        self, matches: Callable[[dict[str, Any]], bool], wait_s: float = WAIT_S
    ) -> Iterator[dict[str, Any]]:
        """Every message (kept ones first), up to and including the first that matches."""
        kept, self.kept = self.kept, []
        deadline = time.monotonic() + wait_s
        for message in kept:
            if matches(message):
                self.kept = kept[kept.index(message) + 1 :]
                yield message
                return
            yield message
        while True:
            message = self.next_message(max(0.0, deadline - time.monotonic()))
            yield message
            if matches(message):
                return

    def answer(self, request: dict[str, Any], decision: Any) -> None:
        self.send({"id": request["id"], "result": {"decision": decision}})

    def run_turn(
        self, thread_id: str, text: str, *, approvals: Any = "decline", wait_s: float = WAIT_S, **overrides: Any
    ) -> TurnRun:
        """turn/start, then every message of the turn until its turn/completed; approvals answered by policy."""
        started = self.request(
            "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": text}], **overrides}
        )
        assert "result" in started, started
        return self.follow_turn(started["result"]["turn"]["id"], approvals=approvals, wait_s=wait_s)

    def follow_turn(self, turn_id: str, *, approvals: Any = "decline", wait_s: float = WAIT_S) -> TurnRun:
        messages: list[dict[str, Any]] = []
        done = False

        def ends(message: dict[str, Any]) -> bool:
            return message.get("method") == "turn/completed" and message["params"]["turn"]["id"] == turn_id

        for message in self.messages_until(ends, wait_s):
            if "method" not in message:
                self.kept.append(message)
                continue
            messages.append(message)
            if "id" in message and approvals is not None:  # a server request
                decision = approvals(message) if callable(approvals) else approvals
                if decision is not None:
                    self.answer(message, decision)
            done = ends(message)
        assert done
        return TurnRun(turn_id, messages)

    def close(self, wait_s: float = 10.0) -> int | None:
        """Close stdin (the clean stop), then wait; kill if it lingers."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(wait_s)
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()  # type: ignore[union-attr]
        return code
