"""The mock Responses-API model server alone (no codex): SSE shapes, reply rules, recording, lifecycle, CLI."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from agenthost.protocol.mock_model import MockModelServer, reply_for

pytestmark = pytest.mark.timeout(30)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _body(*items: dict[str, Any]) -> dict[str, Any]:
    context = _user("<environment_context>\n  <cwd>/tmp</cwd>\n</environment_context>")
    return {"model": "mock-model", "stream": True, "input": [context, *items]}


def _call_output(output: str, call_id: str = "call_resp_1") -> list[dict[str, Any]]:
    return [
        {"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": call_id},
        {"type": "function_call_output", "call_id": call_id, "output": output},
    ]


def _post(server: MockModelServer, body: Any, path: str = "/v1/responses") -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        connection.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def _events(raw: bytes) -> list[dict[str, Any]]:
    """Parse an SSE body; every event's `event:` line must match its data's `type`."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        payload = json.loads(fields["data"])
        assert fields["event"] == payload["type"]
        events.append(payload)
    return events


def _stream(server: MockModelServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    status, content_type, raw = _post(server, body)
    assert (status, content_type) == (200, "text/event-stream")
    return _events(raw)


@pytest.fixture
def server() -> Any:
    with MockModelServer() as running:
        yield running


def test_text_reply_streams_in_the_responses_api_shape(server: MockModelServer) -> None:
    events = _stream(server, _body(_user("hello there")))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.output_item.added",
        *["response.output_text.delta"] * 4,
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "Mock reply to: hello there" and all(deltas)
    item_id = events[1]["item"]["id"]
    assert {e["item_id"] for e in events if e["type"] == "response.output_text.delta"} == {item_id}
    done = events[-2]["item"]
    assert (done["type"], done["role"], done["id"]) == ("message", "assistant", item_id)
    assert done["content"] == [{"type": "output_text", "text": "Mock reply to: hello there", "annotations": []}]
    completed = events[-1]["response"]
    assert completed["id"] == events[0]["response"]["id"] and completed["status"] == "completed"
    usage = completed["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


def test_every_request_body_is_recorded_in_order(server: MockModelServer) -> None:
    bodies = [_body(_user(f"message {n}")) for n in range(3)]
    for body in bodies:
        _stream(server, body)
    assert server.requests == bodies
    server.requests.clear()  # a copy: the record itself is untouched
    assert len(server.requests) == 3


def test_concurrent_requests_are_all_recorded(server: MockModelServer) -> None:
    threads = [threading.Thread(target=_stream, args=(server, _body(_user(f"t{n}")))) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    texts = sorted(body["input"][-1]["content"][0]["text"] for body in server.requests)
    assert texts == sorted(f"t{n}" for n in range(8))


def test_run_marker_asks_for_an_escalated_exec_command(server: MockModelServer) -> None:
    events = _stream(server, _body(_user("please\nRUN: echo hi there\nthanks")))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    item = events[2]["item"]
    assert (item["type"], item["name"], item["call_id"]) == ("function_call", "exec_command", "call_resp_1")
    assert json.loads(item["arguments"]) == {
        "cmd": "echo hi there",
        "sandbox_permissions": "require_escalated",
        "justification": "agenthost test",
    }


def test_tool_output_gets_the_first_line_the_command_printed(server: MockModelServer) -> None:
    codex_output = (
        "Chunk ID: f0eca7\nWall time: 0.0000 seconds\nProcess exited with code 0\n"
        "Original token count: 3\nOutput:\nhi there\nsecond line\n"
    )
    events = _stream(server, _body(_user("RUN: echo hi there"), *_call_output(codex_output)))
    assert events[-2]["item"]["content"][0]["text"] == "Tool said: hi there"
    declined = 'exec_command failed: CreateProcess { message: "Rejected(\\"rejected by user\\")" }'
    assert reply_for(_body(_user("RUN: x"), *_call_output(declined))).text == f"Tool said: {declined}"


def test_only_tool_output_after_the_last_user_message_counts() -> None:
    earlier = [_user("RUN: ls"), *_call_output("Output:\nfile"), _user("and now?")]
    assert reply_for(_body(*earlier)).text == "Mock reply to: and now?"
    again = [_user("RUN: ls"), *_call_output("Output:\nfile"), _user("RUN: pwd")]
    assert reply_for(_body(*again)).command == "pwd"


def test_ask_marker_calls_request_user_input() -> None:
    reply = reply_for(_body(_user("ASK: which one?")))
    assert (reply.question, reply.command, reply.text) == ("which one?", None, None)


def test_a_request_without_user_messages_still_gets_a_reply() -> None:
    assert reply_for({"input": []}).text == "Mock reply to: "
    assert reply_for({"input": "not a list"}).text == "Mock reply to: "


def test_slow_marker_streams_more_deltas_with_the_slow_delay() -> None:
    with MockModelServer(slow_deltas=6, slow_delay_s=0.05) as server:
        started = time.monotonic()
        events = _stream(server, _body(_user("SLOW please")))
        elapsed = time.monotonic() - started
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) == 6 and "".join(deltas) == "Mock reply to: SLOW please"
    assert elapsed >= 5 * 0.05


def test_short_text_gets_fewer_deltas_never_empty_ones() -> None:
    with MockModelServer(deltas=100) as server:
        events = _stream(server, _body(_user("x")))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "Mock reply to: x" and all(deltas) and len(deltas) == len("Mock reply to: x")


def test_models_endpoint_unknown_paths_and_bad_bodies(server: MockModelServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/v1/models")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["data"] == []
    connection.close()
    status, _, raw = _post(server, _body(_user("hi")), path="/v1/chat/completions")
    assert status == 404 and "/v1/chat/completions" in json.loads(raw)["error"]["message"]
    status, _, raw = _post(server, b"{not json")
    assert status == 400 and "not JSON" in json.loads(raw)["error"]["message"]
    status, _, raw = _post(server, b"[1, 2]")
    assert status == 400 and "[1, 2]" in json.loads(raw)["error"]["message"]
    assert server.requests == []


def test_client_disconnect_mid_stream_is_quiet_and_the_server_keeps_serving() -> None:
    with MockModelServer(slow_deltas=20, slow_delay_s=0.05) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("POST", "/v1/responses", body=json.dumps(_body(_user("SLOW and long"))))
        response = connection.getresponse()
        assert response.readline().startswith(b"event: response.created")
        response.close()
        connection.close()
        wait_until("the server notices the disconnect", lambda: server.disconnects == 1, timeout_s=10.0)
        assert _stream(server, _body(_user("still there?")))[-1]["type"] == "response.completed"


def test_stop_wakes_a_stream_waiting_between_deltas_and_is_idempotent() -> None:
    server = MockModelServer(slow_deltas=10, slow_delay_s=30.0).start()
    finished = threading.Event()

    def read() -> None:
        try:
            _post(server, _body(_user("SLOW forever")))
        except (OSError, http.client.HTTPException):
            pass
        finished.set()

    threading.Thread(target=read, daemon=True).start()
    wait_until("the slow request arrives", lambda: server.requests, timeout_s=10.0)
    started = time.monotonic()
    server.stop()
    server.stop()
    assert finished.wait(5.0)
    assert time.monotonic() - started < 5.0
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port


def test_binds_loopback_and_points_codex_at_itself(server: MockModelServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    overrides = server.codex_overrides()
    assert overrides[:3] == ("features.plugins=false", 'model_provider="mock"', 'model="mock-model"')
    provider = overrides[3]
    assert provider.startswith("model_providers.mock={") and f'base_url="{server.base_url}"' in provider
    for setting in (
        'wire_api="responses"',
        "supports_websockets=false",
        "request_max_retries=0",
        "stream_max_retries=0",
    ):
        assert setting in provider
    assert all("=" in override for override in overrides)


def test_bad_constructor_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="0"):
        MockModelServer(deltas=0)
    with pytest.raises(ValueError, match="-1"):
        MockModelServer(delta_delay_s=-1)
    with MockModelServer() as server, pytest.raises(RuntimeError, match="already started"):
        server.start()


@pytest.mark.timeout(30)
def test_cli_prints_the_port_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "agenthost.protocol.mock_model", "--port", "0", "--deltas", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/v1/responses", body=json.dumps(_body(_user("from the cli"))))
        events = _events(connection.getresponse().read())
        connection.close()
        deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
        assert "".join(deltas) == "Mock reply to: from the cli" and len(deltas) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
