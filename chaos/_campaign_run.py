"""The campaign loop, op by op, then its finish: what `run_campaign` and `run_schedule` both drive.

Contract (`run_loop(loop, *, progress=None, close=True)`, the loop's first host already started by the caller):
- The campaign threads are created first. For op i of the schedule: inject the faults scheduled at i, expire timed
  faults (clear fault knobs, SIGCONT hung or stopped runtimes, heal the disk, disarm an actor crash that never
  fired), replace a host that reports "failed" (when the loop may: a "host_failed" note; the host policy gave up,
  e.g. after persistent storage faults; recorded, not a violation by itself), wait (bounded: 3 turn timeouts +
  10 s, else a "stalled" note) until fewer than `max_inflight` turns are open, send op i. A host process that dies
  or stops answering during an op is a "host_gone" note: it is killed and a new one is started on the same root.
  `progress(line)` is called every 100 ops.
- After the last op: heal everything, wait for open turns (bounded by `drain_timeout_s`; turns the host ended or
  reconciled over 5 s ago whose caller was still not told are not waited for, but recorded in a "never_told"
  note), replace a host that reports "failed", let workers settle (op settle, 60 s at most), record the final
  status ("final_status" note, or "final_status_failed") and fd count, then the liveness phase (chaos._liveness:
  one new message on every campaign thread, each must complete within the loop's `liveness_bound_s`).
- `close` True: SIGCONT every process of the root, shut the host down cleanly and record a clean "host_stop";
  False (an embedded host, the caller's to shut down): the host is left running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from agenthost.chaos._campaign_loop import CampaignLoop
from agenthost.chaos._host_process import HostGoneError
from agenthost.chaos._liveness import run_liveness
from agenthost.chaos._schedule import FaultEvent

__all__ = ["run_loop"]


def run_loop(loop: CampaignLoop, *, progress: Callable[[str], None] | None = None, close: bool = True) -> None:
    """Drive the whole schedule through `loop` (host started by the caller), then drain and stop the host."""
    schedule = loop.schedule
    by_op: dict[int, list[tuple[int, FaultEvent]]] = {}
    for index, event in enumerate(schedule.events):
        by_op.setdefault(event.at, []).append((index, event))
    for thread_id in loop.thread_ids:
        loop.host.request("create_thread", thread_id=thread_id)
    loop.pump(0.0)
    stall_s = 3 * loop.settings.turn_timeout_s + 10.0
    started = time.monotonic()
    for op_index in range(len(schedule.ops)):
        try:
            _one_op(loop, op_index, by_op.get(op_index, ()), stall_s)
        except HostGoneError as exc:
            loop.history.add("note", what="host_gone", error=str(exc)[:300])
            loop.host.kill()
            loop.replace_host(f"host process died: {exc}", killed=True)
        if progress and (op_index + 1) % 100 == 0:
            injected = sum(loop.injected.values())
            progress(
                f"op {op_index + 1}/{len(schedule.ops)}: {injected} faults injected, "
                f"{loop.host_processes} host processes, {time.monotonic() - started:.1f} s"
            )
    _finish(loop, close)


def _one_op(loop: CampaignLoop, op_index: int, events: Iterable[tuple[int, FaultEvent]], stall_s: float) -> None:
    loop.pump(0.0)
    for index, event in events:
        loop.inject(index, event, op_index)
    loop.expire(op_index)
    _replace_if_failed(loop, loop.refresh_status())
    if not loop.wait_capacity(loop.settings.max_inflight, stall_s):
        loop.history.add("note", what="stalled", open=sorted(loop.open)[:20])
    loop.send(op_index)


def _replace_if_failed(loop: CampaignLoop, status: dict[str, Any]) -> None:
    """A failed host never recovers by itself: replace it (when the loop may)."""
    if status["state"] == "failed" and loop.can_kill_host:
        loop.history.add("note", what="host_failed", cause=status.get("cause"))
        loop.host.close()
        loop.replace_host(f"host failed: {status.get('cause')}", killed=False)


def _finish(loop: CampaignLoop, close: bool = True) -> None:
    loop.clear_all_faults()
    loop.wait_drained(loop.settings.drain_timeout_s)
    loop.pump(0.2)
    try:
        _replace_if_failed(loop, loop.refresh_status())
        status = loop.host.request("settle", timeout_s=60.0)
        loop.history.add("note", what="final_status", **status)
        loop.note_fds()
    except (HostGoneError, RuntimeError) as exc:
        loop.history.add("note", what="final_status_failed", error=str(exc)[:300])
    run_liveness(loop)
    if close:
        loop.worker_faults.continue_all()
        loop.host.close()
        loop.worker_faults.continue_all()
        loop.pump(0.5)
        loop.history.add("host_stop", clean=True)
