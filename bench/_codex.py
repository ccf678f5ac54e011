"""Turn round trip on real codex app-server: through the host vs a direct minimal client, on the same binary.

Both sides run the same native codex 0.169.0 binary against the same local mock model server
(protocol/mock_model.py, loopback, replies streamed with no delay), each with its own fresh CODEX_HOME.
- direct: `RawRuntime` (bench/_deltas.py) spawns `codex app-server -c ...`, does initialize/initialized and
  thread/start, then per turn sends turn/start and reads until `turn/completed`.
- host: `AgentHost(HostConfig(runtime="codex", workers=1, ...))`, one thread, per turn `send()` + `wait()`; this
  includes the actor hops and the turn's durable begin and finish.
Timed: per turn, send to end seen, `time.perf_counter()`, after one untimed warm-up turn per side. Reported as
milliseconds per turn and as a throughput ratio (direct ms / host ms); with `samples`, each timed turn's seconds are
collected too (bench/__main__.py reports the p50 of each side over every repeat and their difference, issue 10's
"codex round trip overhead <= 2 ms p50"). Skipped when codex is not installed.
"""

from __future__ import annotations

import time
from pathlib import Path

from agenthost import AgentHost, HostConfig
from agenthost.actors._runtimes import CODEX_OPT_OUT
from agenthost.protocol.mock_model import MockModelServer
from bench._deltas import CLIENT_INFO, RawRuntime
from bench._rate import Run

__all__ = ["measure_direct", "measure_host"]

TEXT = "bench round trip"
TIMEOUT_S = 120.0


def measure_direct(codex_bin: str, turns: int, work_dir: Path, *, samples: list[float] | None = None) -> Run:
    """Turns/s of the direct client; each timed turn's seconds are also appended to `samples` when given."""
    with MockModelServer() as model:
        argv = [codex_bin, "app-server"]
        for override in model.codex_overrides():
            argv += ["-c", override]
        home = work_dir / "direct-home"
        home.mkdir(parents=True, exist_ok=True)
        runtime = RawRuntime(
            argv, stderr_path=work_dir / "direct.stderr", timeout_s=TIMEOUT_S, env={"CODEX_HOME": str(home)}
        )
        try:
            runtime.call(
                "initialize", {**CLIENT_INFO, "capabilities": {"optOutNotificationMethods": list(CODEX_OPT_OUT)}}
            )
            runtime.notify("initialized")
            thread_id = runtime.call("thread/start", {"cwd": str(work_dir)})["thread"]["id"]
            runtime.run_turn(thread_id, TEXT)
            started = time.perf_counter()
            for _ in range(turns):
                turn_started = time.perf_counter()
                runtime.run_turn(thread_id, TEXT)
                _sample(samples, turn_started)
            seconds = time.perf_counter() - started
        finally:
            runtime.close()
    return Run(count=turns, seconds=seconds)


def measure_host(codex_bin: str, turns: int, work_dir: Path, *, samples: list[float] | None = None) -> Run:
    """Turns/s through the host; each timed turn's seconds are also appended to `samples` when given."""
    with MockModelServer() as model:
        config = HostConfig(
            storage_root=str(work_dir / "host-root"),
            workers=1,
            runtime="codex",
            codex_bin=codex_bin,
            codex_config=model.codex_overrides(),
        )
        with AgentHost(config) as host:
            thread_id = host.create_thread("bench codex")
            host.send(thread_id, TEXT).wait(TIMEOUT_S)
            started = time.perf_counter()
            for _ in range(turns):
                turn_started = time.perf_counter()
                done = host.send(thread_id, TEXT).wait(TIMEOUT_S)
                _sample(samples, turn_started)
                if done.status != "completed":
                    raise RuntimeError(f"host codex turn ended {done.status}: {done.error}")
            seconds = time.perf_counter() - started
    return Run(count=turns, seconds=seconds)


def _sample(samples: list[float] | None, started: float) -> None:
    if samples is not None:
        samples.append(time.perf_counter() - started)
