"""A turn round trip through `agenthost app-server --runtime codex` vs directly against `codex app-server`, on the same
binary, side by side in one run.

Both are driven by the same minimal client (`RawRuntime`, bench/_deltas.py) over stdio, each against its own local
mock model server (protocol/mock_model.py, loopback, replies streamed with no delay) and its own fresh state: the
front end with one codex worker on a fresh storage root, codex with a fresh CODEX_HOME. After initialize, one
thread each and one untimed warm-up turn each, the timed turns alternate (direct, front end, direct, ...) so both
see the same machine noise. Each latency is turn/start sent -> turn/completed read, `time.perf_counter()`.
Reported: p50 of each, the p50 ratio direct/front end in % (design target >= 90 %) and what the front end adds.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import msgspec

from agenthost.actors._runtimes import CODEX_OPT_OUT
from agenthost.protocol.mock_model import MockModelServer
from bench._deltas import CLIENT_INFO, RawRuntime

__all__ = ["FRONT_END_TARGET_PCT", "AppServerLatency", "measure"]

FRONT_END_TARGET_PCT = 90.0
TEXT = "bench round trip"
TIMEOUT_S = 180.0


class AppServerLatency(msgspec.Struct, frozen=True, kw_only=True):
    turns: int
    direct_p50_ms: float
    front_end_p50_ms: float
    ratio_pct: float  # direct p50 / front end p50
    added_p50_ms: float


def _start(runtime: RawRuntime, work_dir: Path) -> str:
    runtime.call("initialize", {**CLIENT_INFO, "capabilities": {"optOutNotificationMethods": list(CODEX_OPT_OUT)}})
    runtime.notify("initialized")
    thread_id: str = runtime.call("thread/start", {"cwd": str(work_dir)})["thread"]["id"]
    runtime.run_turn(thread_id, TEXT)  # warm-up, untimed
    return thread_id


def _timed(runtime: RawRuntime, thread_id: str) -> float:
    started = time.perf_counter()
    runtime.run_turn(thread_id, TEXT)
    return time.perf_counter() - started


def measure(codex_bin: str, turns: int, work_dir: Path) -> AppServerLatency:
    with MockModelServer() as direct_model, MockModelServer() as front_model:
        home = work_dir / "codex-home"
        home.mkdir(parents=True, exist_ok=True)
        direct = RawRuntime(
            [codex_bin, "app-server", *_flags(direct_model)],
            stderr_path=work_dir / "direct.stderr",
            timeout_s=TIMEOUT_S,
            env={"CODEX_HOME": str(home)},
        )
        front = RawRuntime(
            [
                sys.executable,
                "-m",
                "agenthost",
                "app-server",
                "--root",
                str(work_dir / "root"),
                "--workers",
                "1",
                "--runtime",
                "codex",
                "--codex-bin",
                codex_bin,
                *_flags(front_model),
            ],
            stderr_path=work_dir / "front-end.stderr",
            timeout_s=TIMEOUT_S,
        )
        try:
            pairs = (direct, _start(direct, work_dir)), (front, _start(front, work_dir))
            samples: tuple[list[float], list[float]] = ([], [])
            for _ in range(turns):
                for (runtime, thread_id), kept in zip(pairs, samples, strict=True):
                    kept.append(_timed(runtime, thread_id))
        finally:
            direct.close()
            front.close()
    direct_ms, front_ms = (1000.0 * statistics.median(kept) for kept in samples)
    return AppServerLatency(
        turns=turns,
        direct_p50_ms=direct_ms,
        front_end_p50_ms=front_ms,
        ratio_pct=100.0 * direct_ms / front_ms,
        added_p50_ms=front_ms - direct_ms,
    )


def _flags(model: MockModelServer) -> list[str]:
    return [item for override in model.codex_overrides() for item in ("-c", override)]
