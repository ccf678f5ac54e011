"""The `agenthost` command line, run as a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def _agenthost(*args: str, timeout_s: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agenthost", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_demo_exits_zero_and_shows_the_recovery(tmp_path) -> None:
    run = _agenthost("demo", "--root", str(tmp_path / "demo"))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "killed turn ended as failed" in out
    assert "no thread pinned to worker" in out
    assert "next turn on the same thread completed" in out
    assert re.search(r"worker \d restarted once, generation 2", out)
    events = [json.loads(line) for line in run.stderr.splitlines()]  # not a terminal: JSON lines by default
    restart = [e for e in events if e["event"] == "supervisor.decision" and e["decision"] == "restart"]
    assert restart and restart[0]["supervisor"] == "pool" and restart[0]["delay_s"] == 1.0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", restart[0]["timestamp"])  # ISO 8601, with the date
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


def test_version_and_help_name_every_option_with_its_default() -> None:
    version = _agenthost("--version")
    assert version.returncode == 0 and re.fullmatch(r"agenthost \d+\.\d+\.\d+\n", version.stdout)
    send_help = " ".join(_agenthost("send", "--help").stdout.split())  # help text re-wrapped onto one line
    for option in (
        "--root",
        "--thread",
        "--new-thread",
        "--workers",
        "--runtime",
        "--codex-bin",
        "-c",
        "--approval",
        "--timeout",
    ):
        assert option in send_help
    assert "(default: 120.0)" in send_help and "(default: decline)" in send_help
    top = " ".join(_agenthost("--help").stdout.split())
    assert "--log-format" in top and "(default: warning; info for serve)" in top
    assert "chaos" in top  # a command from the entry point group


@pytest.mark.parametrize(("option", "value"), [("--log-level", "loud"), ("--log-format", "xml")])
def test_bad_log_options_exit_2_naming_the_value(option: str, value: str) -> None:
    bad = _agenthost(option, value, "status", "--root", "/nonexistent")
    assert bad.returncode == 2
    assert f"invalid choice: '{value}'" in bad.stderr and "Traceback" not in bad.stderr
