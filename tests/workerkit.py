"""Helpers for the worker actor's tests: a recorder actor standing in for the pool and the coordinator, a harness
that starts worker actors (worker 7, generation 3) on a FakeClock and stops what it started, and a scripted runtime
whose behaviour each request's method picks."""

from __future__ import annotations

import queue
import sys
import textwrap
from pathlib import Path
from typing import Any

import pykka

from agenthost.actors import FakeClock, WorkerWatch
from agenthost.actors._pipes import WorkerSpec
from agenthost.actors._recovery import WORKER_WATCH
from agenthost.actors._refs import FaultHook
from agenthost.actors._worker import WorkerActor
from agenthost.protocol._messages import RuntimeCall, StopRuntime

__all__ = ["Harness", "Recorder", "call", "next_of", "scripted_runtime"]


class Recorder(pykka.ThreadingActor):
    """Puts every message it gets in `inbox`; an ask returns once every message told before it is there."""

    def __init__(self, inbox: queue.Queue[Any]) -> None:
        super().__init__()
        self.inbox = inbox

    def on_receive(self, message: Any) -> None:
        self.inbox.put(message)


def call(ref: Any, reply_to: Any, call_id: int, method: str, params: Any, timeout_s: float = 10.0) -> None:
    """Tell the worker `ref` a RuntimeCall answered to `reply_to`."""
    ref.tell(RuntimeCall(call_id=call_id, method=method, params=params, timeout_s=timeout_s, reply_to=reply_to))


def next_of(inbox: queue.Queue[Any], kind: type, timeout_s: float = 10.0) -> Any:
    """The next message of type `kind` (the others before it are dropped)."""
    while True:
        message = inbox.get(timeout=timeout_s)
        if isinstance(message, kind):
            return message


class Harness:
    def __init__(self, default_argv: list[str]) -> None:
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.recorder = Recorder.start(self.inbox)
        self.clock = FakeClock()
        self.default_argv = default_argv
        self._started: list[Any] = []

    def start(
        self,
        argv: list[str] | None = None,
        *,
        watch: WorkerWatch = WORKER_WATCH,
        fault_hook: FaultHook | None = None,
        opt_out: tuple[str, ...] = (),
    ) -> Any:
        spec = WorkerSpec(
            worker_id=7,
            generation=3,
            argv=tuple(argv or self.default_argv),
            startup_timeout_s=5.0,
            opt_out_notifications=opt_out,
        )
        ref = WorkerActor.start(
            spec,
            pool_ref=self.recorder,
            output_ref=self.recorder,
            clock=self.clock,
            watch=watch,
            fault_hook=fault_hook,
        )
        self._started.append(ref)
        return ref

    def everything_told(self) -> list[Any]:
        """What the recorder got so far (after every tell that reached it before this call), taken."""
        self.recorder.ask("sync", timeout=10.0)
        taken = []
        while not self.inbox.empty():
            taken.append(self.inbox.get_nowait())
        return [message for message in taken if message != "sync"]

    def close(self) -> None:
        for ref in self._started:
            if ref.is_alive():
                try:
                    ref.ask(StopRuntime(timeout_s=1.0), timeout=10.0)
                except pykka.ActorDeadError:
                    pass
        self.recorder.stop()


SCRIPT = textwrap.dedent("""
    import json, sys, time
    received, options = sys.argv[1], sys.argv[2:]
    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()
    def answer(message, result):
        write(json.dumps({"id": message["id"], "result": result}) + "\\n")
    for line in sys.stdin:
        with open(received, "a") as log:
            log.write(line)
        message = json.loads(line)
        method = message.get("method")
        if method == "initialize":
            if "hang-initialize" not in options:
                answer(message, {})
        elif method == "echo":
            answer(message, message.get("params"))
        elif method == "garbage":
            write("g" * 300 + "\\n")
            answer(message, {})
        elif method == "exit-mid-line":
            write("h" * 300)
            sys.exit(0)
        elif method == "ask-client":
            write(json.dumps({"id": "srv-1", "method": "item/tool/requestApproval", "params": {}}) + "\\n")
            answer(message, {})
        # "hang" and anything else: read, never answered
""")


def scripted_runtime(directory: Path, *options: str) -> tuple[list[str], Path]:
    """argv of the scripted runtime, and the file where it logs every line it reads. It answers `initialize`
    (unless "hang-initialize"), `echo` with its params, `garbage` after a 300-character unparsable line,
    `ask-client` after a server request (id "srv-1"); `exit-mid-line` writes 300 characters with no newline and
    exits 0; anything else (e.g. `hang`) is read and never answered."""
    script = directory / "scripted_runtime.py"
    script.write_text(SCRIPT)
    received = directory / "received.jsonl"
    return [sys.executable, str(script), str(received), *options], received
