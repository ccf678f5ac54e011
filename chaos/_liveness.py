"""The last phase of a campaign: once every fault is healed and the host settled, every thread completes a NEW turn
within the policies' worst-case recovery time.

Contract: `run_liveness(loop)` records "liveness_begin" (bound_s = `loop.liveness_bound_s`, computed by
chaos._supervision_checks.liveness_bound_s from the host's policies and turn timeout; threads = the campaign's
threads), then sends one plain message (no approval) on every campaign thread at once. A send the host refuses is
sent again (every 0.2 s) until the bound passes; an accepted one is never replaced. It waits until every turn
finished or the bound (counted from "liveness_begin") passed, then records one "liveness" entry per thread:
thread_id, turn_id (None if no send was accepted), status (the TurnFinished status, "unfinished" when it did not
finish within the bound, "not_sent" when every send was refused, "host_gone" when the host process died), took_s
(from "liveness_begin" to the TurnFinished event, None without one), bound_s and the last error. The liveness sends
are acknowledged sends like any other ("send" entries with op "liveness"), so the storage checks cover them too.
`check_liveness` judges the entries.
"""

from __future__ import annotations

import time
from typing import Any

from agenthost.chaos._host_process import HostGoneError

__all__ = ["run_liveness"]

_RESEND_S = 0.2


def run_liveness(loop: Any) -> None:
    bound_s = float(loop.liveness_bound_s)
    threads = list(loop.thread_ids)
    began = loop.history.add("liveness_begin", bound_s=bound_s, threads=threads).t
    deadline = began + bound_s
    turns: dict[str, str] = {}  # thread -> turn id
    errors: dict[str, str] = {}
    gone: str | None = None
    next_send = began
    try:
        while True:
            now = time.monotonic()
            if now >= next_send:
                for thread_id in threads:
                    if thread_id not in turns:
                        _send(loop, thread_id, turns, errors)
                next_send = now + _RESEND_S
            if len(turns) == len(threads) and all(turn_id in loop.finished for turn_id in turns.values()):
                break
            if time.monotonic() >= deadline:
                break
            loop.pump(min(0.05, max(0.0, deadline - time.monotonic())))
    except HostGoneError as exc:
        gone = str(exc)[:300]
    for thread_id in threads:
        turn_id = turns.get(thread_id)
        end = loop.finished.get(turn_id) if turn_id is not None else None
        if end is not None:  # took_s over bound_s (it ended during the last pump) is judged by check_liveness
            status, took_s, error = str(end.get("status")), round(float(end["t"]) - began, 3), end.get("error")
        else:
            status = "host_gone" if gone else "not_sent" if turn_id is None else "unfinished"
            took_s, error = None, gone or errors.get(thread_id)
        loop.history.add(
            "liveness", thread_id=thread_id, turn_id=turn_id, status=status, took_s=took_s, bound_s=bound_s, error=error
        )


def _send(loop: Any, thread_id: str, turns: dict[str, str], errors: dict[str, str]) -> None:
    turn_id = loop.send_text(thread_id, f"liveness: {thread_id} after every fault healed", op="liveness")
    if turn_id is not None:
        turns[thread_id] = turn_id
        return
    failed = [e for e in loop.history.entries("send_failed") if e.data.get("thread_id") == thread_id]
    if failed:
        errors[thread_id] = str(failed[-1].data.get("error"))
