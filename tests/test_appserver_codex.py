"""`agenthost app-server --runtime codex` against real codex 0.169.0 and the project's mock model, with the same
client driving plain `codex app-server` beside it: the two behave alike where they should, and agenthost goes on
where codex cannot (a worker killed mid-turn, a restart)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from appserverkit import AppServerClient, TurnRun
from test_codex_real import CODEX_BIN

from agenthost.protocol import kill_process_group
from agenthost.protocol.mock_model import MockModelServer

pytestmark = pytest.mark.timeout(120)
# process-wide noise both servers may send at any time; not part of a turn's shape
NOISE = {
    "configWarning",
    "remoteControl/status/changed",
    "warning",
    "account/rateLimits/updated",
    "mcpServer/startupStatus/updated",
}


@pytest.fixture
def model() -> Iterator[MockModelServer]:
    with MockModelServer(delta_delay_s=0.02, slow_delay_s=0.3) as server:
        yield server


def _codex_flags(model: MockModelServer) -> list[str]:
    return [item for override in model.codex_overrides() for item in ("-c", override)]


@pytest.fixture
def both(model: MockModelServer, tmp_path: Path) -> Iterator[dict[str, AppServerClient]]:
    """ "agenthost": agenthost app-server on codex; "codex": codex app-server itself; both initialized."""
    home = tmp_path / "codex-home"
    home.mkdir()
    clients = {
        "agenthost": AppServerClient(
            [
                sys.executable,
                "-m",
                "agenthost",
                "app-server",
                "--root",
                str(tmp_path / "root"),
                "--runtime",
                "codex",
                "--codex-bin",
                str(CODEX_BIN),
                *_codex_flags(model),
            ],
            stderr_path=tmp_path / "agenthost.stderr",
        ),
        "codex": AppServerClient(
            [str(CODEX_BIN), "app-server", *_codex_flags(model)],
            env={**os.environ, "CODEX_HOME": str(home)},
            stderr_path=tmp_path / "codex.stderr",
        ),
    }
    for client in clients.values():
        client.initialize()
    yield clients
    for client in clients.values():
        client.close()


def _thread(client: AppServerClient, **params: Any) -> str:
    thread_id: str = client.request("thread/start", {"cwd": os.getcwd(), **params})["result"]["thread"]["id"]
    return thread_id


def _shape(run: TurnRun) -> list[str]:
    """The turn's methods without process-wide noise, runs of deltas folded into one."""
    shape: list[str] = []
    for method in run.methods:
        if method in NOISE or method == "thread/tokenUsage/updated":
            continue
        if method == "item/agentMessage/delta" and shape and shape[-1] == method:
            continue
        shape.append(method)
    return shape


def test_a_plain_turn_looks_the_same_through_agenthost(both: dict[str, AppServerClient]) -> None:
    runs = {name: client.run_turn(_thread(client), "hello both") for name, client in both.items()}
    assert runs["agenthost"].text == runs["codex"].text == "Mock reply to: hello both"
    assert _shape(runs["agenthost"]) == _shape(runs["codex"])
    completed = {name: run.completed for name, run in runs.items()}
    assert completed["agenthost"].keys() == completed["codex"].keys()
    assert completed["agenthost"]["status"] == completed["codex"]["status"] == "completed"
    assert [i["type"] for i in completed["agenthost"]["items"]] == [i["type"] for i in completed["codex"]["items"]]


def test_ids_of_every_json_type_and_codexs_errors_are_the_same(both: dict[str, AppServerClient]) -> None:
    unknown = "01a22731-5611-7673-addc-9de9f49a6140"
    for name, client in both.items():
        assert client.request("thread/start", {}, id="1")["id"] == "1", name
        assert client.request("thread/start", {}, id=0)["id"] == 0, name
        missing = client.request("turn/start", {"threadId": unknown, "input": [{"type": "text", "text": "x"}]})
        assert missing["error"] == {"code": -32600, "message": f"thread not found: {unknown}"}, name
        resumed = client.request("thread/resume", {"threadId": unknown})
        assert resumed["error"] == {"code": -32600, "message": f"no rollout found for thread id {unknown}"}, name
        bogus = client.request("foo/bar", {})["error"]
        assert bogus["code"] == -32600 and bogus["message"].startswith("Invalid request: unknown variant `foo/bar`")


def test_an_approval_is_forwarded_and_answered_the_same_way(both: dict[str, AppServerClient], tmp_path: Path) -> None:
    runs = {}
    for name, client in both.items():
        proof = tmp_path / f"{name}.txt"
        runs[name] = client.run_turn(_thread(client), f"RUN: echo ok | tee {proof}", approvals="accept")
        assert proof.read_text().strip() == "ok", name
    requests = {name: run.first("item/commandExecution/requestApproval") for name, run in runs.items()}
    assert requests["agenthost"]["id"] == requests["codex"]["id"] == 0
    assert requests["agenthost"]["params"].keys() == requests["codex"]["params"].keys()
    assert runs["agenthost"].text == runs["codex"].text == "Tool said: ok"
    for name, run in runs.items():
        assert run.first("serverRequest/resolved")["params"]["requestId"] == 0, name


def test_a_killed_runtime_ends_the_turn_and_the_thread_goes_on_with_its_history(
    both: dict[str, AppServerClient], model: MockModelServer, tmp_path: Path
) -> None:
    client = both["agenthost"]
    thread_id = _thread(client)
    assert client.run_turn(thread_id, "warm up words").completed["status"] == "completed"
    turn_id = client.request("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "SLOW please"}]})[
        "result"
    ]["turn"]["id"]
    client.wait(lambda m: m.get("method") == "item/agentMessage/delta")
    kill_process_group(_codex_worker_pid(tmp_path / "root", thread_id))
    run = client.follow_turn(turn_id)
    assert run.completed["status"] == "failed" and "SIGKILL" in run.completed["error"]["message"]
    after = client.run_turn(thread_id, "still there?")
    assert after.completed["status"] == "completed" and after.text == "Mock reply to: still there?"
    history = [part for body in model.requests[-1:] for part in _user_texts(body)]
    assert "warm up words" in history  # the runtime thread came back with the conversation


def test_after_a_restart_thread_resume_continues_the_conversation(
    both: dict[str, AppServerClient], model: MockModelServer, tmp_path: Path
) -> None:
    client = both["agenthost"]
    thread_id = _thread(client, approvalPolicy="never")
    client.run_turn(thread_id, "first life")
    assert client.close() == 0
    again = AppServerClient(
        [
            sys.executable,
            "-m",
            "agenthost",
            "app-server",
            "--root",
            str(tmp_path / "root"),
            "--runtime",
            "codex",
            "--codex-bin",
            str(CODEX_BIN),
            *_codex_flags(model),
        ],
        stderr_path=tmp_path / "again.stderr",
    )
    both["agenthost"] = again
    again.initialize()
    resumed = again.request("thread/resume", {"threadId": thread_id})["result"]
    assert resumed["approvalPolicy"] == "never" and resumed["thread"]["turns"][0]["status"] == "completed"
    assert again.run_turn(thread_id, "second life").completed["status"] == "completed"
    assert "first life" in _user_texts(model.requests[-1])


def _user_texts(body: dict[str, Any]) -> list[str]:
    return [
        "".join(part.get("text", "") for part in item.get("content", []))
        for item in body.get("input", [])
        if item.get("type") == "message" and item.get("role") == "user"
    ]


def _codex_worker_pid(root: Path, thread_id: str) -> int:
    """The pid of the codex worker the thread is pinned to (the database says which; its CODEX_HOME says who)."""
    conn = apsw.Connection(str(root / "system" / "agenthost.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        query = "SELECT worker_id FROM runtime_thread_mappings WHERE thread_id = ?"
        (worker_id,) = conn.execute(query, (thread_id,)).fetchone()
    finally:
        conn.close()
    home = b"CODEX_HOME=" + str(root / "system" / "codex-home" / f"worker-{worker_id}").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            worker = proc.name.isdigit() and b"app-server" in (proc / "cmdline").read_bytes().split(b"\0")
            if worker and home in (proc / "environ").read_bytes().split(b"\0"):  # not its shells and tools
                pids.append(int(proc.name))
        except OSError:
            continue
    assert len(pids) == 1, (worker_id, pids)
    return pids[0]


def test_the_clients_thread_settings_survive_a_failover(both: dict[str, AppServerClient], tmp_path: Path) -> None:
    client = both["agenthost"]
    thread_id = _thread(client, approvalPolicy="untrusted")
    asked = client.run_turn(thread_id, "RUN: echo first", approvals="decline")
    assert "item/commandExecution/requestApproval" in asked.methods  # untrusted: codex asks
    client.request("thread/resume", {"threadId": thread_id, "approvalPolicy": "never"})
    slow = client.request("turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": "SLOW one"}]})
    client.wait(lambda m: m.get("method") == "item/agentMessage/delta")
    kill_process_group(_codex_worker_pid(tmp_path / "root", thread_id))  # mid-turn
    assert client.follow_turn(slow["result"]["turn"]["id"]).completed["status"] == "failed"
    after = client.run_turn(thread_id, "RUN: echo second", approvals="accept")
    assert after.completed["status"] == "completed"
    assert "item/commandExecution/requestApproval" not in after.methods  # "never" reached the new worker's thread
