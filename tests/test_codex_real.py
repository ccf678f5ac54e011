"""agenthost hosting the real `codex app-server` 0.169.0, with the mock Responses-API model (protocol.mock_model).

The binary comes from env AGENTHOST_CODEX_BIN, else from `.ci/install-codex`'s cache folder
(${AGENTHOST_CODEX_CACHE:-~/.cache/agenthost}/codex-0.169.0); without it the whole module skips. Each test runs its
own mock model server and host (FakeClock: timers such as restart delays only move when the test advances them).
Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from codexkit import CODEX_VERSION, codex_binary
from conftest import wait_until, worker

from agenthost import AgentHost, HostConfig
from agenthost.actors import FakeClock
from agenthost.chaos import kill_process_group
from agenthost.protocol import ApprovalRequested, ApprovalReset, ApprovalResolved, Delta, TurnFinished
from agenthost.protocol.mock_model import MockModelServer
from agenthost.storage import StorageRoot, parse_checkpoints

WAIT_S = 30.0
CODEX_BIN = codex_binary()
if CODEX_BIN is None:
    pytest.skip(
        f"codex {CODEX_VERSION} not installed (npm registry unreachable?): run .ci/install-codex",
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(120)


# --- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture
def model() -> Iterator[MockModelServer]:
    with MockModelServer(delta_delay_s=0.05, slow_delay_s=0.25) as server:
        yield server


@pytest.fixture
def codex_config(model: MockModelServer, tmp_path: Path) -> Callable[..., HostConfig]:
    def config(*extra: str, **overrides: Any) -> HostConfig:
        settings: dict[str, Any] = {"workers": 1, "storage_root": str(tmp_path / "root")}
        settings.update(overrides)
        return HostConfig(
            runtime="codex", codex_bin=CODEX_BIN, codex_config=model.codex_overrides() + extra, **settings
        )

    return config


@pytest.fixture
def codex_host(codex_config: Callable[..., HostConfig], clock: FakeClock) -> Iterator[Callable[..., AgentHost]]:
    hosts: list[AgentHost] = []

    def make(*extra: str, **overrides: Any) -> AgentHost:
        host = AgentHost(codex_config(*extra, **overrides), clock=clock).start()
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.shutdown(drain_timeout_s=1.0)


# --- helpers -------------------------------------------------------------------------------------------------------
def _user_texts(body: dict[str, Any]) -> list[str]:
    """The texts of the user messages in one model request (codex's own context messages included)."""
    texts = []
    for item in body.get("input", []):
        if item.get("type") == "message" and item.get("role") == "user":
            texts.append("".join(part.get("text", "") for part in item.get("content", [])))
    return texts


def _tool_outputs(body: dict[str, Any]) -> list[str]:
    return [str(item.get("output")) for item in body.get("input", []) if item.get("type") == "function_call_output"]


def _worker_log(config: HostConfig, worker_id: int = 1) -> str:
    path = StorageRoot(config.storage_root).system_dir / "logs" / f"worker-{worker_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _codex_home(config: HostConfig, worker_id: int = 1) -> Path:
    return StorageRoot(config.storage_root).system_dir / "codex-home" / f"worker-{worker_id}"


# --- tests ---------------------------------------------------------------------------------------------------------
def test_streamed_turn_is_delivered_in_deltas_and_persisted(codex_host, model: MockModelServer) -> None:
    host = codex_host()
    thread_id = host.create_thread("streaming")
    handle = host.send(thread_id, "hello codex")
    events = list(handle.events(WAIT_S))

    finished = events[-1]
    assert isinstance(finished, TurnFinished)
    assert (finished.status, finished.text, finished.error) == ("completed", "Mock reply to: hello codex", None)
    deltas = [event for event in events if isinstance(event, Delta)]
    assert len(deltas) >= 2
    assert "".join(delta.text for delta in deltas) == "Mock reply to: hello codex"
    assert sum(delta.count for delta in deltas) == model.deltas
    turn = host.turns(thread_id)[-1]
    assert (turn.user_text, turn.status, turn.assistant_text) == ("hello codex", "completed", finished.text)
    transcript = host.transcript(thread_id)
    assert "hello codex" in transcript and "Mock reply to: hello codex" in transcript
    assert parse_checkpoints(transcript)[-1] == (handle.turn_id, "completed")
    assert _user_texts(model.requests[-1])[-1] == "hello codex"


def test_accepted_approval_runs_the_command_and_the_turn_completes(
    codex_host, model: MockModelServer, tmp_path: Path, seed: int
) -> None:
    host = codex_host()
    thread_id = host.create_thread("approve")
    marker = f"agenthost-marker-{seed}"
    proof = tmp_path / "ran.txt"
    handle = host.send(thread_id, f"please RUN: echo {marker} | tee {proof}")

    request = handle.wait_for(ApprovalRequested, WAIT_S)
    assert request.method == "item/commandExecution/requestApproval"
    assert marker in (request.command or "") and request.reason == "agenthost test"
    assert not proof.exists()  # nothing runs before the answer
    host.answer_approval(request.approval_id, "accept")
    assert handle.wait_for(ApprovalResolved, WAIT_S).approval_id == request.approval_id

    finished = handle.wait(WAIT_S)
    assert (finished.status, finished.text) == ("completed", f"Tool said: {marker}")
    assert proof.read_text().strip() == marker
    assert any(marker in output for output in _tool_outputs(model.requests[-1]))
    assert host.turns(thread_id)[-1].status == "completed"
    with pytest.raises(KeyError, match=request.approval_id):
        host.answer_approval(request.approval_id, "accept")


def test_declined_approval_skips_the_command_and_codex_continues(
    codex_host, model: MockModelServer, tmp_path: Path
) -> None:
    host = codex_host()
    thread_id = host.create_thread("decline")
    proof = tmp_path / "must-not-exist.txt"
    handle = host.send(thread_id, f"RUN: touch {proof}")
    host.answer_approval(handle.wait_for(ApprovalRequested, WAIT_S).approval_id, "decline")

    finished = handle.wait(WAIT_S)
    assert finished.status == "completed"
    assert finished.text.startswith("Tool said: exec_command failed") and "rejected by user" in finished.text
    assert not proof.exists()
    # the model was told the command was declined (codex marks the item "declined" and continues the turn)
    assert any("rejected by user" in output for output in _tool_outputs(model.requests[-1]))
    assert host.turns(thread_id)[-1].status == "completed"


def test_interrupt_during_a_slow_stream_persists_interrupted(codex_host, model: MockModelServer) -> None:
    host = codex_host()
    thread_id = host.create_thread("interrupt")
    handle = host.send(thread_id, "SLOW: take your time")
    handle.wait_for(Delta, WAIT_S)
    host.interrupt(handle.turn_id)

    finished = handle.wait(WAIT_S)
    assert finished.status == "interrupted"
    assert finished.text != "Mock reply to: SLOW: take your time"  # cut off mid-stream
    assert host.turns(thread_id)[-1].status == "interrupted"
    assert f"turn={handle.turn_id} phase=failed status=interrupted" in host.transcript(thread_id)
    # the thread is usable afterwards
    assert host.send(thread_id, "after the interrupt").wait(WAIT_S).status == "completed"


def test_worker_killed_mid_turn_fails_the_turn_and_the_thread_resumes_with_history(
    codex_host,
    model: MockModelServer,
    clock: FakeClock,
    events,
) -> None:
    host = codex_host()
    thread_id = host.create_thread("killed")
    assert host.send(thread_id, "warm up words").wait(WAIT_S).status == "completed"
    handle = host.send(thread_id, "SLOW: a long answer please")
    handle.wait_for(Delta, WAIT_S)
    victim = worker(host, 1)
    kill_process_group(victim.pid)

    finished = handle.wait(WAIT_S)
    assert finished.status == "failed" and "runtime worker 1 exited" in (finished.error or "")
    assert (host.turns(thread_id)[-1].status, host.turns(thread_id)[-1].error) == ("failed", finished.error)
    assert parse_checkpoints(host.transcript(thread_id))[-1] == (handle.turn_id, "failed")

    wait_until("restart scheduled", lambda: worker(host, 1).state == "restarting")
    clock.advance(1.0)
    up = wait_until("worker back", lambda: worker(host, 1).state == "ready" and worker(host, 1))
    assert up.generation == victim.generation + 1 and up.pid != victim.pid

    done = host.send(thread_id, "are you back?").wait(WAIT_S)
    assert (done.status, done.text) == ("completed", "Mock reply to: are you back?")
    assert events.of("turns.resuming")
    history = _user_texts(model.requests[-1])
    assert {"warm up words", "SLOW: a long answer please", "are you back?"} <= set(history)
    assert history.index("warm up words") < history.index("are you back?")


def test_restarted_host_resumes_the_codex_thread_and_recreates_it_when_rollouts_are_gone(
    codex_config,
    model: MockModelServer,
    events,
) -> None:
    config = codex_config()
    with AgentHost(config, clock=FakeClock()) as host:
        thread_id = host.create_thread("persistent")
        assert host.send(thread_id, "remember the number 41").wait(WAIT_S).status == "completed"

    # a new host process on the same storage root: same CODEX_HOME, so thread/resume finds the rollout
    with AgentHost(config, clock=FakeClock()) as host:
        done = host.send(thread_id, "what was the number?").wait(WAIT_S)
        assert (done.status, done.text) == ("completed", "Mock reply to: what was the number?")
        assert events.of("turns.resuming")
        assert "remember the number 41" in _user_texts(model.requests[-1])
        assert "runtime thread recreated" not in host.transcript(thread_id)

    # codex lost its copy of the thread: resume says "no rollout found", the host starts a new runtime thread
    shutil.rmtree(_codex_home(config) / "sessions")
    with AgentHost(config, clock=FakeClock()) as host:
        done = host.send(thread_id, "and now?").wait(WAIT_S)
        assert (done.status, done.text) == ("completed", "Mock reply to: and now?")
        transcript = host.transcript(thread_id)
        assert "runtime thread recreated" in transcript
        assert "remember the number 41" not in _user_texts(model.requests[-1])  # codex really started afresh
        assert [t.status for t in host.turns(thread_id)] == ["completed", "completed", "completed"]


def test_non_approval_server_request_gets_an_error_answer(codex_host, model: MockModelServer, codex_config) -> None:
    # request_user_input is offered outside Plan mode only with this (under development) feature
    extra = ("features.default_mode_request_user_input=true",)
    host = codex_host(*extra)
    thread_id = host.create_thread("ask")
    handle = host.send(thread_id, "ASK: which one?")
    events = list(handle.events(WAIT_S))

    assert not [event for event in events if isinstance(event, ApprovalRequested)]
    finished = events[-1]
    # the host's error answer resolves the request; codex gives the model empty answers and the turn goes on
    assert (finished.status, finished.text) == ("completed", 'Tool said: {"answers":{}}')
    assert any('"answers"' in output for output in _tool_outputs(model.requests[-1]))
    log = wait_until(
        "codex logs the error answer",
        lambda: (
            "request failed with client error" in _worker_log(codex_config(*extra))
            and _worker_log(codex_config(*extra))
        ),
    )
    assert "item/tool/requestUserInput: not supported by agenthost" in log


def test_cancelled_approval_ends_the_turn_interrupted_without_asking_the_model_again(
    codex_host,
    model: MockModelServer,
) -> None:
    host = codex_host()
    thread_id = host.create_thread("cancel")
    handle = host.send(thread_id, "RUN: echo never")
    host.answer_approval(handle.wait_for(ApprovalRequested, WAIT_S).approval_id, "cancel")
    finished = handle.wait(WAIT_S)
    assert (finished.status, finished.text) == ("interrupted", "")
    assert host.turns(thread_id)[-1].status == "interrupted"
    assert len(model.requests) == 1


def test_pending_approval_is_reset_when_codex_dies_and_the_thread_resumes(
    codex_host,
    model: MockModelServer,
    clock: FakeClock,
) -> None:
    host = codex_host()
    thread_id = host.create_thread("reset")
    handle = host.send(thread_id, "RUN: echo never")
    request = handle.wait_for(ApprovalRequested, WAIT_S)
    kill_process_group(worker(host, 1).pid)

    reset = handle.wait_for(ApprovalReset, WAIT_S)
    assert reset.approval_id == request.approval_id and "Nothing was executed" in reset.message
    assert handle.wait(WAIT_S).status == "failed"
    assert "approval reset" in host.transcript(thread_id)

    clock.advance(1.0)
    wait_until("worker back", lambda: worker(host, 1).state == "ready")
    done = host.send(thread_id, "again").wait(WAIT_S)
    assert (done.status, done.text) == ("completed", "Mock reply to: again")
    assert "RUN: echo never" in _user_texts(model.requests[-1])


# --- regressions found with the real binary: early interrupt, late completion of an earlier turn, failover --------
def test_interrupt_right_after_send_interrupts_the_turn(codex_host, model: MockModelServer) -> None:
    model.slow_delay_s = 0.05  # a host that lost the interrupt would wait for the whole reply: keep that at ~2 s
    host = codex_host()
    thread_id = host.create_thread("early interrupt")
    handle = host.send(thread_id, "SLOW: interrupt me early")
    host.interrupt(handle.turn_id)
    assert handle.wait(WAIT_S).status == "interrupted"


def test_turn_after_a_deadline_is_not_ended_by_the_old_turns_completion(codex_host, clock: FakeClock) -> None:
    host = codex_host(turn_timeout_s=5.0)
    thread_id = host.create_thread("deadline")
    first = host.send(thread_id, "SLOW: never finishes in time")
    second = host.send(thread_id, "next one")
    assert second.queued
    first.wait_for(Delta, WAIT_S)
    clock.advance(5.0)
    assert first.wait(WAIT_S).status == "failed"
    done = second.wait(WAIT_S)
    assert (done.status, done.text) == ("completed", "Mock reply to: next one")


def test_failover_to_another_worker_keeps_the_models_history(codex_host, model: MockModelServer) -> None:
    host = codex_host(workers=2)
    thread_id = host.create_thread("failover")
    assert host.send(thread_id, "warm up words").wait(WAIT_S).status == "completed"
    handle = host.send(thread_id, "SLOW: a long answer please")
    handle.wait_for(Delta, WAIT_S)
    victim = host.status().pins[thread_id]
    kill_process_group(worker(host, victim).pid)
    assert handle.wait(WAIT_S).status == "failed"
    wait_until("pins moved", lambda: host.status().pins[thread_id] == 3 - victim)

    done = host.send(thread_id, "are you back?").wait(WAIT_S)
    assert done.status == "completed"
    assert "warm up words" in _user_texts(model.requests[-1])


def test_a_model_it_cannot_reach_fails_the_turn_with_codexs_own_cause(tmp_path: Path) -> None:
    with MockModelServer() as gone:
        overrides = gone.codex_overrides()  # then the server stops: nothing listens on its port any more
    settings = [item for override in overrides for item in ("-c", override)]
    root = tmp_path / "root"
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "agenthost",
            "send",
            "--root",
            str(root),
            "--runtime",
            "codex",
            "--codex-bin",
            str(CODEX_BIN),
            *settings,
            "--timeout",
            "10",
            "--new-thread",
            "offline",
            "hello?",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "RUST_LOG"},
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert time.monotonic() - started < 60  # the turn's deadline, not codex's endless reconnects
    error = re.search(r"\[turn \S+ failed: (.*)\]", run.stderr).group(1)
    assert "turn deadline of 10 s exceeded; the runtime kept retrying: Reconnecting... waiting for network" in error
    assert "its last error:" in error and "error=Connection failed" in error  # codex's stderr, ANSI stripped
    assert "\x1b[" not in error
