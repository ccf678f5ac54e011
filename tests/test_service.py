"""`agenthost serve` as a real subprocess, over its real socket: readiness and drain as systemd expects, many
clients at once, hostile clients, a client that comes back, metrics, logs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from servicekit import ServiceProcess, raw_connect, read_lines, turn_events

from agenthost._client import ServiceError
from agenthost._notify import Notifier

pytestmark = pytest.mark.timeout(120)

SLOW = '[host.worker_faults."1"]\ndelta_delay_s = 0.1\n[host.worker_faults."2"]\ndelta_delay_s = 0.1\n'


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the service has closed this connection (an orderly end, or a reset with unread data)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_ready_and_status_are_told_to_systemd_and_the_socket_answers(service) -> None:
    svc = service()
    ready = svc.notify.wait_for("READY", "1")
    assert ready["STATUS"].startswith("running: 2/2 workers ready") and ready["MAINPID"] == str(svc.process.pid)
    assert oct(svc.socket.stat().st_mode & 0o777) == "0o600"
    with svc.client() as client:
        status = client.call("status")
    assert status["state"] == "running" and [w["state"] for w in status["workers"]] == ["ready", "ready"]
    assert status["service"]["pid"] == svc.process.pid
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0
    svc.notify.wait_for("STOPPING", "1")
    assert not svc.socket.exists()


def test_the_watchdog_is_pinged_when_systemd_asks_for_it(service) -> None:
    svc = service(env={"WATCHDOG_USEC": "400000"})  # WatchdogSec=0.4: a ping at least every 0.2 s
    svc.notify.wait_for("WATCHDOG", "1")
    deadline = time.monotonic() + 10
    while sum(1 for m in svc.notify.messages if m.get("WATCHDOG") == "1") < 5:
        assert time.monotonic() < deadline, svc.notify.messages
        time.sleep(0.05)


def test_a_watchdog_meant_for_another_process_is_not_pinged() -> None:
    mine = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "400000"}
    assert Notifier(mine).watchdog_interval_s == 0.2
    assert Notifier({**mine, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 0.2
    assert Notifier({**mine, "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "400000"}).watchdog_interval_s is None  # no NOTIFY_SOCKET: nobody listens


def test_sigterm_drains_a_turn_in_flight_and_refuses_new_ones(service) -> None:
    svc = service(SLOW, args=("--drain-timeout", "30"))
    with svc.client() as client, svc.client() as late:
        thread_id = client.call("threads.create", {"title": "drain"})["thread_id"]
        turn = client.call("turns.send", {"thread_id": thread_id, "text": "a slow answer " * 3})
        events = turn_events(client, turn["turn_id"])
        first = next(events)
        svc.signal(signal.SIGTERM)
        svc.notify.wait_for("STOPPING", "1")
        with pytest.raises(ServiceError) as refused:
            late.call("turns.send", {"thread_id": thread_id, "text": "too late"})
        assert refused.value.code == -32002 and "shutting down" in str(refused.value)
        finished = [first, *events][-1]["event"]
    assert finished["type"] == "TurnFinished" and finished["status"] == "completed"
    assert svc.wait() == 0


def test_a_second_signal_stops_at_once_and_still_persists_the_turn(service, tmp_path: Path) -> None:
    svc = service(
        '[host.worker_faults."1"]\ndelta_delay_s = 5.0\n[host.worker_faults."2"]\ndelta_delay_s = 5.0\n',
        args=("--drain-timeout", "60"),
    )
    with svc.client() as client:
        thread_id = client.call("threads.create", {"title": "fast stop"})["thread_id"]
        turn_id = client.call("turns.send", {"thread_id": thread_id, "text": "never finishes in time"})["turn_id"]
        started = time.monotonic()
        svc.signal(signal.SIGTERM)
        svc.notify.wait_for("STOPPING", "1")
        svc.signal(signal.SIGTERM)
        assert svc.wait(30) == 0
    assert time.monotonic() - started < 30
    from agenthost.storage import Database

    db = Database.open(tmp_path / "root" / "system" / "agenthost.db")
    try:
        row = db.get_turn(turn_id)
    finally:
        db.close()
    assert row.status == "failed" and "shut down" in (row.error or "")


def test_two_hundred_clients_run_turns_at_once(service) -> None:
    svc = service("max_active_turns = 16\n")
    failures: list[str] = []
    done = threading.Barrier(201)

    def client_run(index: int) -> None:
        try:
            with svc.client(timeout_s=90.0) as client:
                thread_id = client.call("threads.create", {"title": f"c{index}"})["thread_id"]
                turn = client.call("turns.send", {"thread_id": thread_id, "text": f"hello {index}"})
                final = list(turn_events(client, turn["turn_id"], timeout_s=90.0))[-1]["event"]
                if final["status"] != "completed" or final["text"] != f"Reference reply to: hello {index}":
                    failures.append(f"{index}: {final}")
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            failures.append(f"{index}: {exc!r}")
        finally:
            done.wait(100)

    threads = [threading.Thread(target=client_run, args=(i,), daemon=True) for i in range(200)]
    for thread in threads:
        thread.start()
    done.wait(110)
    assert failures == []


def test_hostile_clients_get_errors_and_the_service_keeps_serving(service) -> None:
    svc = service()
    sock = raw_connect(svc.socket)
    sock.sendall(b"\x00\xff garbage\n{not json}\n[1,2,3]\n")
    sock.sendall(b'{"id": 1, "method": "no.such.method"}\n{"id": "two", "method": "turns.send", "params": {"x": 1}}\n')
    sock.sendall(b'{"id": 3, "method": "status", "params": [1]}\n{"id": 1e400, "method": "status"}\n')
    answers = read_lines(sock, 7)  # one answer per line, even for lines that are not requests
    codes = sorted(a["error"]["code"] for a in answers if "error" in a)
    assert codes.count(-32700) >= 2 and -32601 in codes and -32602 in codes
    unknown = next(a for a in answers if a.get("id") == 1)
    assert unknown["error"]["message"] == "unknown method 'no.such.method'"
    bad = next(a for a in answers if a.get("id") == "two")  # a string id comes back as a string
    assert "thread_id" in bad["error"]["message"] or "x" in bad["error"]["message"]
    sock.sendall(b'{"id": 9, "method": "status"}\n')
    assert read_lines(sock, 1)[0]["result"]["state"] == "running"  # the connection stayed open
    huge = raw_connect(svc.socket)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the service may close before all is sent
        huge.sendall(b'{"id": 1, "method": "status", "params": {"x": "' + b"a" * (9 * 1024 * 1024))
    reply = read_lines(huge, 1)
    assert reply and "line too long" in reply[0]["error"]["message"]
    assert closed_by_peer(huge)
    half = raw_connect(svc.socket)
    half.sendall(b'{"id": 5, "method": "sta')
    half.shutdown(socket.SHUT_WR)  # half-closed, mid-request
    half.close()
    for noise in (os.urandom(4096) for _ in range(5)):
        junk = raw_connect(svc.socket)
        junk.sendall(noise)
        junk.close()
    with svc.client() as client:
        thread_id = client.call("threads.create", {})["thread_id"]
        turn = client.call("turns.send", {"thread_id": thread_id, "text": "still serving"})
        assert list(turn_events(client, turn["turn_id"]))[-1]["event"]["status"] == "completed"


def test_a_client_that_comes_back_attaches_from_its_last_event_and_misses_nothing(service) -> None:
    svc = service(SLOW)
    with svc.client() as client:
        thread_id = client.call("threads.create", {"title": "reattach"})["thread_id"]
        turn_id = client.call("turns.send", {"thread_id": thread_id, "text": "one two three four"})["turn_id"]
        events = turn_events(client, turn_id)
        seen = [next(events), next(events)]  # then the client goes away mid-turn
    with svc.client() as client:
        attached = client.call("turns.attach", {"turn_id": turn_id, "after_seq": seen[-1]["seq"]})
        assert attached["turn_id"] == turn_id
        rest = list(turn_events(client, turn_id))
    seqs = [e["seq"] for e in [*seen, *rest]]
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous: nothing missed, nothing twice
    assert rest[-1]["event"]["type"] == "TurnFinished" and rest[-1]["event"]["status"] == "completed"
    with svc.client() as client:  # after the end, the whole turn again
        client.call("turns.attach", {"turn_id": turn_id})
        again = list(turn_events(client, turn_id))
    assert [e["seq"] for e in again] == seqs


def test_a_client_that_does_not_read_is_dropped_and_turns_go_on(service) -> None:
    svc = service("[service]\ncontrol_buffer_bytes = 65536\n")  # room for one turn's events, not for hundreds
    sock = raw_connect(svc.socket)
    sock.sendall(b'{"id": 1, "method": "events.subscribe", "params": {}}\n')
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read again
    with svc.client() as client:
        for index in range(300):
            thread_id = client.call("threads.create", {"title": "x" * 2000})["thread_id"]
            turn = client.call("turns.send", {"thread_id": thread_id, "text": "y" * 3000})
            assert list(turn_events(client, turn["turn_id"]))[-1]["event"]["status"] == "completed", index
            if any(e.get("event") == "control.client_dropped" for e in svc.events()):
                break
    dropped = [e for e in svc.events() if e.get("event") == "control.client_dropped"]
    assert dropped and "the client does not read" in dropped[0]["reason"]
    sock.close()


def test_metrics_are_served_on_loopback(service) -> None:
    svc = service(args=("--metrics", "127.0.0.1:0"))
    with svc.client() as client:
        thread_id = client.call("threads.create", {})["thread_id"]
        turn = client.call("turns.send", {"thread_id": thread_id, "text": "count me"})
        list(turn_events(client, turn["turn_id"]))
        port = client.call("status")["service"]["metrics_port"]
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'agenthost_turns_total{status="completed"} 1.0' in body
    assert 'agenthost_workers{state="ready"} 2.0' in body
    assert "agenthost_turn_duration_seconds_count 1.0" in body
    assert "agenthost_commit_seconds_count" in body and "agenthost_transcript_write_seconds_count" in body
    assert "agenthost_active_turns 0.0" in body and "agenthost_followups_queued 0.0" in body


def test_sighup_reopens_the_log_file_and_sigusr1_dumps_stacks(service, tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    svc = service(args=("--log-file", str(log)))
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    rotated = tmp_path / "service.log.1"
    log.rename(rotated)
    svc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not (log.exists() and "service.log_reopened" in log.read_text()):
        assert time.monotonic() < deadline, "the log file was not reopened"
        time.sleep(0.05)
    assert "service.ready" in rotated.read_text()
    svc.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "Current thread" not in svc.stderr_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, "no stack dump"
        time.sleep(0.05)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_another_uid_is_refused_with_an_error_and_a_log_event(tmp_path: Path) -> None:
    reachable = Path(tempfile.mkdtemp(prefix="agenthost-uid-", dir="/tmp"))  # pytest's base folder is 0700
    svc = ServiceProcess(reachable / "root", tmp_path).start()
    try:
        for folder in (reachable, reachable / "root", reachable / "root" / "system"):
            folder.chmod(0o711)  # let the other user reach the socket: the peer check is what must refuse
        svc.socket.chmod(0o666)
        run = _status_as_nobody(svc.socket)
        refused = [e for e in svc.events() if e.get("event") == "control.refused"]
    finally:
        svc.stop()
        shutil.rmtree(reachable)
    assert "permission denied: uid" in run.stdout, run.stderr
    assert refused and refused[0]["uid"] != 0


def _status_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "print(s.recv(4096).decode())"
    )  # the service answers on accept, before any request
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", probe, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
