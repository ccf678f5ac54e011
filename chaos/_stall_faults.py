"""The campaign's RuntimeStopsReading fault: a runtime that stops reading its stdin while a big turn is sent to it.

Contract (`StallFaults(loop).stop_reading(fault, index, worker_id, op_index)`; the detail, or None when skipped):
- The runner waits (bounded: 5 s) until the worker is up, picks a campaign thread pinned to it (or, when none is, a
  thread pinned to another live worker, named in the detail), waits (bounded: the turn timeout + 0.5 s) until that
  thread has no open turn, runs a small warm-up turn on it (at most twice) until one completes on the worker's
  current process (so the thread is loaded there and the next call is the big turn/start, not a small
  thread/resume), SIGSTOPs the worker's process group and sends `size_kib` KiB of text on the thread (warm-up and
  big sends are acknowledged sends like any other, with `fault` set), then waits (bounded: the request timeout +
  1.5 s, the call's deadline and then the kill) for the detection before the next fault can pre-empt it. Skipped
  (a "stall_skipped" note with the pins) when no campaign thread is pinned to a live worker or the worker is not up.
- A "stall_detected" note records the pool's "kill" decision for that worker generation (`match`, fed every
  supervisor "kill" decision of this host), a "stall_not_detected" note the SIGCONT of a group that was still
  waiting for one: after `ops` ops but never before the request timeout + 1 s, at any heal (`resume_stopped`), and
  before a host is replaced.
"""

from __future__ import annotations

import functools
import signal
import time
from typing import TYPE_CHECKING, Any

from agenthost.chaos._schedule import RuntimeStopsReading
from agenthost.chaos._worker_faults import continue_group
from agenthost.protocol._faults import kill_process_group

if TYPE_CHECKING:
    from agenthost.chaos._campaign_loop import CampaignLoop

__all__ = ["StallFaults"]


class StallFaults:
    """The RuntimeStopsReading faults of one campaign loop: the runtimes they stopped and the stalls not yet seen."""

    def __init__(self, loop: CampaignLoop) -> None:
        self.loop = loop
        self.stopped_pids: set[int] = set()  # runtimes SIGSTOPped by RuntimeStopsReading
        self.stalls: dict[int, tuple[int, int, int]] = {}  # fault index -> (pid, worker, generation): not found yet

    def stop_reading(self, fault: RuntimeStopsReading, index: int, worker_id: int, op_index: int) -> str | None:
        loop = self.loop
        loop.worker_pid(worker_id)  # a worker that is restarting: wait (bounded) until it is up again
        picked = self._stall_thread(worker_id)
        if picked is not None:
            loop.wait_thread_idle(picked[0], loop.settings.turn_timeout_s + 0.5)
            picked = self._warm_up(picked, index, op_index)
        pid = None if picked is None else loop.worker_pid(picked[1], wait_s=0.0)
        if picked is None or pid is None:
            pins = loop.status.get("pins", {})
            loop.history.add("note", what="stall_skipped", fault=index, worker=worker_id, pins=pins)
            return None
        thread_id, worker_id = picked
        kill_process_group(pid, signal.SIGSTOP)
        self.stopped_pids.add(pid)
        # ops can take milliseconds: stay stopped past the call's deadline (+ grace), or the runtime would read on
        not_before = time.monotonic() + loop.settings.request_timeout_s + 1.0
        loop.timed.append((op_index + fault.ops, functools.partial(self._resume_stopped_after, pid, not_before)))
        generation = next(
            (int(w["generation"]) for w in loop.status.get("workers", ()) if int(w["worker_id"]) == worker_id), 0
        )
        self.stalls[index] = (pid, worker_id, generation)
        filler = "the runtime stopped reading its stdin; " * (fault.size_kib * 1024 // 39 + 1)
        text = f"op {op_index}: stall {index}: {filler[: fault.size_kib * 1024]}"
        turn_id = loop.send_text(thread_id, text, op=op_index, fault=index)
        if turn_id is not None:  # the next faults (a host kill...) would otherwise pre-empt the detection
            loop.pump_until(lambda: index not in self.stalls, loop.settings.request_timeout_s + 1.5, 0.02)
        return f"SIGSTOP pid {pid} (worker {worker_id}), {fault.size_kib} KiB on {thread_id}: turn {turn_id}"

    def _warm_up(self, picked: tuple[str, int], index: int, op_index: int) -> tuple[str, int] | None:
        """A small turn on the thread first (twice at most) until one completes on the worker's current process: the
        thread is then loaded there, so the big turn/start goes out at once (a thread that must be resumed first
        would send a small thread/resume, which only times out). The (thread, worker) to stall, or None."""
        loop = self.loop
        for _ in range(2):
            found = self._stall_thread(picked[1], prefer=picked[0])
            if found is None:
                return None
            picked = found
            warm_up = loop.send_text(picked[0], f"op {op_index}: warm-up for stall {index}", op=op_index, fault=index)
            done = warm_up is not None and loop.wait_turn(warm_up, loop.settings.turn_timeout_s + 0.5)
            if done and loop.finished.get(str(warm_up), {}).get("status") == "completed" and self.is_bound(*picked):
                break
        return self._stall_thread(picked[1], prefer=picked[0])

    def _stall_thread(self, worker_id: int, prefer: str | None = None) -> tuple[str, int] | None:
        """(thread, worker): a campaign thread pinned to `worker_id` (`prefer` first, then idle ones), or else one
        pinned to another worker that is up; None when no campaign thread is pinned to a live worker."""
        loop = self.loop
        status = loop.refresh_status()
        live = {int(w["worker_id"]) for w in status.get("workers", ()) if w["state"] in ("ready", "degraded")}
        pins = {t: int(w) for t, w in status.get("pins", {}).items() if t in loop.thread_ids and int(w) in live}
        busy = {loop.turn_threads.get(turn_id) for turn_id in loop.open}

        def rank(thread_id: str) -> tuple[bool, bool, bool, bool, str]:
            ran_there = self.is_bound(thread_id, pins[thread_id])
            return (pins[thread_id] != worker_id, thread_id != prefer, not ran_there, thread_id in busy, thread_id)

        ranked = sorted(pins, key=rank)
        return (ranked[0], pins[ranked[0]]) if ranked else None

    def is_bound(self, thread_id: str, worker_id: int) -> bool:
        """The thread's last turn completed on the worker's current process: its runtime thread is loaded there, so
        its next turn/start goes out at once (a thread that must be resumed first sends a small thread/resume)."""
        return self.loop.bound.get(thread_id) == (worker_id, self.loop.generations.get(worker_id, -1))

    def match(self, event: dict[str, Any]) -> None:
        """A pool "kill" decision because a runtime stopped reading its stdin: the stall it detected."""
        if "stopped reading its stdin" not in str(event.get("reason")):
            return
        for index, (pid, worker_id, generation) in list(self.stalls.items()):
            if event.get("child") == f"worker-{worker_id}" and event.get("generation") == generation:
                del self.stalls[index]
                self.loop.history.add("note", what="stall_detected", fault=index, worker=worker_id, pid=pid)

    def _resume_stopped_after(self, pid: int, not_before: float) -> None:
        if pid not in self.stopped_pids:
            return
        if time.monotonic() < not_before:  # expired by ops but too early: look again at the next op
            self.loop.timed.append(
                (self.loop.op_index + 1, functools.partial(self._resume_stopped_after, pid, not_before))
            )
            return
        self.resume_stopped(pid)

    def resume_stopped(self, pid: int | None = None) -> None:
        """SIGCONT the group of a runtime RuntimeStopsReading stopped (every one when `pid` is None)."""
        for stopped in sorted(self.stopped_pids) if pid is None else [pid]:
            self.stopped_pids.discard(stopped)
            for index in [i for i, stall in self.stalls.items() if stall[0] == stopped]:
                del self.stalls[index]
                self.loop.history.add("note", what="stall_not_detected", fault=index, pid=stopped)
            continue_group(stopped)
