"""`agenthost app-server` on the built-in runtime, driven over stdio by a minimal app-server client (appserverkit):
every flow a real client uses, the failures codex cannot survive, and bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from appserverkit import AppServerClient

from agenthost.protocol import kill_process_group

pytestmark = pytest.mark.timeout(90)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def start(root: Path, *extra: str, env: dict[str, str] | None = None) -> AppServerClient:
    argv = [sys.executable, "-m", "agenthost", "app-server", "--root", str(root), *extra]
    return AppServerClient(argv, env=env, stderr_path=root.parent / "appserver.stderr")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AppServerClient]:
    client = start(tmp_path / "root")
    client.initialize()
    yield client
    client.close()


def new_thread(client: AppServerClient, **params: Any) -> str:
    answer = client.request("thread/start", params)
    thread_id: str = answer["result"]["thread"]["id"]
    client.wait(lambda m: m.get("method") == "thread/started" and m["params"]["thread"]["id"] == thread_id)
    return thread_id


def error_of(answer: dict[str, Any]) -> tuple[int, str]:
    assert "error" in answer, answer
    return answer["error"]["code"], answer["error"]["message"]


def test_handshake_as_codex_does(tmp_path: Path) -> None:
    client = start(tmp_path / "root")
    try:
        assert error_of(client.request("thread/start", {}, id="early")) == (-32600, "Not initialized")
        answer = client.initialize()["result"]
        assert answer["userAgent"].startswith("agenthost/") and answer["userAgent"].endswith("(appserverkit; 1.0)")
        assert answer["codexHome"] == str(tmp_path / "root") and answer["platformFamily"] == "unix"
        again = client.request("initialize", {"clientInfo": {"name": "x", "version": "1"}})
        assert error_of(again) == (-32600, "Already initialized")
        assert error_of(client.request("initialize", {}, id=7)) == (
            -32600,
            "Invalid request: missing field `clientInfo`",
        )
    finally:
        assert client.close() == 0


@pytest.mark.parametrize(
    "request_id", [0, 41, "1", str(uuid.uuid4()), f"CodexWebviewProvider.webview:{uuid.uuid4()}", "x" * 300]
)
def test_every_kind_of_request_id_is_echoed_exactly(server: AppServerClient, request_id: Any) -> None:
    answer = server.request("thread/start", {}, id=request_id)
    assert answer["id"] == request_id and type(answer["id"]) is type(request_id) and "result" in answer


def test_a_turn_streams_in_codexs_shapes_with_agenthost_ids(server: AppServerClient) -> None:
    answer = server.request("thread/start", {"cwd": "/tmp", "approvalPolicy": "never", "sandbox": "read-only"})
    result = answer["result"]
    thread_id = result["thread"]["id"]
    assert UUID_RE.match(thread_id) and result["cwd"] == "/tmp" and result["approvalPolicy"] == "never"
    assert result["sandbox"] == {"type": "readOnly", "networkAccess": False}
    assert result["thread"]["status"] == {"type": "idle"} and result["model"] == "reference"
    started = server.wait(lambda m: m.get("method") == "thread/started")
    assert started["params"]["thread"]["id"] == thread_id and server.raw_lines[-1] != server.raw_lines[-2]
    run = server.run_turn(thread_id, "hello there")
    assert UUID_RE.match(run.turn_id)
    assert run.methods[0] == "turn/started" and run.methods[-1] == "turn/completed"
    assert "item/agentMessage/delta" in run.methods and run.text == "Reference reply to: hello there"
    for message in run.messages:
        params = message["params"]
        assert params.get("threadId", thread_id) == thread_id
        assert params.get("turnId", params.get("turn", {}).get("id", run.turn_id)) == run.turn_id
    assert run.completed["status"] == "completed" and run.completed["error"] is None
    assert not any(b'"jsonrpc"' in line for line in server.raw_lines)


def test_threads_are_read_listed_renamed_and_resumed_from_agenthosts_records(server: AppServerClient) -> None:
    thread_id = new_thread(server, cwd="/srv")
    server.run_turn(thread_id, "first words")
    assert server.request("thread/name/set", {"threadId": thread_id, "name": "Renamed"})["result"] == {}
    renamed = server.wait(lambda m: m.get("method") == "thread/name/updated")
    assert renamed["params"] == {"threadId": thread_id, "threadName": "Renamed"}
    read = server.request("thread/read", {"threadId": thread_id, "includeTurns": True})["result"]["thread"]
    assert (read["name"], read["preview"], read["cwd"]) == ("Renamed", "first words", "/srv")
    [turn] = read["turns"]
    assert [item["type"] for item in turn["items"]] == ["userMessage", "agentMessage"]
    assert turn["items"][1]["text"] == "Reference reply to: first words" and turn["status"] == "completed"
    new_thread(server)  # no turn yet: not listed, as codex
    listed = server.request("thread/list", {"limit": 1})["result"]
    assert [t["id"] for t in listed["data"]] == [thread_id] and listed["nextCursor"] is None
    assert server.request("thread/list", {"searchTerm": "nothing like it"})["result"]["data"] == []
    resumed = server.request("thread/resume", {"threadId": thread_id, "approvalPolicy": "untrusted"})["result"]
    assert resumed["approvalPolicy"] == "untrusted" and len(resumed["thread"]["turns"]) == 1


def test_unknown_ids_get_codexs_errors(server: AppServerClient) -> None:
    unknown = str(uuid.uuid4())
    text = [{"type": "text", "text": "x"}]
    assert error_of(server.request("turn/start", {"threadId": unknown, "input": text})) == (
        -32600,
        f"thread not found: {unknown}",
    )
    assert error_of(server.request("thread/resume", {"threadId": unknown})) == (
        -32600,
        f"no rollout found for thread id {unknown}",
    )
    assert error_of(server.request("thread/read", {"threadId": unknown})) == (-32600, f"thread not loaded: {unknown}")
    assert error_of(server.request("thread/read", {"threadId": "../../etc/passwd"}))[0] == -32600


def test_approvals_round_trip_with_the_front_ends_own_ids(server: AppServerClient) -> None:
    thread_id = new_thread(server)
    accepted = server.run_turn(thread_id, "RUN: echo hi", approvals="accept")
    request = next(m for m in accepted.messages if m["method"] == "item/commandExecution/requestApproval")
    assert request["id"] == 0 and request["params"]["threadId"] == thread_id
    assert request["params"]["turnId"] == accepted.turn_id and request["params"]["command"] == "echo hi"
    resolved = accepted.first("serverRequest/resolved")["params"]
    assert resolved == {"threadId": thread_id, "requestId": 0}
    assert accepted.completed["status"] == "completed" and "Command finished: echo hi" in accepted.text
    declined = server.run_turn(thread_id, "RUN: rm -rf /", approvals="decline")
    assert next(m for m in declined.messages if "id" in m)["id"] == 1
    assert "Command declined: rm -rf /" in declined.text


def test_an_answer_with_the_wrong_id_type_is_ignored_and_interrupt_releases_the_turn(server: AppServerClient) -> None:
    thread_id = new_thread(server)
    turn_id = server.request("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "RUN: ls"}]})[
        "result"
    ]["turn"]["id"]
    request = server.wait(lambda m: m.get("method") == "item/commandExecution/requestApproval")
    server.send({"id": str(request["id"]), "result": {"decision": "accept"}})  # right value, wrong JSON type
    server.send({"id": 999, "result": {"decision": "accept"}})
    assert error_of(server.request("turn/interrupt", {"threadId": thread_id, "turnId": "other"})) == (
        -32600,
        f"expected active turn id other but found {turn_id}",
    )
    assert server.request("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})["result"] == {}
    run = server.follow_turn(turn_id, approvals=None)
    assert run.completed["status"] == "interrupted"
    assert error_of(server.request("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})) == (
        -32600,
        "no active turn to interrupt",
    )


def test_a_worker_killed_mid_turn_fails_the_turn_and_the_thread_goes_on(tmp_path: Path) -> None:
    slow = {"AGENTHOST_RUNTIME_FAULTS": json.dumps({"delta_delay_s": 0.5})}
    client = start(tmp_path / "root", "--workers", "2", env=_env(slow))
    try:
        client.initialize()
        thread_id = new_thread(client)
        assert client.run_turn(thread_id, "warm up").completed["status"] == "completed"
        turn_id = client.request(
            "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "a long answer"}]}
        )["result"]["turn"]["id"]
        client.wait(lambda m: m.get("method") == "item/agentMessage/delta")
        kill_process_group(_runtime_pid(tmp_path / "root", thread_id))
        run = client.follow_turn(turn_id)
        assert run.completed["status"] == "failed" and "killed by signal SIGKILL" in run.completed["error"]["message"]
        error = run.first("error")["params"]
        assert error["willRetry"] is False and "SIGKILL" in error["error"]["message"]
        after = client.run_turn(thread_id, "are you back?")
        assert after.completed["status"] == "completed" and after.text == "Reference reply to: are you back?"
        read = client.request("thread/read", {"threadId": thread_id, "includeTurns": True})["result"]["thread"]
        assert [t["status"] for t in read["turns"]] == ["completed", "failed", "completed"]
    finally:
        client.close()


def test_after_a_restart_the_thread_resumes_with_its_history(tmp_path: Path) -> None:
    first = start(tmp_path / "root")
    first.initialize()
    thread_id = new_thread(first, approvalPolicy="never")
    first.run_turn(thread_id, "remember me")
    assert first.close() == 0
    second = start(tmp_path / "root")
    try:
        second.initialize()
        resumed = second.request("thread/resume", {"threadId": thread_id})["result"]
        assert resumed["approvalPolicy"] == "never"
        assert resumed["thread"]["turns"][0]["items"][0]["content"][0]["text"] == "remember me"
        assert second.run_turn(thread_id, "and now?").completed["status"] == "completed"
    finally:
        second.close()


def test_options_the_runtime_refuses_are_dropped_once_with_a_warning(server: AppServerClient) -> None:
    thread_id = new_thread(server)
    run = server.run_turn(thread_id, "use a model", model="gpt-nope", effort="high")
    warning = run.first("warning")["params"]
    assert warning["threadId"] == thread_id and "effort, model" in warning["message"]
    assert "model not found: gpt-nope" in warning["message"]
    assert run.completed["status"] == "completed"
    later = server.run_turn(thread_id, "plain")
    assert "warning" not in later.methods  # they are no longer kept with the thread


def test_turn_start_on_a_running_turn_joins_it_as_codex_does(tmp_path: Path) -> None:
    slow = {"AGENTHOST_RUNTIME_FAULTS": json.dumps({"delta_delay_s": 0.3})}
    client = start(tmp_path / "root", env=_env(slow))
    try:
        client.initialize()
        thread_id = new_thread(client)
        first = client.request("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "one"}]})
        turn_id = first["result"]["turn"]["id"]
        client.wait(lambda m: m.get("method") == "item/agentMessage/delta")
        joined = client.request("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "two"}]})
        assert joined["result"]["turn"]["id"] == turn_id
        steered = client.request(
            "turn/steer",
            {"threadId": thread_id, "expectedTurnId": turn_id, "input": [{"type": "text", "text": "three"}]},
        )
        assert steered["result"] == {"turnId": turn_id}
        run = client.follow_turn(turn_id)
        added = [
            m["params"]["item"]["content"][0]["text"]
            for m in run.messages
            if m["method"] == "item/completed" and m["params"]["item"]["type"] == "userMessage"
        ]
        assert added[-2:] == ["two", "three"]
        wrong = client.request(
            "turn/steer", {"threadId": thread_id, "expectedTurnId": turn_id, "input": [{"type": "text", "text": "x"}]}
        )
        assert error_of(wrong) == (-32600, "no active turn to steer")
    finally:
        client.close()


def test_requests_that_belong_to_no_turn_go_to_the_runtime(server: AppServerClient) -> None:
    assert [m["id"] for m in server.request("model/list", {})["result"]["data"]] == ["reference"]
    assert server.request("account/read", {"refreshToken": False})["result"]["requiresOpenaiAuth"] is False
    assert server.request("skills/list", {"cwds": ["/w"]})["result"]["data"][0]["cwd"] == "/w"
    refused = error_of(server.request("thread/fork", {"threadId": str(uuid.uuid4())}))
    assert refused[0] == -32600 and refused[1].startswith("agenthost app-server does not support thread/fork: ")


def test_opted_out_notifications_are_not_sent(tmp_path: Path) -> None:
    client = start(tmp_path / "root")
    try:
        params = {
            "clientInfo": {"name": "quiet", "version": "1"},
            "capabilities": {"optOutNotificationMethods": ["item/agentMessage/delta", "thread/started"]},
        }
        assert "result" in client.request("initialize", params)
        thread_id = client.request("thread/start", {})["result"]["thread"]["id"]
        run = client.run_turn(thread_id, "quiet please")
        assert "item/agentMessage/delta" not in run.methods and run.completed["status"] == "completed"
        assert not [m for m in client.kept if m.get("method") == "thread/started"]
    finally:
        client.close()


def test_bad_lines_get_no_answer_and_bad_requests_get_codexs_errors(server: AppServerClient) -> None:
    server.send_line(b"\x00\xff garbage\n{not json}\n[1,2,3]\n\n")
    server.send_line(b'{"id": 5, "method": "turn/start", "params": {"input": []}}\n')
    assert server.wait(lambda m: m.get("id") == 5)["error"] == {
        "code": -32600,
        "message": "Invalid request: missing field `threadId`",
    }
    assert error_of(server.request("turn/start"))[1] == "Invalid request: missing field `params`"
    assert error_of(server.request("no/such/method", {}))[1].startswith(
        "Invalid request: unknown variant `no/such/method`"
    )
    assert error_of(server.request("thread/start", {"approvalPolicy": "on-failure"}))[1].startswith(
        "Invalid request: unknown variant `on-failure`"
    )
    server.send_line(b'{"id": 6, "method": "thread/start", "params": {"x": "' + b"a" * (17 * 1024 * 1024) + b'"}}\n')
    assert "result" in server.request("thread/start", {}, id="still-here")  # the huge line was dropped, no answer
    assert not [m for m in server.kept if m.get("id") == 6]


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def _runtime_pid(root: Path, thread_id: str) -> int:
    """The pid of the runtime worker the thread is pinned to (the database says which worker)."""

    conn = apsw.Connection(str(root / "system" / "agenthost.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        (worker_id,) = conn.execute(
            "SELECT worker_id FROM runtime_thread_mappings WHERE thread_id = ?", (thread_id,)
        ).fetchone()
    finally:
        conn.close()
    faults_file = str(root / "system" / "faults" / f"worker-{worker_id}.json").encode()
    pids = []
    for proc in Path("/proc").iterdir():  # every built-in runtime gets its worker's faults file on its command line
        try:
            if proc.name.isdigit() and faults_file in (proc / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    assert len(pids) == 1, (worker_id, pids)
    return pids[0]


def test_an_approval_reset_by_agenthost_is_resolved_and_explained(tmp_path: Path) -> None:
    client = start(tmp_path / "root", "--workers", "2")
    try:
        client.initialize()
        thread_id = new_thread(client)
        turn_id = client.request(
            "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "RUN: make deploy"}]}
        )["result"]["turn"]["id"]
        request = client.wait(lambda m: m.get("method") == "item/commandExecution/requestApproval")
        kill_process_group(_runtime_pid(tmp_path / "root", thread_id))  # its worker dies while the client decides
        run = client.follow_turn(turn_id, approvals=None)
        assert run.first("serverRequest/resolved")["params"] == {"threadId": thread_id, "requestId": request["id"]}
        warning = run.first("warning")["params"]["message"]
        assert warning.startswith("agenthost: ") and "reset" in warning
        assert run.completed["status"] == "failed"
        client.answer(request, "accept")  # too late: ignored, nothing runs
        assert client.run_turn(thread_id, "next").completed["status"] == "completed"
    finally:
        client.close()


def test_clients_connected_to_one_service_share_its_pool_and_its_threads(service, tmp_path: Path) -> None:
    svc = service()
    argv = [sys.executable, "-m", "agenthost", "app-server", "--connect", str(svc.root)]
    clients = [AppServerClient(argv, stderr_path=tmp_path / f"client{i}.stderr") for i in range(2)]
    try:
        for client in clients:
            client.initialize()
        threads = [new_thread(client, cwd=f"/work/{i}") for i, client in enumerate(clients)]
        runs = [
            client.run_turn(thread, f"hello {i}")
            for i, (client, thread) in enumerate(zip(clients, threads, strict=True))
        ]
        assert [run.text for run in runs] == ["Reference reply to: hello 0", "Reference reply to: hello 1"]
        shared = clients[1].request("thread/resume", {"threadId": threads[0]})["result"]
        assert (
            shared["cwd"] == "/work/0" and shared["thread"]["turns"][0]["items"][0]["content"][0]["text"] == "hello 0"
        )
        assert clients[1].run_turn(threads[0], "from the other client").completed["status"] == "completed"
        approval = clients[0].run_turn(threads[0], "RUN: echo shared", approvals="accept")
        assert "Command finished: echo shared" in approval.text
        assert clients[0].request("model/list", {})["result"]["data"][0]["id"] == "reference"
        with svc.client() as control:
            assert {t["thread_id"] for t in control.call("threads.list")} == set(threads)
    finally:
        for client in clients:
            client.close()


def test_connect_without_a_service_is_refused_clearly(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "agenthost", "app-server", "--connect", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2 and "no agenthost service runs on" in run.stderr and run.stdout == ""
