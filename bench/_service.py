"""Turn latency through the service's control socket vs an embedded host, side by side in one run.

Both sides run the built-in reference runtime (1 worker, no faults) on their own fresh storage root:
- embedded: `AgentHost` in this process; per turn `send()` + `wait()`.
- service: `agenthost serve` as a subprocess; per turn a `turns.send` request on the control socket, then the
  turn's `turn.event` notifications read until its TurnFinished (what `agenthost send` does).
The turns alternate (embedded, service, embedded, ...) after one untimed warm-up turn per side, so both see the same
machine noise. Each latency is send -> end seen, `time.perf_counter()`. Reported: the p50 and p90 of each side and
the p50 difference (what the socket adds; design target <= 1 ms).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from agenthost import AgentHost, HostConfig
from agenthost._client import ControlClient, connect_service

__all__ = ["SOCKET_TARGET_MS", "ServiceLatency", "measure"]

SOCKET_TARGET_MS = 1.0
TEXT = "bench round trip"
TIMEOUT_S = 60.0


class ServiceLatency(msgspec.Struct, frozen=True, kw_only=True):
    turns: int
    embedded_p50_ms: float
    embedded_p90_ms: float
    service_p50_ms: float
    service_p90_ms: float
    added_p50_ms: float  # service p50 - embedded p50


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _start_service(root: Path, log: Path) -> tuple[subprocess.Popen[bytes], ControlClient]:
    argv = [
        sys.executable,
        "-m",
        "agenthost",
        "--log-level",
        "warning",
        "--log-format",
        "json",
        "serve",
        "--root",
        str(root),
        "--workers",
        "1",
    ]
    with open(log, "wb") as stderr:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"agenthost serve exited with {process.returncode}: see {log}")
        client = connect_service(root / "system") if (root / "system").is_dir() else None
        if client is not None:
            status = client.call("status")
            if status["state"] == "running" and all(w["state"] == "ready" for w in status["workers"]):
                return process, client
            client.close()
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"agenthost serve was not ready within {TIMEOUT_S:g} s: see {log}")


def _service_turn(client: ControlClient, thread_id: str) -> float:
    started = time.perf_counter()
    turn_id = client.call("turns.send", {"thread_id": thread_id, "text": TEXT})["turn_id"]
    while True:
        params = client.next_notification(TIMEOUT_S).params
        event = params.get("event", {})
        if params.get("turn_id") == turn_id and event.get("type") == "TurnFinished":
            if event.get("status") != "completed":
                raise RuntimeError(f"service turn {turn_id} ended {event.get('status')}: {event.get('error')}")
            return time.perf_counter() - started


def _embedded_turn(host: AgentHost, thread_id: str) -> float:
    started = time.perf_counter()
    finished = host.send(thread_id, TEXT).wait(TIMEOUT_S)
    if finished.status != "completed":
        raise RuntimeError(f"embedded turn ended {finished.status}: {finished.error}")
    return time.perf_counter() - started


def measure(turns: int, work_dir: Path) -> ServiceLatency:
    process, client = _start_service(work_dir / "service-root", work_dir / "service.stderr")
    try:
        with AgentHost(HostConfig(storage_root=str(work_dir / "embedded-root"), workers=1)) as host:
            embedded_thread = host.create_thread("bench")
            service_thread = client.call("threads.create", {"title": "bench"})["thread_id"]
            _embedded_turn(host, embedded_thread)
            _service_turn(client, service_thread)
            embedded, service = [], []
            for _ in range(turns):
                embedded.append(_embedded_turn(host, embedded_thread))
                service.append(_service_turn(client, service_thread))
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    ms = 1000.0
    return ServiceLatency(
        turns=turns,
        embedded_p50_ms=ms * statistics.median(embedded),
        embedded_p90_ms=ms * _quantile(embedded, 0.9),
        service_p50_ms=ms * statistics.median(service),
        service_p90_ms=ms * _quantile(service, 0.9),
        added_p50_ms=ms * (statistics.median(service) - statistics.median(embedded)),
    )
