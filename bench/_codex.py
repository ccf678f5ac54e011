"""Turn round trip on real codex app-server: through the host vs a direct minimal client, on the same binary.

Both sides run the same native codex 0.169.0 binary against the same local mock model server
(protocol/mock_model.py, loopback, replies streamed with no delay), each with its own fresh CODEX_HOME.
- direct: `RawRuntime` (bench/_deltas.py) spawns `codex app-server -c ...`, does initialize/initialized and
  thread/start, then per turn sends turn/start and reads until `turn/completed`.
- host: `AgentHost(HostConfig(runtime="codex", workers=1, ...))`, one thread, per turn `send()` + `wait()`; this
  includes the actor hops and the turn's durable begin and finish.
Timed: per turn, send to end seen, `time.perf_counter()`, after one untimed warm-up turn per side. Reported as
milliseconds per turn and as a throughput ratio (direct ms / host ms); with `samples`, each timed turn's seconds are
collected too (bench/_issue10.py reports the p50 of each side over every repeat and their difference, issue 10's
"codex round trip overhead <= 2 ms p50"). Skipped when codex is not installed.
- Own time per turn (`own`): the turn's time minus the time codex had it, from `turn/start` written to its stdin
  to `turn/completed` read from its stdout. For the host those two instants are taken inside its pipe classes
  (`agenthost.actors._pipes.StdinOutbox._write`, `StdoutInbox.put`, private: this bench wraps them for the run,
  `_PipeClock`), for the direct client around its own write and decode (`RawRuntime.runtime_s`). The difference of
  the two own times is the overhead free of how fast each codex process happens to be: two fresh direct clients on
  the same machine differ by a few ms at p50 (the noise a difference of whole turns carries, which
  bench/__main__.py measures as "direct vs direct"), while a direct client's own time is about 10 us.
- The durable floor (`measure_durable_direct`): the direct client doing the host's durable work itself, in one
  thread, no actors (begin committed + its transcript record appended before `turn/start`, end committed +
  appended after `turn/completed`), its own time measured the same way (`RawRuntime.runtime_s`). What the host's
  own time has above it is what its actors cost; what it has below it is what durability costs on this machine.
  Both run cold: each turn's work comes after ~50 ms of codex, and a virtual machine whose idle vCPUs are lent
  out finds its caches emptied by then (on the machine this was written on, a SQLite transaction of 40 us took
  330 us after 50 ms asleep, however long the thread spun first), so these figures are much higher than the same
  work run back to back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agenthost import AgentHost, HostConfig
from agenthost.actors import _pipes
from agenthost.actors._runtimes import CODEX_OPT_OUT
from agenthost.protocol.mock_model import MockModelServer
from agenthost.storage import TurnFinish
from bench._deltas import CLIENT_INFO, RawRuntime
from bench._rate import Run
from bench._store import direct_store, written

__all__ = ["measure_direct", "measure_durable_direct", "measure_host"]

TEXT = "bench round trip"
REPLY = f"Mock reply to: {TEXT}"  # what the mock model answers it (protocol/mock_model.py)
TIMEOUT_S = 120.0


def measure_direct(
    codex_bin: str,
    turns: int,
    work_dir: Path,
    *,
    samples: list[float] | None = None,
    own: list[float] | None = None,
) -> Run:
    """Turns/s of the direct client; each timed turn's seconds are also appended to `samples`, and its own part of
    it (the turn's time minus codex's, as for the host) to `own`, when given."""
    with _direct_client(codex_bin, work_dir) as (runtime, thread_id):
        started = time.perf_counter()
        for _ in range(turns):
            turn_started = time.perf_counter()
            runtime.run_turn(thread_id, TEXT)
            _sample(samples, turn_started)
            if own is not None:
                own.append(time.perf_counter() - turn_started - runtime.runtime_s)
        seconds = time.perf_counter() - started
    return Run(count=turns, seconds=seconds)


def measure_durable_direct(codex_bin: str, turns: int, work_dir: Path, *, own: list[float]) -> None:
    """The direct client doing the host's durable work per turn in its own thread, no actors: the turn's begin
    committed and its record appended to the thread's transcript before `turn/start`, its end committed and
    appended after `turn/completed` (agenthost.storage's `Database` and `TranscriptWriter`, as the host uses them;
    transcripts fsynced once at the end, as the host batches that fsync). Each timed turn's own time (the turn's
    time minus codex's, as for the host) is appended to `own`."""
    with direct_store(work_dir, "durable-root", "default") as (database, writer):
        written(writer.thread_created(database.create_thread("bench", "default", "bench codex", time.time())))
        with _direct_client(codex_bin, work_dir) as (runtime, thread_id):
            for turn in range(turns + 1):  # the first one untimed, as the host's warm-up turn
                turn_started = time.perf_counter()
                begun = database.begin_turn(f"turn-{turn}", "bench", TEXT, time.time())
                written(writer.turns_written([begun]))
                runtime.run_turn(thread_id, TEXT)
                ended = TurnFinish(begun.turn_id, "completed", REPLY, None, time.time(), 1)
                written(writer.turns_written(database.finish_turns([ended])))
                if turn:
                    own.append(time.perf_counter() - turn_started - runtime.runtime_s)
        written(writer.sync_appends())


@contextlib.contextmanager
def _direct_client(codex_bin: str, work_dir: Path) -> Iterator[tuple[RawRuntime, str]]:
    """A direct client on its own mock model and CODEX_HOME, past the handshake, thread/start and one untimed turn."""
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
            yield runtime, thread_id
        finally:
            runtime.close()


class _PipeClock:
    """While entered: when each `turn/start` request is written to a runtime's stdin and when each `turn/completed`
    is read from its stdout (perf_counter), by wrapping the host's pipe classes."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.completed: list[float] = []
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> _PipeClock:
        write, put = _pipes.StdinOutbox._write, _pipes.StdoutInbox.put
        started, completed = self.started, self.completed

        def timed_write(outbox: Any, chunk: bytes) -> Any:
            if b'"turn/start"' in chunk:
                started.append(time.perf_counter())
            return write(outbox, chunk)

        def timed_put(inbox: Any, messages: list[Any]) -> Any:
            if any(getattr(message, "method", None) == "turn/completed" for message in messages):
                completed.append(time.perf_counter())
            return put(inbox, messages)

        self._saved = (write, put)
        setattr(_pipes.StdinOutbox, "_write", timed_write)  # noqa: B010 - a private method, on purpose
        setattr(_pipes.StdoutInbox, "put", timed_put)  # noqa: B010
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._saved is not None
        setattr(_pipes.StdinOutbox, "_write", self._saved[0])  # noqa: B010
        setattr(_pipes.StdoutInbox, "put", self._saved[1])  # noqa: B010


def measure_host(
    codex_bin: str,
    turns: int,
    work_dir: Path,
    *,
    samples: list[float] | None = None,
    own: list[float] | None = None,
) -> Run:
    """Turns/s through the host; each timed turn's seconds are also appended to `samples`, and the host's own part
    of it (see the module docstring) to `own`, when given."""
    with MockModelServer() as model, _PipeClock() as pipes:
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
                marks = (len(pipes.started), len(pipes.completed))
                turn_started = time.perf_counter()
                done = host.send(thread_id, TEXT).wait(TIMEOUT_S)
                seconds_turn = time.perf_counter() - turn_started
                _sample(samples, turn_started)
                if done.status != "completed":
                    raise RuntimeError(f"host codex turn ended {done.status}: {done.error}")
                if own is not None and (len(pipes.started), len(pipes.completed)) == (marks[0] + 1, marks[1] + 1):
                    own.append(seconds_turn - (pipes.completed[-1] - pipes.started[-1]))
            seconds = time.perf_counter() - started
    return Run(count=turns, seconds=seconds)


def _sample(samples: list[float] | None, started: float) -> None:
    if samples is not None:
        samples.append(time.perf_counter() - started)
