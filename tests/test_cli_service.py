"""The CLI as a client of a running service (both real subprocesses), and the CLI's answer to bad input: exit 2 and
one line naming the value, never a traceback, nothing created."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servicekit import ServiceProcess, turn_events

from agenthost.protocol import FAULTS_ENV_VAR, RuntimeFaults, encode_faults

pytestmark = pytest.mark.timeout(120)

SLOW = '[host.worker_faults."1"]\ndelta_delay_s = 0.3\n[host.worker_faults."2"]\ndelta_delay_s = 0.3\n'


def agenthost(*args: str, stdin: str | None = None, timeout_s: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agenthost", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_cli_commands_go_through_the_service_and_say_so(service, tmp_path: Path) -> None:
    svc: ServiceProcess = service()
    root = str(svc.root)
    via = f"via the service (pid {svc.process.pid})"
    sent = agenthost("send", "--root", root, "--new-thread", "via", "-", stdin="from stdin")
    assert sent.returncode == 0, sent.stderr
    assert via in sent.stderr and sent.stdout.strip() == "Reference reply to: from stdin"
    thread_id = re.search(r"thread (\S+) turn", sent.stderr).group(1)
    message = tmp_path / "message.txt"
    message.write_text("from a file")
    as_json = agenthost("send", "--root", root, "--thread", thread_id, "--file", str(message), "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert (result["thread_id"], result["status"]) == (thread_id, "completed")
    assert result["text"] == "Reference reply to: from a file"

    status = agenthost("status", "--root", root)
    assert status.returncode == 0 and via in status.stderr
    assert status.stdout.startswith("host: running") and "follow-up queues:" in status.stdout
    live = json.loads(agenthost("status", "--root", root, "--json").stdout)
    assert [w["state"] for w in live["workers"]] == ["ready", "ready"] and live["service"]["pid"] == svc.process.pid

    transcript = agenthost("transcript", "--root", root, thread_id)
    assert transcript.returncode == 0 and via in transcript.stderr
    assert "from stdin" in transcript.stdout and "Reference reply to: from a file" in transcript.stdout
    followups = agenthost("followups", "--root", root, "list", thread_id)
    assert followups.returncode == 0 and json.loads(followups.stdout) == []
    approvals = agenthost("approvals", "--root", root)
    assert approvals.returncode == 0 and json.loads(approvals.stdout) == []


def test_doctor_against_a_service_sees_no_problem_in_a_turn_in_flight(service) -> None:
    svc: ServiceProcess = service(SLOW)
    with svc.client() as client:
        thread_id = client.call("threads.create", {"title": "in flight"})["thread_id"]
        turn_id = client.call("turns.send", {"thread_id": thread_id, "text": "RUN: echo held-open"})["turn_id"]
        events = turn_events(client, turn_id)
        request = next(e["event"] for e in events if e["event"]["type"] == "ApprovalRequested")  # open until answered
        doctor = agenthost("doctor", "--root", str(svc.root))
        in_flight = [t["turn_id"] for t in client.call("status")["active_turns"]]
        client.call("approvals.answer", {"approval_id": request["approval_id"], "decision": "accept"})
        assert list(events)[-1]["event"]["status"] == "completed"
    assert turn_id in in_flight  # doctor ran while the turn was open
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "[problem]" not in doctor.stdout and "[ok] permissions" in doctor.stdout


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """A test run started as a shell's background job has SIGINT ignored, and children inherit that (Python then
    installs no Ctrl-C handler in them). Handled here, the children start with the default, as in a terminal."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _send_in_background(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """`agenthost send` as a subprocess, returned once the host has accepted the turn (with the turn id)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agenthost", "send", "--root", str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"thread \S+ turn (\S+)", line)
        if found:
            return process, found.group(1)
    raise AssertionError(f"send never said which turn it started (exit {process.wait()})")


def _rest_of_stderr(process: subprocess.Popen[str]) -> str:
    """Wait for the exit, then what is left of stderr (through its reader: lines it already buffered count)."""
    process.wait(60)
    assert process.stderr is not None and process.stdout is not None
    process.stdout.read()
    return process.stderr.read()


def test_ctrl_c_once_interrupts_the_turn_and_prints_how_it_ended(service) -> None:
    svc: ServiceProcess = service(SLOW)
    process, turn_id = _send_in_background(svc.root, "--new-thread", "ctrl-c", "a b c d e f g h i j k l")
    process.send_signal(signal.SIGINT)
    err = _rest_of_stderr(process)
    assert process.returncode == 1, err
    assert "interrupting the turn (Ctrl-C again to detach)" in err
    assert f"[turn {turn_id} interrupted" in err and "Traceback" not in err


def test_ctrl_c_twice_detaches_and_the_turn_goes_on_in_the_service(service) -> None:
    deaf = "".join(f'[host.worker_faults."{w}"]\ndelta_delay_s = 3.0\nhang_on = "turn/interrupt"\n' for w in (1, 2))
    svc: ServiceProcess = service(deaf)  # the runtime never answers the interrupt: the turn keeps streaming
    process, turn_id = _send_in_background(svc.root, "--new-thread", "detach", "a b c d e f g h i j k l m n o p")
    assert process.stderr is not None
    process.send_signal(signal.SIGINT)
    for line in process.stderr:
        if "interrupting the turn" in line:
            break
    process.send_signal(signal.SIGINT)
    err = _rest_of_stderr(process)
    assert process.returncode == 130, err
    assert f"detached; turn {turn_id} goes on in the service" in err and "Traceback" not in err
    with svc.client() as client:
        assert turn_id in [t["turn_id"] for t in client.call("status")["active_turns"]]


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_in_an_embedded_send(tmp_path: Path, presses: int) -> None:
    slow = {FAULTS_ENV_VAR: encode_faults(RuntimeFaults(delta_delay_s=2.0))}  # the built-in runtime reads it
    root = tmp_path / "root"
    process, turn_id = _send_in_background(root, "--new-thread", "embedded", "a b c d e f g h", env=slow)
    assert process.stderr is not None
    process.send_signal(signal.SIGINT)
    if presses == 2:
        for line in process.stderr:
            if "interrupting the turn (Ctrl-C again to stop waiting)" in line:
                break
        process.send_signal(signal.SIGINT)
    err = _rest_of_stderr(process)
    assert "Traceback" not in err
    if presses == 1:
        assert process.returncode == 1 and f"[turn {turn_id} interrupted" in err
    else:
        assert process.returncode == 130 and "stopped waiting; the turn ends as the host shuts down" in err
    status = json.loads(agenthost("status", "--root", str(root), "--json").stdout)
    [turns] = [t["turns"] for t in status["threads"]]
    assert sum(turns.values()) == 1 and set(turns) <= {"interrupted", "failed"}  # ended and persisted, not pending


def test_service_commands_without_a_service_say_none_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert agenthost("send", "--root", str(root), "--new-thread", "t", "hi").returncode == 0  # embedded
    run = agenthost("interrupt", "--root", str(root), "turn-1")
    assert run.returncode == 1 and "no service runs on" in run.stderr and "agenthost serve" in run.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--thread", "", "hi"), "--thread '' is empty"),
        (("--new-thread", "t", "--timeout", "0", "hi"), "--timeout 0.0 is invalid"),
        (("--new-thread", "t", "--timeout", "nan", "hi"), "--timeout nan is invalid"),
        (("--new-thread", "t", "--timeout", "-3", "hi"), "--timeout -3.0 is invalid"),
        (("--new-thread", "t", "-c", "model=o3", "hi"), "-c ['model=o3'] configures codex; the runtime is 'builtin'"),
        (("--new-thread", "t"), "no message: give TEXT, - (read stdin) or --file FILE"),
        (("--new-thread", "t", "--file", "/nonexistent/m.txt"), "--file '/nonexistent/m.txt' cannot be read"),
    ],
)
def test_bad_send_input_exits_2_with_one_line(tmp_path: Path, args: tuple[str, ...], named: str) -> None:
    root = tmp_path / "root"
    run = agenthost("send", "--root", str(root), *args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert named in run.stderr and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert not root.exists()  # nothing created for a request that was refused


def test_a_thread_on_a_missing_root_is_refused_and_the_root_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    run = agenthost("send", "--root", str(missing), "--thread", "t-1", "hi")
    assert run.returncode == 2 and f"--root '{missing}' does not exist" in run.stderr
    assert not missing.exists()


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ("[host]\nworkers = 'two'\n", "Expected `int`, got `str` - at `$.workers`"),
        ("[host]\nno_such_setting = 1\n", "no_such_setting"),
        ("[hots]\n", "unknown tables ['hots']"),
        ("[host\n", "is not valid TOML"),
        ("[service]\nlog_level = 'loud'\n", "service.log_level must be one of"),
        ("[service]\nmetrics = '0.0.0.0:9100'\n", "0.0.0.0"),
    ],
)
def test_bad_service_config_exits_2_naming_the_value(tmp_path: Path, document: str, named: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(document)
    run = agenthost("serve", "--root", str(tmp_path / "root"), "--config", str(config), "--check-config")
    assert run.returncode == 2, run.stdout + run.stderr
    assert named in run.stderr and "Traceback" not in run.stderr


def test_check_config_prints_the_settings_it_would_run_with(tmp_path: Path) -> None:
    config = tmp_path / "good.toml"
    config.write_text(f'[host]\nstorage_root = "{tmp_path}/r"\nworkers = 3\n[service]\nmetrics = "127.0.0.1:9464"\n')
    run = agenthost("serve", "--config", str(config), "--workers", "4", "--check-config")
    assert run.returncode == 0, run.stderr
    settings = json.loads(run.stdout)
    assert settings["host"]["workers"] == 4 and settings["service"]["metrics"] == "127.0.0.1:9464"  # flags win
    assert not (tmp_path / "r").exists()


def _loose_paths(root: Path) -> list[str]:
    """Every path under root that group or others may read, write or enter."""
    found = [root, *root.rglob("*")]
    return [f"{p} {oct(p.lstat().st_mode & 0o777)}" for p in found if not p.is_symlink() and p.lstat().st_mode & 0o077]


def test_everything_agenthost_creates_is_owner_only(service) -> None:
    svc: ServiceProcess = service()
    with svc.client() as client:
        thread_id = client.call("threads.create", {"title": "private"})["thread_id"]
        turn = client.call("turns.send", {"thread_id": thread_id, "text": "secret words"})
        assert list(turn_events(client, turn["turn_id"]))[-1]["event"]["status"] == "completed"
        assert _loose_paths(svc.root) == []  # database, -wal, -shm, logs, runtime state, transcripts, the socket
    assert svc.socket.exists() and oct(svc.socket.stat().st_mode & 0o777) == "0o600"


def test_doctor_reports_loose_modes_and_repair_tightens_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert agenthost("send", "--root", str(root), "--new-thread", "t", "hello").returncode == 0
    assert _loose_paths(root) == []
    database = root / "system" / "agenthost.db"
    database.chmod(0o644)
    (root / "system").chmod(0o755)
    doctor = agenthost("doctor", "--root", str(root))
    assert doctor.returncode == 1
    assert f"[problem] permissions {database}: mode 644: group or others can reach it" in doctor.stdout
    assert f"[problem] permissions {root / 'system'}: mode 755" in doctor.stdout
    repaired = agenthost("doctor", "--root", str(root), "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert f"[repaired] permissions {database}" in repaired.stdout
    assert _loose_paths(root) == []
    assert agenthost("doctor", "--root", str(root)).returncode == 0


def test_status_and_transcript_of_a_migrated_root_follow_its_moved_pointer(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    sent = agenthost("send", "--root", str(old), "--new-thread", "moving", "before the move")
    thread_id = re.search(r"thread (\S+) turn", sent.stderr).group(1)
    assert agenthost("migrate-storage", "--root", str(old), str(new)).returncode == 0
    after = agenthost("send", "--root", str(new), "--thread", thread_id, "after the move")
    assert after.returncode == 0, after.stderr
    status = agenthost("status", "--root", str(old), "--json")
    assert status.returncode == 0, status.stderr
    threads = {t["thread_id"]: t for t in json.loads(status.stdout)["threads"]}
    assert threads[thread_id]["turns"] == {"completed": 2}  # both turns: the new root's database
    transcript = agenthost("transcript", "--root", str(old), thread_id)
    assert transcript.returncode == 0 and "after the move" in transcript.stdout
    (new / "system" / "migration.json").unlink()  # the pointer now leads nowhere trustworthy
    refused = agenthost("status", "--root", str(old))
    assert refused.returncode == 2 and "holds no finished migration" in refused.stderr
    assert "Traceback" not in refused.stderr


def _unit_settings(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_example_unit_and_config_are_valid_and_agree() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs"
    unit = _unit_settings((docs / "agenthost.service").read_text())
    assert (unit["Type"], unit["KillSignal"], unit["ExecReload"]) == ("notify", "SIGTERM", "/bin/kill -HUP $MAINPID")
    assert unit["ExecStart"].endswith("agenthost serve --config /etc/agenthost/serve.toml")
    checked = agenthost("serve", "--config", str(docs / "serve.toml"), "--check-config")
    assert checked.returncode == 0, checked.stderr
    settings = json.loads(checked.stdout)
    assert settings["host"]["storage_root"] in unit["ReadWritePaths"].split()
    assert int(unit["TimeoutStopSec"]) > settings["host"]["drain_timeout_s"]  # the drain ends before SIGKILL
    assert int(unit["WatchdogSec"]) > 0 and unit["UMask"] == "0077"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_example_unit(tmp_path: Path) -> None:
    installed = Path(sys.executable).parent / "agenthost"
    text = (Path(__file__).resolve().parent.parent / "docs" / "agenthost.service").read_text()
    unit = tmp_path / "agenthost.service"
    unit.write_text(text.replace("/usr/local/bin/agenthost", str(installed)))
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr


def test_approvals_interrupt_and_tail_from_the_cli(service) -> None:
    svc: ServiceProcess = service(SLOW)
    root = str(svc.root)
    tail = subprocess.Popen(
        [sys.executable, "-m", "agenthost", "tail", "--root", root, "--names", "turns.finished"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "via the service" in tail.stderr.readline()  # connected; it subscribes right after saying so
        with svc.client() as client:
            thread_id = client.call("threads.create", {"title": "cli ops"})["thread_id"]
            asked = client.call("turns.send", {"thread_id": thread_id, "text": "RUN: echo from-the-cli"})["turn_id"]
            events = turn_events(client, asked)
            request = next(e["event"] for e in events if e["event"]["type"] == "ApprovalRequested")
            listed = json.loads(agenthost("approvals", "--root", root).stdout)
            assert [a["approval_id"] for a in listed] == [request["approval_id"]]
            assert agenthost("approve", "--root", root, request["approval_id"], "accept").returncode == 0
            assert list(events)[-1]["event"]["status"] == "completed"
            long = client.call("turns.send", {"thread_id": thread_id, "text": "one two three four five six seven"})
            events = turn_events(client, long["turn_id"])
            next(events)
            stopped = agenthost("interrupt", "--root", root, long["turn_id"])
            assert stopped.returncode == 0, stopped.stderr
            assert list(events)[-1]["event"]["status"] == "interrupted"
        first = json.loads(tail.stdout.readline())  # the tail saw the first turn end
        assert first["name"] == "turns.finished" and first["fields"]["turn"] == asked
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(30) == 0 and "Traceback" not in tail.stderr.read()


def _lock_error_after_ctrl_c() -> RuntimeError:
    """What threading raises when a KeyboardInterrupt lands inside a Condition's wait: a lock RuntimeError whose
    context is the KeyboardInterrupt (seen once in CI on the second Ctrl-C of an embedded send)."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("cannot release un-acquired lock")  # noqa: B904 - its context is the point
    except RuntimeError as exc:
        return exc


def test_follow_turn_takes_a_ctrl_c_that_surfaced_as_a_lock_error_as_a_press() -> None:
    from agenthost._cli_common import follow_turn

    interrupts: list[str] = []
    presses = iter([_lock_error_after_ctrl_c(), _lock_error_after_ctrl_c()])

    def next_end() -> str:
        raise next(presses)

    assert follow_turn(lambda: None, next_end, lambda: interrupts.append("asked"), "stop") is None
    assert interrupts == ["asked"]  # first press: interrupt the turn; second: stop waiting

    def broken() -> str:
        raise RuntimeError("a real bug, not a Ctrl-C")

    with pytest.raises(RuntimeError, match="a real bug"):
        follow_turn(lambda: None, broken, lambda: None, "stop")
