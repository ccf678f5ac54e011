"""Drives `python -m agenthost.protocol.reference_runtime` as a subprocess over stdin/stdout, like a host would.

Every read is bounded (READ_TIMEOUT_S); every test carries a pytest timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agenthost.protocol._errors import ErrorKind, classify_error
from agenthost.protocol._faults import FAULTS_ENV_VAR, RuntimeFaults, encode_faults, kill_process_group
from agenthost.protocol._jsonrpc import (
    ErrorResponse,
    Incoming,
    Notification,
    ProtocolError,
    Request,
    Response,
    decode_line,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
READ_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 10.0
CLIENT_INFO = {"clientInfo": {"name": "agenthost-tests", "version": "0.1"}}


class RuntimeProcess:
    """One reference runtime subprocess with a reader thread; all reads time out."""

    def __init__(self, state_dir: Path, args: list[str], env: dict[str, str], stderr_path: Path) -> None:
        self.state_dir = state_dir
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as stderr_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agenthost.protocol.reference_runtime", "--state-dir", str(state_dir), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                cwd=REPO_ROOT,
                env=env,
                start_new_session=True,
            )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self._lines.put(raw.rstrip(b"\n"))
        self._lines.put(None)

    # --- writing ---
    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(msgspec.json.encode(message) + b"\n")

    def request(self, method: str, params: Any = None) -> int:
        request_id = next(self._ids)
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return request_id

    # --- reading ---
    def read_line(self, timeout: float = READ_TIMEOUT_S) -> bytes | None:
        """The next stdout line, or None at EOF."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stdout line within {timeout} s; stderr:\n{self.stderr()}") from None

    def read(self, timeout: float = READ_TIMEOUT_S) -> Incoming:
        line = self.read_line(timeout)
        assert line is not None, f"unexpected EOF; stderr:\n{self.stderr()}"
        return decode_line(line)

    def read_until(self, done: Callable[[Incoming], bool], timeout: float = READ_TIMEOUT_S) -> list[Incoming]:
        """Messages up to and including the first one for which `done` holds."""
        seen: list[Incoming] = []
        deadline = time.monotonic() + timeout
        while not seen or not done(seen[-1]):
            seen.append(self.read(max(0.0, deadline - time.monotonic())))
        return seen

    def call(self, method: str, params: Any = None) -> Response | ErrorResponse:
        """Send a request; return its answer (notifications before it must not exist)."""
        request_id = self.request(method, params)
        answer = self.read()
        assert isinstance(answer, (Response, ErrorResponse)) and answer.id == request_id, answer
        return answer

    def result(self, method: str, params: Any = None) -> Any:
        answer = self.call(method, params)
        assert isinstance(answer, Response), answer
        return answer.result

    def error_message(self, method: str, params: Any = None) -> str:
        answer = self.call(method, params)
        assert isinstance(answer, ErrorResponse), answer
        assert answer.error.code == -32600
        return answer.error.message

    # --- protocol steps ---
    def initialize(self) -> dict[str, Any]:
        result = self.result("initialize", CLIENT_INFO)
        self.send({"method": "initialized"})
        return result

    def start_thread(self) -> str:
        thread_id = self.result("thread/start", {"cwd": str(self.state_dir)})["thread"]["id"]
        started = self.read()
        assert isinstance(started, Notification) and started.method == "thread/started"
        return thread_id

    def start_turn(self, thread_id: str, text: str) -> str:
        result = self.result("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": text}]})
        return result["turn"]["id"]

    def read_turn(self, timeout: float = READ_TIMEOUT_S) -> list[Incoming]:
        return self.read_until(lambda m: _is_notification(m, "turn/completed"), timeout)

    # --- lifecycle ---
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close_stdin_and_wait(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=EXIT_TIMEOUT_S)

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_process_group(self.proc.pid)
            self.proc.wait(timeout=EXIT_TIMEOUT_S)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


Spawn = Callable[..., RuntimeProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    started: list[RuntimeProcess] = []

    def _spawn(*args: str, state_dir: Path | None = None, env_faults: str | None = None) -> RuntimeProcess:
        env = {key: value for key, value in os.environ.items() if key != FAULTS_ENV_VAR}
        if env_faults is not None:
            env[FAULTS_ENV_VAR] = env_faults
        stderr_path = tmp_path / f"stderr{len(started)}.log"
        runtime = RuntimeProcess(state_dir or tmp_path / "state", list(args), env, stderr_path)
        started.append(runtime)
        return runtime

    yield _spawn
    for runtime in started:
        runtime.stop()


def _is_notification(message: Incoming, method: str) -> bool:
    return isinstance(message, Notification) and message.method == method


def _methods(messages: list[Incoming]) -> list[str]:
    return [m.method for m in messages if isinstance(m, (Notification, Request))]


def _params(message: Incoming) -> Any:
    assert isinstance(message, (Notification, Request)), message
    return message.params


def _deltas(messages: list[Incoming]) -> list[str]:
    return [_params(m)["delta"] for m in messages if _is_notification(m, "item/agentMessage/delta")]


def _completed_items(messages: list[Incoming], item_type: str) -> list[dict[str, Any]]:
    return [
        _params(m)["item"]
        for m in messages
        if _is_notification(m, "item/completed") and _params(m)["item"]["type"] == item_type
    ]


def _faults(**kwargs: Any) -> list[str]:
    return ["--faults", encode_faults(RuntimeFaults(**kwargs))]


def _wait_for_approval_request(runtime: RuntimeProcess) -> tuple[list[Incoming], Request]:
    seen = runtime.read_until(lambda m: isinstance(m, Request))
    request = seen[-1]
    assert isinstance(request, Request)
    return seen, request


# --- handshake and dialect -----------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_handshake_rules(spawn: Spawn, tmp_path: Path) -> None:
    runtime = spawn()
    assert runtime.error_message("thread/start", {}) == "Not initialized"
    assert runtime.error_message("foo/bar").startswith("Invalid request: unknown variant `foo/bar`")
    assert runtime.error_message("initialize", {}) == "Invalid request: missing field `clientInfo`"
    assert runtime.error_message("initialize") == "Invalid request: missing field `params`"
    assert runtime.initialize() == {
        "userAgent": "agenthost-reference/0.1",
        "codexHome": str(tmp_path / "state"),
        "platformFamily": "unix",
        "platformOs": "linux",
    }
    assert runtime.error_message("initialize", CLIENT_INFO) == "Already initialized"
    assert runtime.close_stdin_and_wait() == 0


@pytest.mark.timeout(30)
def test_initialized_notification_is_optional(spawn: Spawn) -> None:
    runtime = spawn()
    assert "userAgent" in runtime.result("initialize", CLIENT_INFO)
    assert runtime.start_thread()


@pytest.mark.timeout(30)
def test_wire_dialect_has_no_jsonrpc_and_notifications_carry_emitted_at(spawn: Spawn) -> None:
    runtime = spawn()
    runtime.send({"jsonrpc": "2.0", "id": "init-1", "method": "initialize", "params": CLIENT_INFO})
    raw_answer = runtime.read_line()
    assert raw_answer is not None
    answer = json.loads(raw_answer)
    assert answer["id"] == "init-1" and "jsonrpc" not in answer
    runtime.request("thread/start", {})
    json.loads(runtime.read_line() or b"null")
    started = json.loads(runtime.read_line() or b"null")
    assert started["method"] == "thread/started" and "jsonrpc" not in started
    assert isinstance(started["emittedAtMs"], int)


# --- threads and turns ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_thread_start_persists_and_answers_before_thread_started(spawn: Spawn, tmp_path: Path) -> None:
    runtime = spawn()
    runtime.initialize()
    params = {"cwd": "/somewhere", "approvalPolicy": "untrusted", "sandbox": "workspace-write"}
    result = runtime.result("thread/start", params)
    thread = result["thread"]
    assert uuid.UUID(thread["id"])
    assert thread["turns"] == [] and thread["status"] == {"type": "idle"} and thread["cwd"] == "/somewhere"
    assert (result["model"], result["modelProvider"], result["cwd"]) == ("reference", "builtin", "/somewhere")
    assert result["approvalPolicy"] == "untrusted"
    assert result["sandbox"]["type"] == "workspaceWrite"
    started = runtime.read()
    assert _is_notification(started, "thread/started")
    assert _params(started)["thread"]["id"] == thread["id"]
    assert (tmp_path / "state" / "threads" / f"{thread['id']}.jsonl").exists()
    assert runtime.error_message("thread/start", {"sandbox": "sometimes"}).startswith(
        "Invalid request: unknown variant `sometimes`"
    )


@pytest.mark.timeout(30)
def test_turn_streams_deltas_that_add_up_to_the_final_text(spawn: Spawn) -> None:
    runtime = spawn()
    runtime.initialize()
    thread_id = runtime.start_thread()
    answer = runtime.call("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "hello"}]})
    assert isinstance(answer, Response)
    turn = answer.result["turn"]
    assert (turn["status"], turn["items"], turn["error"]) == ("inProgress", [], None)
    stream = runtime.read_turn()
    assert _methods(stream) == [
        "turn/started",
        "item/started",
        "item/completed",
        "item/started",
        *["item/agentMessage/delta"] * 4,
        "item/completed",
        "turn/completed",
    ]
    assert _params(stream[0])["turn"]["id"] == turn["id"]
    user_item = _completed_items(stream, "userMessage")[0]
    assert user_item["content"] == [{"type": "text", "text": "hello"}]
    assert _params(stream[3])["item"]["text"] == ""
    deltas = _deltas(stream)
    final_item = _completed_items(stream, "agentMessage")[0]
    assert len(deltas) >= 2 and all(deltas)
    assert "".join(deltas) == final_item["text"] == "Reference reply to: hello"
    completed = _params(stream[-1])
    assert completed == {
        "threadId": thread_id,
        "turn": {"id": turn["id"], "status": "completed", "items": [final_item], "error": None},
    }
    assert runtime.start_turn(thread_id, "again") != turn["id"]  # the thread is idle again
    assert _params(runtime.read_turn()[-1])["turn"]["status"] == "completed"


@pytest.mark.timeout(30)
def test_deltas_per_reply_sets_the_number_of_deltas(spawn: Spawn) -> None:
    runtime = spawn("--deltas-per-reply", "7")
    runtime.initialize()
    runtime.start_turn(runtime.start_thread(), "count my deltas")
    assert len(_deltas(runtime.read_turn())) == 7


@pytest.mark.timeout(30)
def test_params_errors_name_the_field(spawn: Spawn) -> None:
    runtime = spawn()
    runtime.initialize()
    assert runtime.error_message("turn/start", {"input": []}) == "Invalid request: missing field `threadId`"
    assert runtime.error_message("turn/start", {"threadId": 5, "input": []}) == (
        "Invalid request: invalid type: integer `5`, expected a string"
    )
    assert runtime.error_message("turn/start") == "Invalid request: missing field `params`"
    assert runtime.error_message("turn/interrupt", {"threadId": str(uuid.uuid4())}) == (
        "Invalid request: missing field `turnId`"
    )


@pytest.mark.timeout(30)
def test_unknown_and_malformed_thread_ids(spawn: Spawn) -> None:
    runtime = spawn()
    runtime.initialize()
    unknown = str(uuid.uuid4())
    answer = runtime.call("turn/start", {"threadId": unknown, "input": [{"type": "text", "text": "x"}]})
    assert isinstance(answer, ErrorResponse)
    assert answer.error.message == f"thread not found: {unknown}"
    assert classify_error(answer.error) is ErrorKind.STALE_THREAD
    assert runtime.error_message("turn/start", {"threadId": "a/../b", "input": []}) == "invalid thread id: a/../b"
    answer = runtime.call("thread/resume", {"threadId": unknown})
    assert isinstance(answer, ErrorResponse)
    assert answer.error.message == f"no rollout found for thread id {unknown}"
    assert classify_error(answer.error) is ErrorKind.THREAD_GONE
    assert runtime.error_message("thread/resume", {"threadId": "../../etc/passwd"}) == (
        "invalid session id: ../../etc/passwd"
    )


# --- approvals -----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("reply", "item_status", "reply_text"),
    [
        ({"result": {"decision": "accept"}}, "completed", "Command finished: ls -la"),
        ({"result": {"decision": "acceptForSession"}}, "completed", "Command finished: ls -la"),
        ({"result": {"decision": "decline"}}, "declined", "Command declined: ls -la"),
        ({"error": {"code": -32000, "message": "host says no"}}, "failed", "Command failed: ls -la"),
        ({"result": {"decision": "maybe"}}, "failed", "Command failed: ls -la"),
    ],
)
def test_command_approval_outcomes(spawn: Spawn, reply: dict[str, Any], item_status: str, reply_text: str) -> None:
    runtime = spawn()
    runtime.initialize()
    thread_id = runtime.start_thread()
    turn_id = runtime.start_turn(thread_id, "please RUN: ls -la\nthanks")
    before, request = _wait_for_approval_request(runtime)
    assert _methods(before) == [
        "turn/started",
        "item/started",
        "item/completed",
        "item/started",
        "thread/status/changed",
        "item/commandExecution/requestApproval",
    ]
    command_item = _params(before[3])["item"]
    assert command_item["type"] == "commandExecution" and command_item["status"] == "inProgress"
    assert command_item["command"] == "ls -la" and command_item["id"].startswith("call_")
    assert _params(before[4])["status"] == {"type": "active", "activeFlags": ["waitingOnApproval"]}
    assert request.id == 0
    params = request.params
    assert (params["threadId"], params["turnId"], params["itemId"]) == (thread_id, turn_id, command_item["id"])
    assert (params["kind"], params["command"], params["reason"]) == (
        "command",
        "ls -la",
        "reference runtime wants to run a command",
    )
    assert params["availableDecisions"] == ["accept", "decline", "cancel"] and isinstance(params["startedAtMs"], int)
    runtime.send({"id": request.id, **reply})
    after = runtime.read_turn()
    assert _params(after[0]) == {"threadId": thread_id, "requestId": 0}
    assert _is_notification(after[0], "serverRequest/resolved")
    finished_command = _completed_items(after, "commandExecution")[0]
    assert finished_command["status"] == item_status
    if item_status == "completed":
        assert (finished_command["exitCode"], finished_command["aggregatedOutput"]) == (
            0,
            "(reference runtime) ran: ls -la\n",
        )
    assert "".join(_deltas(after)) == _completed_items(after, "agentMessage")[0]["text"] == reply_text
    assert _params(after[-1])["turn"]["status"] == "completed"


@pytest.mark.timeout(30)
def test_cancel_declines_and_interrupts_the_turn(spawn: Spawn) -> None:
    runtime = spawn()
    runtime.initialize()
    thread_id = runtime.start_thread()
    turn_id = runtime.start_turn(thread_id, "RUN: rm -rf /tmp/nothing")
    _, request = _wait_for_approval_request(runtime)
    runtime.send({"id": request.id, "result": {"decision": "cancel"}})
    after = runtime.read_turn()
    assert _methods(after) == ["serverRequest/resolved", "thread/status/changed", "item/completed", "turn/completed"]
    assert _completed_items(after, "commandExecution")[0]["status"] == "declined"
    assert _params(after[-1])["turn"] == {"id": turn_id, "status": "interrupted", "items": [], "error": None}


@pytest.mark.timeout(30)
def test_reply_with_string_id_is_ignored_until_interrupt_releases_the_turn(spawn: Spawn) -> None:
    runtime = spawn()
    runtime.initialize()
    thread_id = runtime.start_thread()
    turn_id = runtime.start_turn(thread_id, "RUN: make")
    _, request = _wait_for_approval_request(runtime)
    assert request.id == 0
    runtime.send({"id": "0", "result": {"decision": "accept"}})  # right id, wrong JSON type
    runtime.send({"id": 999, "result": {"decision": "accept"}})  # unknown id
    second_turn = {"threadId": thread_id, "input": [{"type": "text", "text": "more"}]}
    joined = runtime.result("turn/start", second_turn)  # as codex: the input joins the running turn
    assert joined["turn"]["id"] == turn_id
    added = runtime.read_until(lambda m: isinstance(m, Notification) and m.method == "item/completed")[-1]
    assert added.params["item"]["content"] == [{"type": "text", "text": "more"}]
    resumed = runtime.result("thread/resume", {"threadId": thread_id})
    assert resumed["thread"]["status"] == {"type": "active", "activeFlags": ["waitingOnApproval"]}
    assert [(t["id"], t["status"]) for t in resumed["thread"]["turns"]] == [(turn_id, "inProgress")]  # live, not dead
    assert runtime.error_message("turn/interrupt", {"threadId": thread_id, "turnId": "other"}) == (
        f"expected active turn id other but found {turn_id}"
    )
    interrupt_id = runtime.request("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})
    after = runtime.read_until(lambda m: _is_notification(m, "serverRequest/resolved"))
    assert isinstance(after[0], Response) and after[0].id == interrupt_id and after[0].result == {}
    assert _methods(after[1:]) == ["turn/completed", "serverRequest/resolved"]
    assert _params(after[1])["turn"]["status"] == "interrupted"
    assert _params(after[2]) == {"threadId": thread_id, "requestId": 0}
    runtime.send({"id": 0, "result": {"decision": "accept"}})  # late reply: ignored
    runtime.start_turn(thread_id, "RUN: second")
    _, second_request = _wait_for_approval_request(runtime)
    assert second_request.id == 1  # server request ids count up per process


# --- interrupt -----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_interrupt_stops_the_stream(spawn: Spawn) -> None:
    runtime = spawn(*_faults(delta_delay_s=0.5), "--deltas-per-reply", "10")
    runtime.initialize()
    thread_id = runtime.start_thread()
    assert runtime.error_message("turn/interrupt", {"threadId": thread_id, "turnId": "t"}) == (
        "no active turn to interrupt"
    )
    turn_id = runtime.start_turn(thread_id, "a long story")
    runtime.read_until(lambda m: _is_notification(m, "item/agentMessage/delta"))
    interrupt_id = runtime.request("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})
    seen = runtime.read_until(lambda m: isinstance(m, Response) and m.id == interrupt_id)
    assert all(_is_notification(m, "item/agentMessage/delta") for m in seen[:-1])
    completed = runtime.read()
    assert _is_notification(completed, "turn/completed")
    assert _params(completed)["turn"] == {"id": turn_id, "status": "interrupted", "items": [], "error": None}
    # Nothing more from that turn: the next line answers the next request.
    assert runtime.error_message("turn/interrupt", {"threadId": thread_id, "turnId": turn_id}) == (
        "no active turn to interrupt"
    )
    resumed = runtime.result("thread/resume", {"threadId": thread_id})
    assert [t["status"] for t in resumed["thread"]["turns"]] == ["interrupted"]


# --- restart and resume --------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_restart_on_the_same_state_dir_needs_resume(spawn: Spawn, tmp_path: Path) -> None:
    first = spawn()
    first.initialize()
    thread_id = first.start_thread()
    first.start_turn(thread_id, "remember me")
    first_turn = first.read_turn()
    assert first.close_stdin_and_wait() == 0

    second = spawn(state_dir=tmp_path / "state")
    second.initialize()
    answer = second.call("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "x"}]})
    assert isinstance(answer, ErrorResponse) and answer.error.message == f"thread not found: {thread_id}"
    resumed = second.result("thread/resume", {"threadId": thread_id})
    assert resumed["thread"]["id"] == thread_id and resumed["thread"]["status"] == {"type": "idle"}
    [turn] = resumed["thread"]["turns"]
    assert turn["status"] == "completed"
    assert [item["type"] for item in turn["items"]] == ["userMessage", "agentMessage"]
    assert turn["items"][0]["content"] == [{"type": "text", "text": "remember me"}]
    assert turn["items"][1] == _completed_items(first_turn, "agentMessage")[0]
    assert second.result("thread/resume", {"threadId": thread_id})["thread"]["turns"] == [turn]  # loaded: again
    second.start_turn(thread_id, "after restart")
    assert "".join(_deltas(second.read_turn())) == "Reference reply to: after restart"


@pytest.mark.timeout(30)
def test_a_thread_in_the_old_json_format_resumes_and_continues(spawn: Spawn, tmp_path: Path) -> None:
    thread_id = str(uuid.uuid4())
    threads = tmp_path / "state" / "threads"
    threads.mkdir(parents=True)
    old_turn = {"id": "t1", "status": "inProgress", "items": [{"type": "userMessage", "id": "u1", "content": []}]}
    record = {"id": thread_id, "cwd": "/old", "approvalPolicy": "never", "sandbox": {"type": "dangerFullAccess"}}
    (threads / f"{thread_id}.json").write_text(json.dumps({**record, "turns": [{**old_turn, "error": None}]}))
    runtime = spawn()
    runtime.initialize()
    resumed = runtime.result("thread/resume", {"threadId": thread_id})
    assert (resumed["cwd"], resumed["approvalPolicy"], resumed["sandbox"]) == ("/old", "never", record["sandbox"])
    assert [(t["id"], t["status"]) for t in resumed["thread"]["turns"]] == [("t1", "interrupted")]
    new_turn = runtime.start_turn(thread_id, "new")
    assert _params(runtime.read_turn()[-1])["turn"]["status"] == "completed"
    assert sorted(path.name for path in threads.iterdir()) == [f"{thread_id}.jsonl"]  # converted
    turns = runtime.result("thread/resume", {"threadId": thread_id})["thread"]["turns"]
    assert [(t["id"], t["status"]) for t in turns] == [("t1", "interrupted"), (new_turn, "completed")]


@pytest.mark.timeout(30)
def test_stdin_eof_exits_promptly_with_a_turn_waiting(spawn: Spawn) -> None:
    runtime = spawn()
    runtime.initialize()
    runtime.start_turn(runtime.start_thread(), "RUN: wait forever")
    _wait_for_approval_request(runtime)
    started = time.monotonic()
    assert runtime.close_stdin_and_wait() == 0
    assert time.monotonic() - started < 5.0
    assert runtime.read_line() is None


# --- malformed input -----------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_garbage_gets_no_answer_and_the_connection_keeps_working(spawn: Spawn) -> None:
    runtime = spawn()
    runtime.initialize()
    runtime.send_raw(b'this is not json\n\n[1,2,3]\n{"jsonrpc":"2.0","id":78}\n{"id":79,"result":{}}\n')
    runtime.send_raw(b'{"id":80,"error":{"code":1,"message":"stray"}}\n')
    answer = runtime.call("thread/start", {})  # the first line back answers this request
    assert isinstance(answer, Response)
    assert "Failed to deserialize JSONRPCMessage" in runtime.stderr()


# --- faults --------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_crash_after_deltas_kills_the_process_mid_turn(spawn: Spawn, tmp_path: Path) -> None:
    runtime = spawn(*_faults(crash_after_deltas=2), "--deltas-per-reply", "4")
    runtime.initialize()
    thread_id = runtime.start_thread()
    runtime.start_turn(thread_id, "crash please")
    lines = []
    while (line := runtime.read_line()) is not None:
        lines.append(decode_line(line))
    assert len(_deltas(lines)) == 2
    assert not any(_is_notification(m, "turn/completed") for m in lines)
    assert runtime.proc.wait(timeout=EXIT_TIMEOUT_S) == -9

    restarted = spawn(state_dir=tmp_path / "state")
    restarted.initialize()
    [turn] = restarted.result("thread/resume", {"threadId": thread_id})["thread"]["turns"]
    assert turn["status"] == "interrupted"
    assert [item["type"] for item in turn["items"]] == ["userMessage"]
    restarted.start_turn(thread_id, "next")
    assert _params(restarted.read_turn()[-1])["turn"]["status"] == "completed"


@pytest.mark.timeout(30)
def test_hang_on_initialize_never_answers(spawn: Spawn) -> None:
    runtime = spawn(*_faults(hang_on="initialize"))
    hung_id = runtime.request("initialize", CLIENT_INFO)
    # Requests are handled in order: the answer to this later request proves initialize was read and skipped.
    answer = runtime.call("thread/start", {})
    assert isinstance(answer, ErrorResponse) and answer.error.message == "Not initialized"
    assert answer.id != hung_id


@pytest.mark.timeout(30)
def test_garbage_before_turn_precedes_turn_started(spawn: Spawn) -> None:
    runtime = spawn(*_faults(garbage_before_turn=True))
    runtime.initialize()
    runtime.start_turn(runtime.start_thread(), "hi")
    garbage = runtime.read()
    assert isinstance(garbage, ProtocolError)
    assert _is_notification(runtime.read(), "turn/started")
    assert _params(runtime.read_turn()[-1])["turn"]["status"] == "completed"


@pytest.mark.timeout(30)
def test_crash_on_start_exits_3_from_the_environment_variable(spawn: Spawn) -> None:
    runtime = spawn(env_faults=encode_faults(RuntimeFaults(crash_on_start=True)))
    assert runtime.proc.wait(timeout=EXIT_TIMEOUT_S) == 3
    assert runtime.read_line() is None


@pytest.mark.timeout(30)
def test_bad_faults_exit_2_naming_the_problem(spawn: Spawn) -> None:
    runtime = spawn("--faults", '{"crash_after_deltas": 0}')
    assert runtime.proc.wait(timeout=EXIT_TIMEOUT_S) == 2
    assert "crash_after_deltas 0 is invalid" in runtime.stderr()


@pytest.mark.timeout(30)
def test_delta_delay_slows_the_stream(spawn: Spawn) -> None:
    delay_s = 0.2
    runtime = spawn(*_faults(delta_delay_s=delay_s), "--deltas-per-reply", "4")
    runtime.initialize()
    runtime.start_turn(runtime.start_thread(), "slowly")
    runtime.read_until(lambda m: _is_notification(m, "item/agentMessage/delta"))
    first_delta_at = time.monotonic()
    rest = runtime.read_until(lambda m: _is_notification(m, "turn/completed"))
    elapsed = time.monotonic() - first_delta_at
    assert len(_deltas(rest)) == 3
    assert elapsed >= 3 * delay_s * 0.9, f"3 gaps of {delay_s} s took only {elapsed:.3f} s"


@pytest.mark.timeout(30)
def test_stop_self_at_a_turn_start_fires_after_the_turn_start_answer_reached_the_client(spawn: Spawn) -> None:
    runtime = spawn(*_faults(stop_self=True))
    runtime.initialize()
    thread_id = runtime.start_thread()
    turn_id = runtime.start_turn(thread_id, "then stop")  # the answer was written before the SIGSTOP
    assert turn_id
    _, status = os.waitpid(runtime.proc.pid, os.WUNTRACED)  # then it stops (it is SIGKILLed at teardown)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP


@pytest.mark.timeout(30)
def test_crash_after_deltas_from_the_faults_file_fires_after_those_deltas_reached_the_client(
    spawn: Spawn, tmp_path: Path
) -> None:
    faults_file = tmp_path / "faults.json"
    runtime = spawn("--faults-file", str(faults_file), "--deltas-per-reply", "4")
    runtime.initialize()
    thread_id = runtime.start_thread()
    faults_file.write_text(encode_faults(RuntimeFaults(crash_after_deltas=2)))
    runtime.start_turn(thread_id, "crash please")
    lines = []
    while (line := runtime.read_line()) is not None:
        lines.append(decode_line(line))
    assert len(_deltas(lines)) == 2
    assert runtime.proc.wait(timeout=EXIT_TIMEOUT_S) == -9
