"""Issue 10, figure 2's floor: how many new threads x 1 turn the runtimes themselves do, with no host and no storage.

`measure(threads, work_dir, workers=2, in_flight=64)` starts `workers` built-in reference runtimes (the host's
`builtin` runtime: `python -m agenthost.protocol.reference_runtime`, its default 4 deltas per reply, its own
state folder under `work_dir`), each driven straight on its pipes by `bench._deltas.RawRuntime` from a thread of
this process: per thread of the conversation `thread/start`, then at its answer `turn/start`, then read until its
`turn/completed`, keeping `in_flight / workers` conversations open per runtime (the host's `max_active_turns`
spread over its workers). Timed from the first request to the last `turn/completed` (perf_counter): turns/s. No
actor, no database, no transcript: whatever a host adds, it cannot beat this, so a host target above it (or a
loop without a runtime that is faster than it) is not reachable on that machine. Any error propagates.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from agenthost.protocol._jsonrpc import ErrorResponse, Notification, Response
from bench._deltas import CLIENT_INFO, RawRuntime
from bench._rate import Run, run_together, split_evenly
from bench._scaling import TEXT

__all__ = ["DELTAS_PER_REPLY", "TIMEOUT_S", "measure", "start_runtime"]

DELTAS_PER_REPLY = 4  # HostConfig's default
TIMEOUT_S = 120.0


def measure(threads: int, work_dir: Path, *, workers: int = 2, in_flight: int = 64) -> Run:
    """Turns/s of `threads` new threads x 1 turn on `workers` runtimes driven directly (see the module docstring)."""
    shares = split_evenly(threads, workers)
    errors: list[BaseException] = []
    runners = [
        threading.Thread(target=_guarded, args=(work_dir, index, share, max(1, in_flight // workers), errors))
        for index, share in enumerate(shares)
    ]
    seconds = run_together(runners)
    if errors:
        raise errors[0]
    return Run(count=threads, seconds=seconds)


def _guarded(work_dir: Path, index: int, conversations: int, window: int, errors: list[BaseException]) -> None:
    try:
        _drive(work_dir, index, conversations, window)
    except BaseException as exc:  # noqa: BLE001 - handed to the measuring thread
        errors.append(exc)


def start_runtime(work_dir: Path, index: int) -> RawRuntime:
    """Built-in runtime number `index`, its state and stderr under `work_dir`, past its handshake."""
    argv = [
        sys.executable,
        "-m",
        "agenthost.protocol.reference_runtime",
        "--state-dir",
        str(work_dir / f"runtime-{index}"),
        "--deltas-per-reply",
        str(DELTAS_PER_REPLY),
    ]
    runtime = RawRuntime(argv, stderr_path=work_dir / f"runtime-{index}.stderr", timeout_s=TIMEOUT_S)
    try:
        runtime.call("initialize", CLIENT_INFO)
        runtime.notify("initialized")
    except BaseException:
        runtime.close()
        raise
    return runtime


def _drive(work_dir: Path, index: int, conversations: int, window: int) -> None:
    runtime = start_runtime(work_dir, index)
    try:
        starting: set[int] = set()
        opened = finished = 0
        while opened < min(window, conversations):
            starting.add(runtime.request("thread/start", {"cwd": str(work_dir)}))
            opened += 1
        for message in runtime.messages:
            if isinstance(message, ErrorResponse):
                raise RuntimeError(f"runtime {index} refused a request: {message.error.message}")
            if isinstance(message, Response) and message.id in starting:
                starting.discard(message.id)
                params = {"threadId": message.result["thread"]["id"], "input": [{"type": "text", "text": TEXT}]}
                runtime.request("turn/start", params)
            elif type(message) is Notification and message.method == "turn/completed":
                finished += 1
                if finished == conversations:
                    return
                if opened < conversations:
                    starting.add(runtime.request("thread/start", {"cwd": str(work_dir)}))
                    opened += 1
    finally:
        runtime.close()
