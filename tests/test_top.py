"""`agenthost top` in a real pseudo-terminal (a tmux pane on a tmux server of this test's own), against a real
`agenthost serve` subprocess: a killed worker shows restarting with its countdown, then ready as generation 2."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servicekit import ServiceProcess

pytestmark = pytest.mark.timeout(120)

SLOW_RESTART = "[host.worker_policy.backoff]\ninitial_s = 3.0\n"


class Pane:
    """One tmux session on a private server socket (`tmux -L`), killed at the end."""

    def __init__(self, command: str, folder: Path) -> None:
        self.server = f"agenthost-test-{os.getpid()}-{time.monotonic_ns()}"
        self.rc_path = folder / "top.rc"
        # the pane's own size, not COLUMNS/LINES inherited from the test run (rich honours those); the shell
        # survives the Ctrl-C it shares with `top`, to write its exit code
        wrapped = f"unset COLUMNS LINES; trap : INT; {command}; echo $? > {shlex.quote(str(self.rc_path))}"
        self._tmux("new-session", "-d", "-s", "top", "-x", "150", "-y", "45", "sh", "-c", wrapped)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, text=True, check=True)
        return done.stdout

    def screen(self) -> str:
        """What the pane shows ("" once its command has ended and the session is gone)."""
        command = ["tmux", "-L", self.server, "capture-pane", "-p", "-t", "top"]
        done = subprocess.run(command, capture_output=True, check=False)
        return done.stdout.decode(errors="replace")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Callable[[str], Pane]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    opened: list[Pane] = []

    def open_pane(command: str) -> Pane:
        opened.append(Pane(command, tmp_path))
        return opened[-1]

    yield open_pane
    for each in opened:
        each.close()


def worker_rows(screen: str) -> dict[str, list[str]]:
    """The workers table's rows as rich draws them: `│ 1 │ ready │ 1234 │ 1 │ 0 │ - │ - │`, by worker id."""
    rows = {}
    for line in screen.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 7 and cells[0].isdigit():
            rows[cells[0]] = cells
    return rows


def wait_screen(pane: Pane, check: Callable[[str], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = pane.screen()
        value = check(screen)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"top never showed {what} within {timeout_s} s; the screen:\n{screen}")


def test_top_shows_a_worker_restart_live_and_quits_on_ctrl_c(service, pane) -> None:
    svc: ServiceProcess = service(SLOW_RESTART)
    top = pane(f"{shlex.quote(sys.executable)} -m agenthost top --root {shlex.quote(str(svc.root))}")
    before = wait_screen(top, lambda s: (rows := worker_rows(s)).get("1", [""] * 2)[1] == "ready" and rows, "ready")
    assert before["1"][3] == "1" and before["2"][1] == "ready"
    os.kill(int(before["1"][2]), signal.SIGKILL)
    restarting = wait_screen(top, lambda s: (row := worker_rows(s).get("1")) and row[1] == "restarting" and row, "it")
    assert restarting[5].startswith("restart in ") and "killed by signal" in restarting[6]
    countdowns = {restarting[5]}
    ready = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and ready is None:  # every frame until it is back, reading the countdown
        row = worker_rows(top.screen()).get("1")
        if row and row[1] == "restarting" and row[5].startswith("restart in "):
            countdowns.add(row[5])
        elif row and row[1] == "ready":
            ready = row
        time.sleep(0.05)
    assert ready is not None and ready[3] == "2" and ready[2] != before["1"][2]
    assert len(countdowns) >= 3, countdowns  # the countdown moved on screen (3 s, redrawn at least every second)
    screen = top.screen()
    assert "supervisor decisions" in screen and "pool → worker-1" in screen and "restart" in screen
    top.keys("C-c")
    rc = wait_screen(top, lambda _: top.rc_path.exists() and top.rc_path.read_text().strip(), "its exit")
    assert rc == "0"


def test_top_once_prints_one_frame_and_without_a_service_exits_1(service, tmp_path: Path) -> None:
    svc: ServiceProcess = service()
    done = subprocess.run(
        [sys.executable, "-m", "agenthost", "top", "--root", str(svc.root), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stderr
    assert set(worker_rows(done.stdout)) == {"1", "2"} and "turns/s" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "agenthost", "top", "--root", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1 and "no service runs" in missing.stderr
