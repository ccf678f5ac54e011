"""The `agenthost` command line, run as a real subprocess."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def _agenthost(*args: str, timeout_s: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors._cli", *args], capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def test_demo_exits_zero_and_shows_the_recovery(tmp_path) -> None:
    run = _agenthost("demo", "--root", str(tmp_path / "demo"))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "killed turn ended as failed" in out
    assert "no thread pinned to worker" in out
    assert "next turn on the same thread completed" in out
    assert re.search(r"worker \d restarted once, generation 2", out)
    assert "decision=restart" in run.stderr and "supervisor=pool" in run.stderr
    assert out.count("<!-- checkpoint") >= 6
    assert "demo finished: every check held" in out


def test_send_status_and_transcript(tmp_path) -> None:
    root = str(tmp_path / "root")
    sent = _agenthost("send", "--root", root, "--new-thread", "cli", "hello cli")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "Reference reply to: hello cli"
    thread_id = re.search(r"thread (\S+)", sent.stderr).group(1)

    declined = _agenthost("send", "--root", root, "--thread", thread_id, "RUN: touch x")
    assert declined.returncode == 0 and "Command declined: touch x" in declined.stdout

    status = _agenthost("status", "--root", root)
    assert status.returncode == 0
    row = next(line for line in status.stdout.splitlines() if line.startswith(thread_id))
    assert row.split()[:5] == [thread_id, "default", "cli", "2", "2"]

    transcript = _agenthost("transcript", "--root", root, thread_id)
    assert transcript.returncode == 0
    assert "hello cli" in transcript.stdout and "Command declined: touch x" in transcript.stdout


def test_bad_ids_are_usage_errors_naming_the_value(tmp_path) -> None:
    root = str(tmp_path / "root")
    assert _agenthost("send", "--root", root, "--new-thread", "x", "hi").returncode == 0
    bad = _agenthost("transcript", "--root", root, "../../etc/passwd")
    assert bad.returncode == 2 and "../../etc/passwd" in bad.stderr
    unknown = _agenthost("transcript", "--root", root, "nope")
    assert unknown.returncode == 2 and "'nope'" in unknown.stderr
    missing = _agenthost("status", "--root", str(tmp_path / "empty"))
    assert missing.returncode == 1 and "no database" in missing.stderr
