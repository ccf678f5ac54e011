"""`agenthost top`: the status page's live view in a terminal (rich), for a shell or an ssh session.

Contract:
- It is a client of the service's control socket and shows what `view.snapshot` answers (agenthost._view): the
  host, the workers (state, pid, generation, restarts, a countdown to the next restart, last exit cause), the last
  supervisor decisions with their reasons, turns per second and median latency over the last 15 minutes (as
  sparklines), active turns with the tail of their streamed text, pending approvals, follow-up queues and recent
  turn ends. Read-only: it answers nothing and changes nothing.
- `run_top(client, console, interval_s, once)` asks for a snapshot every `interval_s` (at most 1 s: the screen is
  refreshed at least once a second) and redraws in the terminal's alternate screen; the countdowns advance on the
  local monotonic clock between snapshots (`clock`, injected). Ctrl-C ends it with exit 0; a service that goes
  away ends it with exit 1 and says so. `once` prints one frame to stdout (no alternate screen) and returns.
- `render(snapshot, elapsed_s, width)` is pure: the frame for a snapshot received `elapsed_s` seconds ago.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agenthost._client import ControlClient, ServiceError

__all__ = ["render", "run_top", "sparkline"]

_STATE_STYLE = {
    "ready": "bold green",
    "starting": "yellow",
    "degraded": "yellow",
    "restarting": "bold cyan",
    "given_up": "bold red",
    "stopped": "red",
}
_DECISION_STYLE = {"restart": "cyan", "give_up": "red", "escalate": "red", "kill": "red", "degrade": "yellow"}
_BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """One character per value, scaled to the largest; a missing value is a blank."""
    peak = max((v for v in values if v is not None), default=0.0) or 1.0
    return "".join(" " if v is None else _BLOCKS[min(8, round(v / peak * 8))] for v in values)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _countdown(worker: dict[str, Any], now: float) -> str:
    if worker.get("next_restart_at") is None:
        return "-"
    left = float(worker["next_restart_at"]) - now
    return f"restart in {left:.1f} s" if left > 0 else "restarting now"


def _workers(snapshot: dict[str, Any], now: float) -> Table:
    table = Table(title="workers", title_justify="left")
    for name in ("worker", "state", "pid", "gen", "restarts", "next restart", "last exit"):
        if name == "last exit":
            table.add_column(name, overflow="fold", min_width=12)
        else:
            table.add_column(name, no_wrap=True, min_width=17 if name == "next restart" else len(name))
    for w in snapshot["status"]["workers"]:
        table.add_row(
            str(w["worker_id"]),
            Text(w["state"], style=_STATE_STYLE.get(w["state"], "")),
            str(w["pid"] or "-"),
            str(w["generation"]),
            str(w["restarts"]),
            _countdown(w, now),
            w["last_exit"] or "-",
        )
    return table


def _decisions(snapshot: dict[str, Any], rows: int) -> Table:
    table = Table(title="supervisor decisions", title_justify="left", expand=True)
    for name in ("time", "decision", "who", "reason"):
        table.add_column(name, overflow="fold" if name == "reason" else "ellipsis")
    for d in snapshot["decisions"][:rows]:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(d["wall"])),
            Text(d["decision"], style=_DECISION_STYLE.get(d["decision"], "green")),
            f"{d['supervisor']} → {d['child']}",
            d["reason"],
        )
    return table


def _turns(snapshot: dict[str, Any], width: int) -> list[RenderableType]:
    parts: list[RenderableType] = []
    buckets = snapshot["series"]["buckets"]
    rates = [b["turns_per_s"] for b in buckets]
    parts.append(Text(f"turns/s  (15 min) {sparkline(rates)}  now {rates[-1]:.2f}/s", no_wrap=True))
    latencies = [b["p50_s"] for b in buckets]
    recent = next((v for v in reversed(latencies) if v is not None), None)
    parts.append(Text(f"latency  (median) {sparkline(latencies)}  last {_seconds(recent)}", no_wrap=True))
    for turn in snapshot["active"]:
        head = f"▶ {turn['turn_id']}  thread {turn['thread_id']}  worker {turn['worker_id']}  {turn['phase']}"
        if turn["pending_approvals"]:
            head += f"  waiting on {len(turn['pending_approvals'])} approval(s)"
        tail = (turn.get("text") or "").replace("\n", " ")[-max(10, width - 6) :]
        parts.append(Text(head, style="bold"))
        parts.append(Text(f"    {tail}", style="dim", no_wrap=True, overflow="ellipsis"))
    for a in snapshot["approvals"]:
        parts.append(
            Text(f"? approval {a['approval_id']} {a['method']} {a.get('command') or ''}  (turn {a['turn_id']})")
        )
    for thread_id, rows in snapshot["followups"].items():
        queued = ", ".join(f"{r['state']}: {r['text'][:30]}" for r in rows)
        parts.append(Text(f"⋯ follow-ups of {thread_id}: {queued}", no_wrap=True, overflow="ellipsis"))
    ended = "  ".join(f"{t['turn_id'][-8:]} {t['status']}" for t in snapshot["recent"][:6])
    parts.append(Text(f"recent turns: {ended or '-'}", no_wrap=True, overflow="ellipsis"))
    return parts


def render(snapshot: dict[str, Any], elapsed_s: float = 0.0, width: int = 100) -> RenderableType:
    status = snapshot["status"]
    facts = status.get("service", {})
    head = Text.assemble(
        ("agenthost top", "bold"),
        f"  host {status['state']}",
        (f" ({status['cause']})" if status.get("cause") else "", "red"),
        f"  pid {facts.get('pid')}  {len(status['active_turns'])} active turns,",
        f" {len(snapshot['approvals'])} approvals,",
        f" {snapshot['thread_count']} threads   (Ctrl-C quits)",
    )
    now = float(snapshot["now"]) + elapsed_s
    return Group(head, _workers(snapshot, now), *_turns(snapshot, width), _decisions(snapshot, 8))


def run_top(
    client: ControlClient,
    console: Console,
    interval_s: float = 0.5,
    once: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    if once:
        console.print(render(client.call("view.snapshot"), 0.0, console.width))
        return 0
    stop = threading.Event()
    try:
        with Live(console=console, screen=True, auto_refresh=False, redirect_stderr=False) as live:
            snapshot, received = client.call("view.snapshot"), clock()
            next_poll = received + interval_s
            while not stop.is_set():
                if clock() >= next_poll:
                    snapshot, received = client.call("view.snapshot"), clock()
                    next_poll = received + interval_s
                live.update(render(snapshot, clock() - received, console.width), refresh=True)
                stop.wait(min(0.1, max(0.0, next_poll - clock())))
    except KeyboardInterrupt:
        return 0
    except (ServiceError, ConnectionError, TimeoutError, OSError) as exc:
        console.print(f"agenthost top: the service went away: {exc}")
        return 1
    return 0
