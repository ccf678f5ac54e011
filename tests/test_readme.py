"""The README's embedding example runs as written, and an embedded host prints nothing unless logging is set up."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).resolve().parent.parent / "README.md"


def _embedding_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Embedding API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "README's Embedding API section has no python block"
    return match.group(1)


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=100, check=False
    )


def test_the_embedding_example_runs_as_written_and_prints_only_what_it_prints(tmp_path: Path) -> None:
    run = _python(_embedding_example(), tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # the library itself printed nothing
    lines = run.stdout.splitlines()
    assert lines[0] == "Reference reply to: Summarise the changes"
    assert lines[1] == "completed"
    assert lines[2] in ("interrupted", "completed")
    assert lines[3].startswith("HostStatus(state='running'")
    assert "## Turn 2" in run.stdout and "Now the long version" in run.stdout


QUIET = textwrap.dedent(
    """
    import tempfile, time
    from agenthost import AgentHost, ApprovalRequested, HostConfig, RuntimeFaults
    crash = RuntimeFaults(crash_after_deltas=2)
    config = HostConfig(storage_root=tempfile.mkdtemp(), workers=1, worker_faults={1: crash})
    with AgentHost(config) as host:           # a crash: warnings and supervisor decisions are emitted
        thread_id = host.create_thread("quiet")
        assert host.send(thread_id, "hello").wait(30).status == "failed"
        host.set_worker_faults(1, None)
        deadline = time.monotonic() + 30
        while not any(w.state == "ready" and w.restarts for w in host.status().workers):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        turn = host.send(thread_id, "RUN: true")
        host.answer_approval(turn.wait_for(ApprovalRequested, 30).approval_id, "accept")
        assert turn.wait(30).status == "completed"
    """
)


def test_an_embedded_host_writes_nothing_unless_the_application_configures_logging(tmp_path: Path) -> None:
    quiet = _python(QUIET, tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert (quiet.stdout, quiet.stderr) == ("", "")
    configured = _python(
        "import structlog, sys\nstructlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))\n" + QUIET,
        tmp_path,
    )
    assert configured.returncode == 0, configured.stderr
    assert "supervisor.decision" in configured.stderr and "[agenthost.pool]" in configured.stderr
