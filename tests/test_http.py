"""The status page's access rules and data, against a real `agenthost serve --http` subprocess (no browser here:
tests/test_http_browser.py drives the page in Chromium), plus the recorder's figures on an injected clock."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from servicekit import ServiceProcess

from agenthost._http_auth import RequestFacts, check, parse_http_address
from agenthost._view import Recorder
from agenthost.actors._events import SupervisorDecision, TurnDispatched, TurnEnded
from agenthost.actors._log import Event

pytestmark = pytest.mark.timeout(120)


def agenthost(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agenthost", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def page_url(svc: ServiceProcess) -> str:
    done = agenthost("url", "--root", str(svc.root))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def request(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, target, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def test_the_token_is_private_and_url_prints_the_full_address(service) -> None:
    svc: ServiceProcess = service(args=("--http", "127.0.0.1:0"))
    token_file = svc.root / "system" / "http-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    url = page_url(svc)
    token = token_file.read_text().strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith(f"/?token={token}") and len(token) >= 40
    status, body, headers = request(url)
    assert status == 200 and b"/static/status.js" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert b"http://" not in body.replace(b"http://www.w3.org", b"")  # nothing is fetched from elsewhere


def test_a_request_without_the_token_is_refused(service) -> None:
    svc: ServiceProcess = service(args=("--http", "127.0.0.1:0"))
    url = page_url(svc)
    base, token = url.split("?token=")
    for path in ("", "api/snapshot", "api/stream", "api/transcript?thread_id=x"):
        assert request(base + path)[0] == 403, path
        joiner = "&" if "?" in path else "?"
        assert request(f"{base}{path}{joiner}token=wrong{token[:8]}")[0] == 403, path
    snapshot = json.loads(request(f"{base}api/snapshot?token={token}")[1])
    assert [w["state"] for w in snapshot["status"]["workers"]] == ["ready", "ready"]
    assert request(base + "static/status.js")[0] == 200  # the script holds no data: public
    refused = [e for e in svc.events() if e.get("event") == "http.refused"]
    assert refused and all(e["status"] == 403 for e in refused)


def test_state_changing_requests_are_posts_protected_against_cross_site_use(service) -> None:
    svc: ServiceProcess = service(args=("--http", "127.0.0.1:0"))
    base, token = page_url(svc).split("?token=")
    answer = base + "api/approvals/answer"
    body = {"approval_id": "ap-none", "decision": "accept"}
    good = {"Content-Type": "application/json", "X-Agenthost-Token": token}
    assert request(answer, "GET")[0] == 403  # a GET has no token here; with one it would be a 404: never a write
    assert request(f"{answer}?token={token}", "GET", headers={})[0] == 404
    assert request(f"{answer}?token={token}", "POST", body, good)[0] == 400  # token in the URL of a POST
    assert request(answer, "POST", body, {"Content-Type": "application/json"})[0] == 403  # no token header
    assert request(answer, "POST", body, {**good, "Content-Type": "text/plain"})[0] == 400  # a form could send it
    assert request(answer, "POST", body, {**good, "Origin": "http://evil.example"})[0] == 403
    assert request(answer, "POST", body, {**good, "Host": "evil.example"})[0] == 403  # DNS rebinding
    status, text, _ = request(answer, "POST", body, good)
    assert status == 409 and b"ap-none" in text  # accepted as a request; the service says it knows no such approval
    origin = base.rstrip("/")
    assert request(answer, "POST", body, {**good, "Origin": origin})[0] == 409


def test_bad_http_addresses_exit_2_and_a_remote_bind_needs_the_flag_and_warns(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    for address, named in (("127.0.0.1", "HOST:PORT"), ("127.0.0.1:99999", "HOST:PORT"), ("0.0.0.0:0", "loopback")):
        done = agenthost("serve", "--root", root, "--http", address)
        assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "root").exists()
    checked = agenthost("serve", "--root", root, "--http", "0.0.0.0:0", "--http-allow-remote", "--check-config")
    assert checked.returncode == 0 and json.loads(checked.stdout)["service"]["http_allow_remote"] is True


def test_a_busy_port_exits_1_before_the_host_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = agenthost("serve", "--root", str(tmp_path / "root"), "--http", f"127.0.0.1:{port}")
    assert done.returncode == 1 and f"--http 127.0.0.1:{port} cannot be served" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "root").exists()


def test_a_remote_bind_prints_a_warning(service) -> None:
    svc: ServiceProcess = service(args=("--http", "0.0.0.0:0", "--http-allow-remote"))
    assert "WARNING: the status page listens on http://0.0.0.0:" in svc.stderr_path.read_text()
    assert any(e.get("event") == "http.remote_bind" for e in svc.events())


def test_url_without_http_or_without_a_service_says_so(service, tmp_path: Path) -> None:
    assert agenthost("url", "--root", str(tmp_path / "nothing")).returncode == 1
    svc: ServiceProcess = service()
    done = agenthost("url", "--root", str(svc.root))
    assert done.returncode == 1 and "without --http" in done.stderr


def test_parse_http_address_and_check_units() -> None:
    assert parse_http_address("127.0.0.1:8321") == ("127.0.0.1", 8321)
    assert parse_http_address("[::1]:0") == ("::1", 0)
    assert parse_http_address("10.0.0.5:80", allow_remote=True) == ("10.0.0.5", 80)
    with pytest.raises(ValueError, match="not a loopback"):
        parse_http_address("10.0.0.5:80")
    with pytest.raises(ValueError, match="IP address"):
        parse_http_address("example.com:80", allow_remote=True)
    get = RequestFacts(method="GET", target="/api/snapshot?token=t0k", host="[::1]:8321")
    assert check(get, "t0k", loopback_only=True) is None
    assert check(RequestFacts(method="GET", target="/?token=t0k", host="localhost"), "t0k", True) is None
    assert check(RequestFacts(method="DELETE", target="/", host="127.0.0.1"), "t0k", True).status == 405


def test_the_recorder_buckets_turns_and_keeps_decisions_on_its_clock() -> None:
    now = [1000.0]

    class Host:
        def subscribe(self, callback: Any, names: Any) -> Any:
            return lambda: None

    recorder = Recorder(Host(), clock=lambda: now[0], wall=lambda: 5.0, window_s=60.0, bucket_s=15.0)

    def emit(payload: Any) -> None:
        recorder.on_event(Event(name="x", level="info", logger="t", t=0.0, fields={}, payload=payload))

    for index, (start, end) in enumerate(((1000.0, 1002.0), (1010.0, 1011.0), (1050.0, 1054.0))):
        now[0] = start
        emit(TurnDispatched(turn=f"t{index}", thread="th", worker=1))
        now[0] = end
        emit(TurnEnded(turn=f"t{index}", thread="th", status="completed"))
    emit(SupervisorDecision(supervisor="pool", child="worker-1", decision="restart", reason="killed", attempt=1))
    now[0] = 1060.0
    buckets = recorder.series()
    assert [b.start for b in buckets] == [-60.0, -45.0, -30.0, -15.0]
    assert [round(b.turns_per_s * 15) for b in buckets] == [2, 0, 0, 1]
    assert (buckets[0].p50_s, buckets[0].max_s, buckets[3].p50_s) == (1.5, 2.0, 4.0)
    assert [t.turn_id for t in recorder.recent()] == ["t2", "t1", "t0"]
    assert [(d.child, d.decision, d.t) for d in recorder.decisions()] == [("worker-1", "restart", 1054.0)]
    now[0] = 1070.0
    assert [t.turn_id for t in recorder.recent()] == ["t2", "t1", "t0"]  # pruned at the next turn end or series
    recorder.series()
    assert [t.turn_id for t in recorder.recent()] == ["t2", "t1"]


def test_top_refuses_a_bad_interval_with_exit_2(tmp_path: Path) -> None:
    done = agenthost("top", "--root", str(tmp_path), "--interval", "5")
    assert done.returncode == 2 and "--interval 5.0" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_snapshot_over_the_socket_shows_a_turn_and_its_timing(service) -> None:
    svc: ServiceProcess = service()
    with svc.client() as client:
        thread_id = client.call("threads.create", {"title": "timed"})["thread_id"]
        turn_id = client.call("turns.send", {"thread_id": thread_id, "text": "hello", "stream": False})["turn_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snapshot = client.call("view.snapshot")
            if snapshot["recent"]:
                break
            time.sleep(0.05)
    assert snapshot["recent"][0]["turn_id"] == turn_id and snapshot["recent"][0]["status"] == "completed"
    assert snapshot["recent"][0]["seconds"] is not None and snapshot["recent"][0]["seconds"] < 30
    assert sum(b["turns_per_s"] for b in snapshot["series"]["buckets"]) * 15 == pytest.approx(1.0)
    assert snapshot["threads"][-1]["thread_id"] == thread_id and snapshot["thread_count"] == 1
