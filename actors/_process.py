"""One spawned runtime process as its worker actor holds it: the process group, the stdin outbox and the threads that
read stdout and stderr (the pipes themselves are actors._pipes).

Contract: `RuntimeProcess.start(...)` spawns the runtime in its own process group (OSError if it cannot start),
then starts a stdout reader thread (decoded lines go to the inbox, the actor is told), a writer thread behind a
bounded `StdinOutbox`, and, when the spec has a `stderr_path`, a stderr thread writing the rotated `RuntimeLog` and
calling `on_error_line` for error lines. Signals always go to the whole group (a process that is gone, or not
ours, is ignored). `reap(grace_s)` waits for the leader, SIGKILLing the group if it lingers past `grace_s`.
`stop(timeout_s)` closes stdin (the writer closes it once what waits is written), waits up to `timeout_s` real
seconds, then SIGKILLs the group; it returns the exit code and how the process ended. `exit_cause(returncode)` is
the reason an exit is reported with. This is the local `RuntimeHandle` (actors._placement); a runtime placed on a
Ray cluster has the same operations (actors._ray_handle).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from agenthost.actors._pipes import (
    RuntimeLog,
    StdinOutbox,
    StdoutInbox,
    WorkerSpec,
    exit_reason,
    read_stderr,
    read_stdout,
    spawn,
)

__all__ = ["RuntimeProcess"]


class RuntimeProcess:
    def __init__(self, proc: subprocess.Popen[bytes], outbox: StdinOutbox) -> None:
        self.proc = proc
        self.outbox = outbox

    @classmethod
    def start(
        cls,
        spec: WorkerSpec,
        *,
        outbox_limit_bytes: int,
        inbox: StdoutInbox,
        actor_ref: Any,
        on_error_line: Callable[[str], None],
    ) -> RuntimeProcess:
        proc = spawn(spec)
        assert proc.stdin is not None
        name = f"worker-{spec.worker_id}-g{spec.generation}"
        outbox = StdinOutbox(proc.stdin, outbox_limit_bytes, f"{name}-stdin")
        threading.Thread(
            target=read_stdout, args=(proc.stdout, inbox, actor_ref), name=f"{name}-stdout", daemon=True
        ).start()
        if proc.stderr is not None and spec.stderr_path is not None:
            log = RuntimeLog(spec.stderr_path)
            threading.Thread(
                target=read_stderr, args=(proc.stderr, log, on_error_line), name=f"{name}-stderr", daemon=True
            ).start()
        return cls(proc, outbox)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self, grace_s: float) -> int | None:
        try:
            return self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            return self.proc.wait()

    def close_stdin(self) -> None:
        """No more input: the writer thread closes stdin once what waits is written (stdout is the reader's)."""
        self.outbox.close()

    def stop(self, timeout_s: float) -> tuple[int | None, str]:
        self.close_stdin()
        try:
            returncode: int | None = self.proc.wait(timeout=timeout_s)
            how = "stdin closed"
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            returncode = self.proc.wait()
            how = f"killed after {timeout_s:g} s"
        self.signal_group(signal.SIGKILL)  # children left behind in the group die with the leader
        return returncode, how

    def exit_cause(self, returncode: int | None) -> str:
        """Why the process ended, as the pool is told: its exit code or signal."""
        return exit_reason(returncode)

    def kill_and_wait(self) -> None:
        self.signal_group(signal.SIGKILL)
        self.proc.wait()
        self.close_stdin()
