"""The campaign's runtime worker faults: signals to a worker's process group and the reference runtime's live knobs.

Contract (`WorkerFaults(loop).inject(fault, target, op_index)`, target "worker:<n>"; the detail, or None when the
fault is skipped):
- WorkerKill9: SIGKILL the worker's process group once it is up (waits at most 5 s; skipped when it is not).
- With the builtin runtime, the faults are live knobs of the worker's `RuntimeFaults` (op set_faults): WorkerHang
  sets `stop_self` (the runtime SIGSTOPs itself at its next turn start or delta) and, after `resume_after_ops`
  ops, clears it and SIGCONTs the worker's current process group and every group already hung; StdoutGarbage
  (`garbage_before_turn`) is cleared after `ops` ops once the host has seen a garbage line of that worker
  ("worker.protocol_error"), at the latest GARBAGE_GRACE_OPS (10) ops later (ops are a few ms apart: a worker that
  is restarting would otherwise start no turn while the knob is on); SlowStream (`delta_delay_s`) is cleared after
  `ops` ops; EofMidLine
  (`eof_mid_line`) is cleared after the worker's next exit or 3 ops; CrashOnStart SIGKILLs the worker's process
  group (skipped when it is not up) with `crash_on_start` set, cleared after `restarts` + 1 exits.
- With another runtime (codex), WorkerHang SIGSTOPs the worker's process group for `resume_after_ops` ops; the
  knob faults are skipped.
- A knob the host refuses to set is a "set_faults_failed" note. `continue_all()` SIGCONTs every process under the
  loop's root but the host itself (a runtime that stopped itself after its host was killed would otherwise never
  read the EOF that tells it to exit); `continue_group(pid)` SIGCONTs one process group, ignoring one that is gone,
  ours or not ours to signal.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import TYPE_CHECKING, Any

import msgspec

from agenthost.chaos._host_process import HostGoneError
from agenthost.chaos._schedule import (
    CrashOnStart,
    EofMidLine,
    Fault,
    SlowStream,
    StdoutGarbage,
    WorkerHang,
    WorkerKill9,
)
from agenthost.protocol._faults import RuntimeFaults, kill_process_group

if TYPE_CHECKING:
    from agenthost.chaos._campaign_loop import CampaignLoop

__all__ = ["WorkerFaults", "continue_group"]

_FILE_KNOB_FAULTS = (WorkerHang, StdoutGarbage, EofMidLine, SlowStream, CrashOnStart)
GARBAGE_GRACE_OPS = 10  # StdoutGarbage: ops past its own before it is cleared without a garbage line seen
_KnobFault = WorkerHang | StdoutGarbage | EofMidLine | SlowStream | CrashOnStart


def continue_group(pid: int) -> None:
    """SIGCONT the process group of `pid`; a group that is gone, ours or not ours to signal is left alone."""
    try:
        kill_process_group(pid, signal.SIGCONT)
    except (ValueError, PermissionError):
        pass


class WorkerFaults:
    """The runtime worker faults of one campaign loop, and the knobs and hung processes they left."""

    def __init__(self, loop: CampaignLoop) -> None:
        self.loop = loop
        self.file_faults: dict[int, dict[str, Any]] = {}  # worker -> knob -> value
        self.hung_pids: set[int] = set()

    def inject(self, fault: Fault, target: str, op_index: int) -> str | None:
        loop = self.loop
        builtin = loop.settings.runtime == "builtin"
        worker_id = int(target.split(":", 1)[1])
        if isinstance(fault, WorkerKill9):
            pid = loop.worker_pid(worker_id)
            if pid is None:
                return None
            kill_process_group(pid, signal.SIGKILL)
            return f"SIGKILL pid {pid}"
        if isinstance(fault, WorkerHang) and not builtin:
            pid = loop.worker_pid(worker_id)
            if pid is None:
                return None
            kill_process_group(pid, signal.SIGSTOP)
            self.hung_pids.add(pid)
            loop.timed.append((op_index + fault.resume_after_ops, self.resume_hung))
            return f"SIGSTOP pid {pid} for {fault.resume_after_ops} ops"
        if not builtin or not isinstance(fault, _FILE_KNOB_FAULTS):
            return None
        return self._file_fault(fault, worker_id, op_index)

    def _file_fault(self, fault: _KnobFault, worker_id: int, op_index: int) -> str | None:
        if isinstance(fault, WorkerHang):
            pid = self.loop.worker_pid(worker_id, wait_s=0.0)
            if pid is not None:
                self.hung_pids.add(pid)
            self.set_knob(worker_id, "stop_self", True)
            self.loop.timed.append((op_index + fault.resume_after_ops, functools.partial(self._unhang, worker_id)))
            return f"stop_self for {fault.resume_after_ops} ops (pid {pid})"
        if isinstance(fault, StdoutGarbage):
            self._garbage_until_seen(worker_id, op_index + fault.ops)
            return f"garbage_before_turn for {fault.ops} ops"
        if isinstance(fault, SlowStream):
            self._set_knob_until(worker_id, "delta_delay_s", fault.delay_s, op_index + fault.ops)
            return f"delta_delay_s={fault.delay_s} for {fault.ops} ops"
        if isinstance(fault, EofMidLine):
            self._set_knob_until(worker_id, "eof_mid_line", True, op_index + 3)
            self._clear_after_exits(worker_id, "eof_mid_line", 1)
            return "eof_mid_line at the next turn start or delta"
        pid = self.loop.worker_pid(worker_id)
        if pid is None:
            return None
        self.set_knob(worker_id, "crash_on_start", True)
        self._clear_after_exits(worker_id, "crash_on_start", fault.restarts + 1)
        kill_process_group(pid, signal.SIGKILL)
        return f"SIGKILL pid {pid}, then {fault.restarts} crashing starts"

    def _set_knob_until(self, worker_id: int, knob: str, value: Any, until_op: int) -> None:
        """Set the knob now; clear it once op `until_op` is reached."""
        self.set_knob(worker_id, knob, value)
        self.loop.timed.append((until_op, functools.partial(self.set_knob, worker_id, knob, None)))

    def _garbage_until_seen(self, worker_id: int, until_op: int) -> None:
        """Set garbage_before_turn now; clear it once op `until_op` is reached and the host saw a garbage line of
        the worker, or at op `until_op` + GARBAGE_GRACE_OPS whatever happened."""
        self.set_knob(worker_id, "garbage_before_turn", True)
        state = {"seen": False, "due": False, "cleared": False}

        def clear() -> None:
            if not state["cleared"]:
                state["cleared"] = True
                self.set_knob(worker_id, "garbage_before_turn", None)

        def due() -> None:
            state["due"] = True
            if state["seen"]:
                clear()

        def watcher(event: dict[str, Any]) -> bool:
            if event.get("event") == "worker.protocol_error" and event.get("worker") == worker_id:
                state["seen"] = True
                if state["due"]:
                    clear()
            return state["cleared"] or state["seen"]

        self.loop.watchers.append(watcher)
        self.loop.timed.append((until_op, due))
        self.loop.timed.append((until_op + GARBAGE_GRACE_OPS, clear))

    def _clear_after_exits(self, worker_id: int, knob: str, exits: int) -> None:
        seen = [0]

        def watcher(event: dict[str, Any]) -> bool:
            if event.get("event") == "worker.exited" and event.get("worker") == worker_id:
                seen[0] += 1
                if seen[0] >= exits:
                    self.set_knob(worker_id, knob, None)
                    return True
            return False

        self.loop.watchers.append(watcher)

    def set_knob(self, worker_id: int, knob: str, value: Any) -> None:
        knobs = self.file_faults.setdefault(worker_id, {})
        if value is None:
            if knobs.pop(knob, None) is None:
                return
        else:
            knobs[knob] = value
        faults = RuntimeFaults(**knobs) if knobs else None
        try:
            self.loop.host.request(
                "set_faults", worker_id=worker_id, faults=None if faults is None else msgspec.to_builtins(faults)
            )
        except (HostGoneError, RuntimeError) as exc:
            self.loop.history.add("note", what="set_faults_failed", worker=worker_id, error=str(exc)[:200])

    def clear_knobs(self, remote: bool) -> None:
        """Forget every knob; `remote`: clear each on its worker first."""
        if remote:
            for worker_id in list(self.file_faults):
                for knob in list(self.file_faults[worker_id]):
                    self.set_knob(worker_id, knob, None)
        self.file_faults = {}

    def _unhang(self, worker_id: int) -> None:
        self.set_knob(worker_id, "stop_self", None)
        pid = self.loop.worker_pid(worker_id, wait_s=0.0)
        if pid is not None:
            self.hung_pids.add(pid)
        self.resume_hung()

    def continue_all(self) -> None:
        """SIGCONT every process of this root: a runtime that stopped itself (stop_self) after its host was killed
        could otherwise never read the EOF that tells it to exit."""
        from agenthost.chaos._invariants import processes_under

        if self.loop.root is None:
            return
        for pid, _ in processes_under(self.loop.root, exclude=frozenset({self.loop.host.pid})):
            try:
                os.kill(pid, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass

    def resume_hung(self) -> None:
        for pid in sorted(self.hung_pids):
            continue_group(pid)
        self.hung_pids.clear()
