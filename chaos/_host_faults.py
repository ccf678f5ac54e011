"""The campaign's faults of the host process itself: its storage, a kill of the whole process, a crash of one actor.

Contract (each returns the detail, or None when the fault is skipped):
- `storage(fault, op_index)`, with the host's storage fault seams (`settings.storage_faults`, else skipped; a host
  that refuses is skipped too): StorageIOError (op storage_fault "io": the `nth` `op` call fails, every later one
  too while `persistent`), DiskFull ("full") and SlowDisk ("slow": the next `syncs` syncs are delayed by `delay_s`)
  are healed after `ops` ops, TranscriptStepFailure ("fs": the next atomic replace fails at `step`) after 2 ops.
  The detail is the request's JSON. A heal the host refuses is a "heal_failed" note.
- `kill_host(fault)` (skipped unless the loop may kill its host): StorageCrash first cuts the power (op power_cut:
  unsynced database bytes are dropped; skipped without storage fault seams), HostKill9 does not; then the host
  process is SIGKILLed, its pending heals are dropped (the next host starts healed) and a new host process is
  started on the same root (chaos._campaign_loop `replace_host`).
- `actor_crash(fault, index, op_index)` (skipped when the loop cannot crash actors or the host refuses) arms the
  host's `ArmableHook` (op actor_crash): `child` crashes at its next `message`. After `ops` ops it is disarmed and
  an "actor_crash_fired" or "actor_crash_not_fired" note records whether it fired ("disarm_failed" when the host
  did not answer).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from agenthost.chaos._host_process import HostGoneError
from agenthost.chaos._schedule import (
    ActorCrash,
    DiskFull,
    HostKill9,
    SlowDisk,
    StorageCrash,
    StorageIOError,
    TranscriptStepFailure,
)

if TYPE_CHECKING:
    from agenthost.chaos._campaign_loop import CampaignLoop

__all__ = ["STORAGE_FAULTS", "HostFaults"]

STORAGE_FAULTS = (StorageIOError, DiskFull, TranscriptStepFailure, SlowDisk)
_StorageFault = StorageIOError | DiskFull | TranscriptStepFailure | SlowDisk


class HostFaults:
    """The storage, host-kill and actor-crash faults of one campaign loop."""

    def __init__(self, loop: CampaignLoop) -> None:
        self.loop = loop

    def storage(self, fault: _StorageFault, op_index: int) -> str | None:
        if not self.loop.settings.storage_faults:
            return None
        spec: dict[str, Any]
        if isinstance(fault, StorageIOError):
            spec = {"what": "io", "io_op": fault.op, "nth": fault.nth, "persistent": fault.persistent}
            until = op_index + fault.ops
        elif isinstance(fault, DiskFull):
            spec = {"what": "full"}
            until = op_index + fault.ops
        elif isinstance(fault, SlowDisk):
            spec = {"what": "slow", "delay_s": fault.delay_s, "syncs": fault.syncs}
            until = op_index + fault.ops
        else:
            spec = {"what": "fs", "step": fault.step}
            until = op_index + 2
        try:
            self.loop.host.request("storage_fault", **spec)
        except (HostGoneError, RuntimeError):
            return None
        self.loop.timed.append((until, self.heal_storage))
        return json.dumps(spec)

    def heal_storage(self) -> None:
        try:
            self.loop.host.request("storage_fault", what="heal")
        except (HostGoneError, RuntimeError) as exc:
            self.loop.history.add("note", what="heal_failed", error=str(exc)[:200])

    def kill_host(self, fault: HostKill9 | StorageCrash) -> str | None:
        loop = self.loop
        if not loop.can_kill_host:
            return None
        pid = loop.host.pid
        if isinstance(fault, StorageCrash):
            if not loop.settings.storage_faults:
                return None
            try:
                loop.host.request("power_cut", timeout_s=5.0)
            except (HostGoneError, RuntimeError):
                pass
        loop.host.kill()
        loop.timed = [(until, undo) for until, undo in loop.timed if undo != self.heal_storage]
        loop.replace_host(type(fault).__name__, killed=True)
        return f"host pid {pid} killed; new host pid {loop.host.pid}"

    def actor_crash(self, fault: ActorCrash, index: int, op_index: int) -> str | None:
        if not self.loop.can_crash_actors:
            return None
        try:
            self.loop.host.request("actor_crash", what="arm", child=fault.child, message=fault.message)
        except (HostGoneError, RuntimeError):
            return None
        self.loop.timed.append((op_index + fault.ops, functools.partial(self._disarm_crash, index, fault)))
        return f"armed: {fault.child} crashes at its next {fault.message}"

    def _disarm_crash(self, index: int, fault: ActorCrash) -> None:
        try:
            fired = self.loop.host.request("actor_crash", what="disarm")
        except (HostGoneError, RuntimeError) as exc:
            self.loop.history.add("note", what="disarm_failed", fault=index, error=str(exc)[:200])
            return
        what = "actor_crash_fired" if fired else "actor_crash_not_fired"
        self.loop.history.add("note", what=what, fault=index, child=fault.child, message=fault.message)
