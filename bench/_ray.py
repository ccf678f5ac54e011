"""Ray placement against local placement, in one run: deltas/s and a turn's round trip.

`python -m bench._ray [--quick] [--address ADDR] [--json PATH]` prints them alone; `python -m bench` prints them
as its Ray section (skipped, with the reason, when ray is not installed).

Set-up: a one-node Ray cluster on this machine (`ray.cluster_utils.Cluster`, bound to 127.0.0.1, no dashboard,
2 CPUs), started and torn down by the measurement. Two hosts run side by side, each with one worker on the built-in
runtime and its own fresh storage root: `placement="local"` (the runtime is a child process) and `placement="ray"`
(the runtime runs in a Ray actor on the cluster's node). Both are on the same machine, so the difference is what
Ray's calls and batching add (the stdout long polls, the numbered stdin writes), not a network's latency. With
`--address ADDR` the Ray host uses that cluster instead, and its runtime runs wherever Ray places it.

- deltas/s: per host, one untimed warm-up turn, then `turns` timed turns of `deltas_per_reply` deltas on one
  thread, every event of each handle consumed (as bench/_deltas.py's host side); the hosts take turns, one turn
  each, so drift of the machine hits both alike.
- round trip: `round_trips` turns of a short message (2 deltas) per host, alternating; send() -> TurnFinished,
  p50 and p90 of each and the p50 difference.

Timed with `time.perf_counter()`; not timed: cluster and host start, actor placement, warm-up. Reported, never
asserted.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from agenthost import AgentHost, HostConfig
from agenthost.actors._placement import RayResources
from bench._deltas import _host_turn, turn_text

__all__ = ["RayParams", "RayVsLocal", "format_section", "main", "measure"]

TIMEOUT_S = 120.0
SHORT_TEXT = "ping"


class RayParams(msgspec.Struct, frozen=True, kw_only=True):
    deltas_per_reply: int = 2000
    turns: int = 20
    round_trips: int = 200


FULL = RayParams()
QUICK = RayParams(deltas_per_reply=1000, turns=3, round_trips=20)


class RayVsLocal(msgspec.Struct, frozen=True, kw_only=True):
    params: RayParams
    ray_version: str
    cluster: str  # where the Ray host's runtime ran
    local_deltas_per_s: float
    ray_deltas_per_s: float
    deltas_ratio_pct: float  # ray / local
    local_p50_ms: float
    local_p90_ms: float
    ray_p50_ms: float
    ray_p90_ms: float
    added_p50_ms: float  # ray p50 - local p50
    seconds: float


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _round_trip(host: AgentHost, thread_id: str) -> float:
    started = time.perf_counter()
    finished = host.send(thread_id, SHORT_TEXT).wait(TIMEOUT_S)
    if finished.status != "completed":
        raise RuntimeError(f"turn ended {finished.status}: {finished.error}")
    return time.perf_counter() - started


def _config(root: Path, deltas_per_reply: int, address: str | None) -> HostConfig:
    """One worker on the built-in runtime; placed on the cluster at `address`, or local when it is None."""
    if address is None:
        return HostConfig(
            storage_root=str(root), workers=1, deltas_per_reply=deltas_per_reply, turn_timeout_s=TIMEOUT_S
        )
    return HostConfig(
        storage_root=str(root),
        workers=1,
        deltas_per_reply=deltas_per_reply,
        turn_timeout_s=TIMEOUT_S,
        startup_timeout_s=60.0,
        placement="ray",
        ray_address=address,
        resources=RayResources(num_cpus=0),
    )


def _compare(params: RayParams, work_dir: Path, address: str) -> dict[str, list[float]]:
    """Both measurements with both hosts up side by side; per-host lists of seconds (delta turns, round trips)."""
    text = turn_text(params.deltas_per_reply)
    n = params.deltas_per_reply
    hosts = {
        "local": AgentHost(_config(work_dir / "local-root", n, None)),
        "ray": AgentHost(_config(work_dir / "ray-root", n, address)),
    }
    try:
        threads = {}
        for side, host in hosts.items():
            host.start()
            threads[side] = host.create_thread(f"bench {side}")
            _host_turn(host, threads[side], text, TIMEOUT_S)  # warm-up
            _round_trip(host, threads[side])
        timed: dict[str, list[float]] = {"local": [], "ray": [], "local_rt": [], "ray_rt": []}
        for _ in range(params.turns):
            for side, host in hosts.items():
                started = time.perf_counter()
                counted = _host_turn(host, threads[side], text, TIMEOUT_S)
                timed[side].append(time.perf_counter() - started)
                if counted != n:
                    raise RuntimeError(f"{side}: counted {counted} deltas, expected {n}")
        for _ in range(params.round_trips):
            for side, host in hosts.items():
                timed[f"{side}_rt"].append(_round_trip(host, threads[side]))
        return timed
    finally:
        for host in hosts.values():
            host.shutdown(drain_timeout_s=1.0)


def measure(params: RayParams, work_dir: Path, address: str | None = None) -> RayVsLocal:
    """Measure both placements side by side (see the module docstring) on the cluster at `address`, or on a
    one-node loopback cluster started (and stopped) here when it is None."""
    started = time.perf_counter()
    if address is not None:
        timed = _compare(params, work_dir, address)
    else:
        if "ray" not in sys.modules:  # a cluster bound to 127.0.0.1 (README "Running on a cluster")
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True,
            head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 2, "include_dashboard": False},
        )
        try:
            timed = _compare(params, work_dir, str(cluster.address))
        finally:
            ray.shutdown()
            cluster.shutdown()
    n = params.deltas_per_reply
    local_rate = n * len(timed["local"]) / sum(timed["local"])
    ray_rate = n * len(timed["ray"]) / sum(timed["ray"])
    ms = 1000.0
    return RayVsLocal(
        params=params,
        ray_version=importlib.metadata.version("ray"),
        cluster=address or "a one-node loopback cluster",
        local_deltas_per_s=local_rate,
        ray_deltas_per_s=ray_rate,
        deltas_ratio_pct=100.0 * ray_rate / local_rate,
        local_p50_ms=ms * statistics.median(timed["local_rt"]),
        local_p90_ms=ms * _quantile(timed["local_rt"], 0.9),
        ray_p50_ms=ms * statistics.median(timed["ray_rt"]),
        ray_p90_ms=ms * _quantile(timed["ray_rt"], 0.9),
        added_p50_ms=ms * (statistics.median(timed["ray_rt"]) - statistics.median(timed["local_rt"])),
        seconds=time.perf_counter() - started,
    )


def format_section(result: RayVsLocal | None, skipped: str | None = None) -> str:
    if result is None:
        return f"Ray placement vs local placement: skipped ({skipped})"
    p = result.params
    return "\n".join(
        [
            f"Ray placement vs local placement (ray {result.ray_version}, {result.cluster}, 1 worker each, "
            f"alternating; {result.seconds:.0f} s)",
            f"  deltas/s ({p.turns} turns x {p.deltas_per_reply} deltas)   local {result.local_deltas_per_s:>10,.0f}"
            f"   ray {result.ray_deltas_per_s:>10,.0f}   ray/local {result.deltas_ratio_pct:5.1f} %",
            f"  turn round trip ({p.round_trips} short turns)   local p50 {result.local_p50_ms:6.2f} ms"
            f" p90 {result.local_p90_ms:6.2f} ms   ray p50 {result.ray_p50_ms:6.2f} ms p90 {result.ray_p90_ms:6.2f} ms"
            f"   added p50 {result.added_p50_ms:+.2f} ms",
        ]
    )


def run_section(quick: bool, address: str | None = None) -> tuple[RayVsLocal | None, str | None]:
    """The section for `python -m bench`: the result, or None and why it was skipped (ray not installed)."""
    if importlib.util.find_spec("ray") is None:  # not imported here: measure() must set its knob first
        return None, "ray is not installed: pip install 'agenthost[ray]'"
    with tempfile.TemporaryDirectory(prefix="agenthost-bench-ray-") as work_dir:
        return measure(QUICK if quick else FULL, Path(work_dir), address), None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._ray", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few turns only (the smoke version)")
    parser.add_argument("--address", metavar="ADDR", help="measure on this Ray cluster instead of a loopback one")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result, skipped = run_section(args.quick, args.address)
    if args.json is not None and result is not None:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    print(format_section(result, skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
