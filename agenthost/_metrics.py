"""Prometheus metrics of a running service (prometheus_client), on an opt-in loopback address.

Contract: `Metrics(host)` keeps its own registry (never the process-wide default: an embedding application's
metrics are untouched) and fills it from the host's typed events and, at each scrape, from its status:
- agenthost_turns_total{status}: turns ended, by status (completed, failed, interrupted);
- agenthost_turn_duration_seconds: from dispatch to end (histogram);
- agenthost_worker_restarts_total{reason}: the pool's restart decisions, by the kind of exit (signal, exit_code,
  startup_timeout, stalled, unresponsive, operator, crash, other);
- agenthost_supervisor_decisions_total{supervisor, decision};
- agenthost_commit_seconds, agenthost_transcript_write_seconds: storage latency (histograms);
- agenthost_workers{state}, agenthost_active_turns, agenthost_followups_queued: read from the host at each scrape.
`serve(address)` starts the HTTP endpoint ("127.0.0.1:PORT"; only a loopback host is accepted, anything else
raises ValueError naming it); port 0 picks a free port (see `port`).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agenthost.actors._events import StorageTimed, SupervisorDecision, TurnDispatched, TurnEnded
from agenthost.actors._log import Event

__all__ = ["Metrics", "parse_loopback"]

_REASONS = (
    ("signal", "killed by signal"),
    ("exit_code", "exited with code"),
    ("startup_timeout", "initialize"),
    ("stalled", "stopped reading its stdin"),
    ("unresponsive", "did not answer"),
    ("operator", "requested by the operator"),
    ("crash", "worker actor crashed"),
)


def parse_loopback(address: str) -> tuple[str, int]:
    """ "HOST:PORT" with a loopback HOST; ValueError naming the value otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {address!r} is invalid: expected HOST:PORT, e.g. 127.0.0.1:9464")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"address {address!r} is not a loopback address: metrics are served on loopback only")
    return host, int(port)


def _reason(text: str) -> str:
    return next((name for name, needle in _REASONS if needle in text), "other")


class _HostCollector(Collector):
    def __init__(self, host: Any) -> None:
        self._host = host

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            status, queued = self._host.status(), self._host.queue_depths()
        except Exception:  # noqa: BLE001 - a host that cannot answer shows no gauges this scrape
            return
        workers = GaugeMetricFamily("agenthost_workers", "Runtime workers by state", labels=["state"])
        for state in ("starting", "ready", "degraded", "restarting", "given_up", "stopped"):
            workers.add_metric([state], sum(1 for w in status.workers if w.state == state))
        yield workers
        yield GaugeMetricFamily("agenthost_active_turns", "Turns running now", value=len(status.active_turns))
        yield GaugeMetricFamily("agenthost_followups_queued", "Queued follow-ups", value=sum(queued.values()))


class Metrics:
    def __init__(self, host: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.turns = Counter("agenthost_turns", "Turns ended, by status", ["status"], registry=self.registry)
        self.duration = Histogram(
            "agenthost_turn_duration_seconds",
            "Turn duration from dispatch to end",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.restarts = Counter(
            "agenthost_worker_restarts",
            "Worker restart decisions, by the kind of exit",
            ["reason"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "agenthost_supervisor_decisions", "Supervisor decisions", ["supervisor", "decision"], registry=self.registry
        )
        fast = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
        self.commit = Histogram(
            "agenthost_commit_seconds", "Database commit latency", registry=self.registry, buckets=fast
        )
        self.transcript = Histogram(
            "agenthost_transcript_write_seconds", "Transcript write latency", registry=self.registry, buckets=fast
        )
        self.registry.register(_HostCollector(host))
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self.port: int | None = None
        self._unsubscribe = host.subscribe(
            self._on_event, [SupervisorDecision, TurnDispatched, TurnEnded, StorageTimed]
        )

    def _on_event(self, event: Event) -> None:
        payload = event.payload
        if isinstance(payload, TurnDispatched):
            with self._lock:
                self._started[payload.turn] = event.t
        elif isinstance(payload, TurnEnded):
            self.turns.labels(payload.status).inc()
            with self._lock:
                started = self._started.pop(payload.turn, None)
            if started is not None:
                self.duration.observe(max(0.0, event.t - started))
        elif isinstance(payload, SupervisorDecision):
            self.decisions.labels(payload.supervisor, payload.decision).inc()
            if payload.supervisor == "pool" and payload.decision == "restart":
                self.restarts.labels(_reason(payload.reason)).inc()
        elif isinstance(payload, StorageTimed):
            (self.commit if payload.op == "commit" else self.transcript).observe(payload.seconds)

    def serve(self, address: str) -> int:
        host, port = parse_loopback(address)
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self.port = int(server.server_address[1])
        return self.port

    def close(self) -> None:
        self._unsubscribe()
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
