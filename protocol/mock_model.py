"""A mock of the OpenAI Responses API for running the real `codex app-server` offline (stdlib only).

Run it: `python -m protocol.mock_model --port 0 [--deltas N] [--delta-delay-s S]` prints the bound port on stdout
and serves until SIGINT/SIGTERM. In-process: `with MockModelServer() as server: ...` and pass
`server.codex_overrides()` to codex as `-c key=value` flags (HostConfig.codex_config).

Contract:
- Binds 127.0.0.1 only; port 0 (the default) picks a free port (`server.port`, `server.base_url` = ".../v1").
- `POST /v1/responses` (codex sends `stream: true`; the flag is not checked: every answer streams; the parsed JSON
  body is recorded in `server.requests`, in arrival order, thread-safe) answers `text/event-stream` in the
  Responses API shape codex 0.169.0 accepts:
  `response.created`, `response.output_item.added`, `response.output_text.delta` xN (text replies only),
  `response.output_item.done`, `response.completed` (with `usage`). Each event is `event: <type>` + `data: <json>`.
- The reply depends on the text of the LAST user message of the request's `input`:
  - it contains `RUN: <cmd>` (cmd = the rest of that line) and no `function_call_output` follows that user message
    -> one `function_call` item to `exec_command` with arguments `{"cmd": <cmd>, "sandbox_permissions":
    "require_escalated", "justification": "agenthost test"}` (codex then asks for approval under "on-request");
  - it contains `ASK: <question>` (same conditions; the first line with either marker decides) -> one
    `function_call` item to `request_user_input` with that question and two options (codex 0.169.0 offers that
    tool outside Plan mode only with `-c features.default_mode_request_user_input=true`; it then sends the server
    request `item/tool/requestUserInput`);
  - a `function_call_output` follows it -> the text "Tool said: <first line of the command's output>" (the line
    after codex's "Output:" header when there is one, else the output's first line);
  - otherwise the text "Mock reply to: <text>".
  Text is streamed in `deltas` chunks (default 4; fewer if the text is shorter) with `delta_delay_s` (default 0)
  between them. A text containing `SLOW` streams in `slow_deltas` chunks (default 40) with `slow_delay_s`
  (default 0.25 s) between them, so a test can interrupt or kill mid-stream.
- `GET /v1/models` -> `{"object": "list", "data": [], "models": []}`. Anything else -> 404 with a JSON error.
  A body that is not JSON -> 400.
- A client that disconnects mid-stream ends that stream quietly (counted in `server.disconnects`). `stop()` (or
  leaving the `with` block) wakes streams sleeping between deltas, closes the socket and joins the serving thread;
  it is idempotent.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import signal
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agenthost.protocol._chunks import split_text
from agenthost.protocol._runtime_turns import RUN_MARKER

__all__ = ["MockModelServer", "Reply", "main", "reply_for"]

ASK_MARKER = "ASK:"
SLOW_MARKER = "SLOW"
JUSTIFICATION = "agenthost test"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reply:
    """What the mock answers one request with: exactly one of a text, an exec_command call or a question."""

    text: str | None = None
    command: str | None = None  # RUN: -> exec_command {"cmd": command, ...}
    question: str | None = None  # ASK: -> request_user_input with this one question
    slow: bool = False  # SLOW marker: stream with slow_deltas / slow_delay_s


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _last_user_message(items: list[Any]) -> tuple[int, str] | None:
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, dict) and item.get("type", "message") == "message" and item.get("role") == "user":
            return index, _content_text(item.get("content"))
    return None


def _command_output_line(output: Any) -> str:
    """The first line of what the command printed, out of codex's function_call_output text."""
    text = _content_text(output)
    lines = text.splitlines()
    if "Output:" in lines:
        after = lines[lines.index("Output:") + 1 :]
        return after[0] if after else ""
    return lines[0] if lines else ""


def reply_for(body: dict[str, Any]) -> Reply:
    """Decide the reply for one request body (see the module contract)."""
    raw_items = body.get("input")
    items: list[Any] = raw_items if isinstance(raw_items, list) else []
    found = _last_user_message(items)
    user_text = found[1] if found else ""
    outputs = (
        [
            item
            for item in items[found[0] + 1 :]
            if isinstance(item, dict) and item.get("type") == "function_call_output"
        ]
        if found
        else []
    )
    slow = SLOW_MARKER in user_text
    if outputs:
        return Reply(text=f"Tool said: {_command_output_line(outputs[-1].get('output'))}", slow=slow)
    for line in user_text.splitlines():
        if RUN_MARKER in line and line.split(RUN_MARKER, 1)[1].strip():
            return Reply(command=line.split(RUN_MARKER, 1)[1].strip(), slow=slow)
        if ASK_MARKER in line and line.split(ASK_MARKER, 1)[1].strip():
            return Reply(question=line.split(ASK_MARKER, 1)[1].strip(), slow=slow)
    return Reply(text=f"Mock reply to: {user_text}", slow=slow)


def _tool_call(reply: Reply) -> tuple[str, str]:
    """(tool name, JSON arguments) of the function call a RUN:/ASK: reply makes."""
    if reply.command is not None:
        return "exec_command", json.dumps(
            {"cmd": reply.command, "sandbox_permissions": "require_escalated", "justification": JUSTIFICATION}
        )
    question = {
        "id": "agenthost_question",
        "header": "Question",
        "question": reply.question,
        "options": [{"label": "Yes (Recommended)", "description": "Go on."}, {"label": "No", "description": "Stop."}],
    }
    return "request_user_input", json.dumps({"questions": [question]})


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


class MockModelServer:
    """The mock Responses API on 127.0.0.1; a context manager (start on enter, stop on exit)."""

    def __init__(
        self,
        *,
        port: int = 0,
        deltas: int = 4,
        delta_delay_s: float = 0.0,
        slow_deltas: int = 40,
        slow_delay_s: float = 0.25,
    ) -> None:
        if deltas < 1 or slow_deltas < 1:
            raise ValueError(f"deltas and slow_deltas must be >= 1, got {deltas!r} and {slow_deltas!r}")
        if delta_delay_s < 0 or slow_delay_s < 0:
            raise ValueError(f"delays must be >= 0 s, got {delta_delay_s!r} and {slow_delay_s!r}")
        self.deltas = deltas
        self.delta_delay_s = delta_delay_s
        self.slow_deltas = slow_deltas
        self.slow_delay_s = slow_delay_s
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._disconnects = 0
        self._response_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> MockModelServer:
        if self._httpd is not None:
            raise RuntimeError("MockModelServer already started")
        handler = type("_BoundHandler", (_Handler,), {"server_state": self})
        self._httpd = _Server(("127.0.0.1", self._requested_port), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="mock-model",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> MockModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses and codex flags -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("MockModelServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def codex_overrides(self) -> tuple[str, ...]:
        """`-c key=value` strings that point codex at this server and keep it offline (no retries, no plugin sync)."""
        provider = (
            f'{{name="mock", base_url="{self.base_url}", wire_api="responses", supports_websockets=false, '
            "request_max_retries=0, stream_max_retries=0, stream_idle_timeout_ms=30000}"
        )
        return (
            "features.plugins=false",  # no curated-plugin sync with github.com: the tests stay on loopback
            'model_provider="mock"',
            'model="mock-model"',
            f"model_providers.mock={provider}",
        )

    # --- recorded requests -------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[dict[str, Any]]:
        """A copy of every recorded request body, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """How many streams ended early because the client went away."""
        with self._lock:
            return self._disconnects

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    def _record(self, body: dict[str, Any]) -> int:
        with self._lock:
            self._requests.append(body)
            return next(self._response_ids)

    def _events(self, body: dict[str, Any], number: int) -> Iterator[tuple[str, dict[str, Any], float]]:
        """(event type, payload, seconds to wait before it) for one response."""
        reply = reply_for(body)
        response_id = f"resp_{number}"
        yield (
            "response.created",
            {"response": {"id": response_id, "object": "response", "status": "in_progress", "output": []}},
            0.0,
        )
        if reply.command is not None or reply.question is not None:
            name, arguments = _tool_call(reply)
            item = {
                "type": "function_call",
                "id": f"fc_{response_id}",
                "call_id": f"call_{response_id}",
                "name": name,
                "arguments": arguments,
                "status": "completed",
            }
            yield "response.output_item.added", {"output_index": 0, "item": {**item, "arguments": ""}}, 0.0
            yield "response.output_item.done", {"output_index": 0, "item": item}, 0.0
            output_tokens = 1
        else:
            text = reply.text or ""
            count, delay = (self.slow_deltas, self.slow_delay_s) if reply.slow else (self.deltas, self.delta_delay_s)
            item_id = f"msg_{response_id}"
            message = {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}
            yield "response.output_item.added", {"output_index": 0, "item": message}, 0.0
            for index, piece in enumerate(split_text(text, count)):
                yield (
                    "response.output_text.delta",
                    {"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece},
                    (delay if index else 0.0),
                )
            done = {
                **message,
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
            yield "response.output_item.done", {"output_index": 0, "item": done}, 0.0
            output_tokens = max(1, len(text.split()))
        usage = _usage(max(1, len(json.dumps(body.get("input", []))) // 4), output_tokens)
        yield (
            "response.completed",
            {
                "response": {
                    "id": response_id,
                    "object": "response",
                    "status": "completed",
                    "output": [],
                    "usage": usage,
                }
            },
            0.0,
        )

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False when the server is stopping."""
        return not self._stopping.wait(seconds) if seconds > 0 else not self._stopping.is_set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # codex and tests may open several connections at once


class _Handler(BaseHTTPRequestHandler):
    server_state: MockModelServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0].rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [], "models": []})
        else:
            self._json(404, {"error": {"message": f"mock model server has no GET {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?", 1)[0].rstrip("/") != "/v1/responses":
            self._json(404, {"error": {"message": f"mock model server has no POST {self.path}", "type": "not_found"}})
            return
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._json(400, {"error": {"message": f"request body is not JSON: {exc}", "type": "invalid_request"}})
            return
        if not isinstance(body, dict):
            self._json(
                400,
                {
                    "error": {
                        "message": f"request body must be an object, got {body!r}"[:200],
                        "type": "invalid_request",
                    }
                },
            )
            return
        state = self.server_state
        number = state._record(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        sequence = itertools.count()
        try:
            for event_type, payload, delay in state._events(body, number):
                if not state._wait(delay):
                    return
                data = json.dumps({"type": event_type, "sequence_number": next(sequence), **payload})
                self.wfile.write(f"event: {event_type}\ndata: {data}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            state._count_disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protocol.mock_model", description="Mock Responses-API model server for codex."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--deltas", type=int, default=4)
    parser.add_argument("--delta-delay-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with MockModelServer(port=args.port, deltas=args.deltas, delta_delay_s=args.delta_delay_s) as server:
        print(server.port, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
