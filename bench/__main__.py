"""`python -m bench [--quick] [--json PATH] [--repeats R] [--only all|base|issue10]`: run the comparisons once, print
a table.

Contract:
- Prints, on stdout, the machine (`os.cpu_count()`, Python version, platform, temp folder), the parameters, and for
  each comparison the two absolute rates and their ratio in % (host / floor, host / raw). Figures are reported,
  never asserted: the exit code is 0 unless a measurement crashed (then 1, with its traceback on stderr).
- Each figure is the median of R repeats (default 3; 1 with `--quick`), each repeat on fresh processes, a fresh
  storage root and fresh temp files, all in one work folder deleted only when the run ends (see `_params.in_temp`: ext4
  makes new files dearer for minutes after many were deleted); the header prints a new file's cost at the start.
  A ratio is the ratio of the two medians. Timing uses `time.perf_counter()`.
- Figure 5 (bench/_appserver.py): a turn through `agenthost app-server --runtime codex` vs `codex app-server` on the
  same binary, alternating turns (the codex turn count), p50 of each; skipped without codex.
- Figure 4 (bench/_service.py): turn latency through `agenthost serve`'s socket vs an embedded host, alternating
  turns (300; 20 with `--quick`), p50 and p90 of each and the p50 difference.
- Defaults: 5000 deltas per reply x 40 timed turns, 2000 completions, 20 codex turns (about a minute on a 2-core
  VM; the durable part scales with the temp file system's fsync cost, so a slow disk takes longer). `--quick`:
  2000 x 3, 200 completions, 3 codex turns, 1 repeat (about 5 s for these five). `--json PATH` also writes every
  figure (each repeat included) as JSON. `--repeats R` overrides R.
- Section "Issue 10: cost that does not grow", each figure printed with the issue's target and "met" / "NOT met",
  each measured once per run: its five figures and how each is measured are in bench/_issue10.py's docstring.
  On this 2-core VM, busy with other test runs (load 4-6), the section took about 50 s with `--quick` (the soak
  and the 2,000-turn thread most of it) and about 12.5 minutes in full (the 100,000-thread start-up alone > 1 min).
  `--only base` runs figures 1-5 above only, `--only issue10` the issue 10 section only (with the codex comparison
  it needs).
- Ray section (bench/_ray.py): deltas/s and a turn's round trip (p50, p90) with the runtime in a Ray actor on a
  one-node loopback cluster vs a local child process, hosts side by side, turns alternating; skipped, saying why,
  without ray. Printed after the table (not in `--json`).
- agenthost's structlog output is configured as the CLI's default (warning and above, on stderr), so the host is
  measured as it runs in production, not with every info event printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from agenthost._logging import configure
from bench import _appserver, _deltas, _durability, _handoffs, _service
from bench._issue10 import (
    CodexOverhead,
    CodexSamples,
    Issue10,
    codex_overhead,
    codex_overhead_met,
)
from bench._issue10 import format_lines as format_issue10_lines
from bench._issue10 import measure as measure_issue10
from bench._params import _WORK_ROOT, FULL, QUICK, BenchParams, in_temp
from bench._rate import Run
from bench._ray import format_section as format_ray_section
from bench._ray import run_section as run_ray_section

__all__ = [
    "BenchParams",
    "BenchReport",
    "CodexOverhead",
    "CodexSamples",
    "Issue10",
    "codex_overhead",
    "codex_overhead_met",
    "format_report",
    "main",
    "run",
]

DESIGN_TARGET_PCT = 50.0


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    cpu_count: int | None
    python: str
    platform: str
    temp_dir: str
    file_create_us: float = 0.0  # a new file's cost as the run started (see `_params.in_temp`)
    loop_ms_start: float = 0.0  # `_loop_ms` as the run started: this machine's speed for plain Python code
    loop_ms_end: float = 0.0  # the same as it ended (a virtual machine's speed drifts within a run)


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """Two medians (per second) and host / baseline in %; `*_runs` hold every repeat's rate."""

    unit: str
    baseline_per_s: float
    host_per_s: float
    ratio_pct: float
    baseline_runs: list[float]
    host_runs: list[float]


class BenchReport(msgspec.Struct, frozen=True, kw_only=True):
    machine: Machine
    params: BenchParams
    deltas: Comparison | None = None  # baseline = raw pipe + decode floor; None: not run (--only issue10)
    durability: Comparison | None = None  # baseline = raw APSW commits; None: not run
    durability_breakdown: _durability.Breakdown | None = None
    codex: Comparison | None = None  # baseline = a direct minimal client on the same codex; None: not installed
    codex_skipped: str | None = None
    service: _service.ServiceLatency | None = None  # a turn through the control socket vs embedded
    appserver: _appserver.AppServerLatency | None = None  # agenthost app-server vs codex app-server; None: no codex
    issue10: Issue10 | None = None  # None: not run (--only base)
    design_target_pct: float = DESIGN_TARGET_PCT
    seconds_total: float = 0.0


def _machine(file_create_us: float) -> Machine:
    return Machine(
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        platform=platform.platform(),
        temp_dir=tempfile.gettempdir(),
        file_create_us=file_create_us,
        loop_ms_start=_loop_ms(),
    )


LOOP_STEPS = 1_000_000


def _loop_ms(runs: int = 5) -> float:
    """Milliseconds a plain Python loop of LOOP_STEPS additions takes, median of `runs`: how fast this machine runs
    the same code, so figures of runs on different machines (or at different times) can be set side by side."""
    times = []
    for _ in range(runs):
        started, total = time.perf_counter(), 0
        for step in range(LOOP_STEPS):
            total += step
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def _repeat(measure: Callable[[Path], Run], repeats: int) -> list[float]:
    """Rates of `repeats` runs, each in its own fresh temp folder."""
    rates = []
    for _ in range(repeats):
        rates.append(in_temp(measure).per_s)
    return rates


def _compare(unit: str, baseline: Callable[[Path], Run], host: Callable[[Path], Run], repeats: int) -> Comparison:
    baseline_runs = _repeat(baseline, repeats)
    host_runs = _repeat(host, repeats)
    baseline_rate, host_rate = statistics.median(baseline_runs), statistics.median(host_runs)
    return Comparison(
        unit=unit,
        baseline_per_s=baseline_rate,
        host_per_s=host_rate,
        ratio_pct=100.0 * host_rate / baseline_rate,
        baseline_runs=baseline_runs,
        host_runs=host_runs,
    )


def run(params: BenchParams, only: str = "all") -> BenchReport:
    with tempfile.TemporaryDirectory(prefix="agenthost-bench-run-") as work_root:
        _WORK_ROOT.append(work_root)
        try:
            return _run(params, only)
        finally:
            _WORK_ROOT.pop()


def _run(params: BenchParams, only: str) -> BenchReport:
    started = time.perf_counter()
    machine = _machine(in_temp(_file_create_us))
    base, issue10 = only in ("all", "base"), only in ("all", "issue10")
    deltas = durability = breakdown = service = appserver = None
    if base:
        delta_params = _deltas.DeltaParams(deltas_per_reply=params.deltas_per_reply, turns=params.turns)
        deltas = _compare(
            "deltas/s",
            lambda work_dir: _deltas.measure_floor(delta_params, work_dir),
            lambda work_dir: _deltas.measure_host(delta_params, work_dir),
            params.repeats,
        )
        durability = _compare(
            "completions/s",
            lambda work_dir: _durability.measure_raw(params.completions, work_dir),
            lambda work_dir: _durability.measure_host(params.completions, work_dir),
            params.repeats,
        )
    codex_samples = CodexSamples()
    codex, skipped = _codex_comparison(params, codex_samples)
    if base:
        appserver = _appserver_comparison(params)
        breakdown = in_temp(lambda work_dir: _durability.measure_breakdown(params.completions, work_dir))
        service = in_temp(lambda work_dir: _service.measure(params.service_turns, work_dir))
    issue = measure_issue10(params, codex_samples, skipped) if issue10 else None
    return BenchReport(
        machine=msgspec.structs.replace(machine, loop_ms_end=_loop_ms()),
        params=params,
        deltas=deltas,
        durability=durability,
        durability_breakdown=breakdown,
        codex=codex,
        codex_skipped=skipped,
        service=service,
        appserver=appserver,
        issue10=issue,
        seconds_total=time.perf_counter() - started,
    )


def _file_create_us(folder: Path, count: int = 500) -> float:
    """Microseconds per new 200-byte file (create, write, close) in a fresh folder."""
    started = time.perf_counter()
    for index in range(count):
        (folder / f"probe-{index}").write_bytes(b"x" * 200)
    return (time.perf_counter() - started) / count * 1e6


def _appserver_comparison(params: BenchParams) -> _appserver.AppServerLatency | None:
    from agenthost.actors._runtimes import default_codex_bin

    binary = default_codex_bin()
    if binary is None:
        return None
    return in_temp(lambda work_dir: _appserver.measure(str(binary), params.codex_turns, work_dir))


def _codex_comparison(params: BenchParams, samples: CodexSamples) -> tuple[Comparison | None, str | None]:
    """The codex comparison; every timed turn's seconds go to `samples`; each repeat runs one more direct client, the
    durable direct client, and the host turn's hand-offs alone (asleep between legs as long as a direct turn)."""
    from agenthost.actors._runtimes import CODEX_CACHE, default_codex_bin

    binary = default_codex_bin()
    if binary is None:
        return None, f"codex 0.169.0 not installed under {CODEX_CACHE} (run .ci/install-codex)"
    from bench import _codex

    turns = params.codex_turns
    comparison = _compare(
        "turns/s",
        lambda work_dir: _codex.measure_direct(
            str(binary), turns, work_dir, samples=samples.direct, own=samples.direct_own
        ),
        lambda work_dir: _codex.measure_host(str(binary), turns, work_dir, samples=samples.host, own=samples.host_own),
        params.repeats,
    )
    for _ in range(params.repeats):
        in_temp(lambda work_dir: _codex.measure_direct(str(binary), turns, work_dir, samples=samples.direct_again))
        in_temp(lambda work_dir: _codex.measure_durable_direct(str(binary), turns, work_dir, own=samples.durable_own))
        _handoffs.measure(turns, statistics.median(samples.direct), samples.handoffs)  # asleep as long as codex
    return comparison, None


# --- output ------------------------------------------------------------------------------------------------------
def _rate_line(label: str, rate: float, unit: str, runs: Sequence[float]) -> str:
    each = ", ".join(f"{run:,.0f}" for run in runs)
    return f"  {label:<58} {rate:>12,.0f} {unit}   (runs: {each})"


def format_report(report: BenchReport) -> str:
    machine, params = report.machine, report.params
    lines = [
        "agenthost bench",
        f"machine: {machine.cpu_count} CPUs, Python {machine.python}, {machine.platform}, temp dir {machine.temp_dir}",
        f"a new file costs {machine.file_create_us:,.0f} us as the run starts (about 20 on a quiet disk; files "
        "deleted in the minutes before make it dearer: ext4 `recently_deleted`)",
        f"a plain Python loop of {LOOP_STEPS:,} additions takes {machine.loop_ms_start:.0f} ms as the run starts and "
        f"{machine.loop_ms_end:.0f} ms as it ends (this machine's speed for the same code; it drifts on a VM)",
        f"each figure: median of {params.repeats} repeat(s), time.perf_counter(); "
        "ratio = host median / baseline median",
        "",
        *_base_lines(report),
        *_codex_lines(report),
        *_service_lines(report),
        *_appserver_lines(report),
        *([] if report.issue10 is None else format_issue10_lines(report.issue10, report.params)),
        f"total {report.seconds_total:.1f} s (figures are reported, never asserted)",
    ]
    return "\n".join(lines)


def _base_lines(report: BenchReport) -> list[str]:
    params, deltas, durability = report.params, report.deltas, report.durability
    if deltas is None or durability is None:
        return []
    target_met = "met" if deltas.ratio_pct >= report.design_target_pct else "NOT met"
    return [
        f"1. Deltas/s, reference runtime without faults, {params.deltas_per_reply} deltas per reply, "
        f"{params.turns} timed turns (+1 untimed warm-up) per repeat",
        _rate_line(
            "floor: raw pipe, os.read 64 KiB + LineBuffer + decode_line",
            deltas.baseline_per_s,
            "deltas/s",
            deltas.baseline_runs,
        ),
        _rate_line(
            "host:  AgentHost(workers=1), every TurnHandle event consumed",
            deltas.host_per_s,
            "deltas/s",
            deltas.host_runs,
        ),
        f"  host/floor {deltas.ratio_pct:.1f} %   (design target >= {report.design_target_pct:.0f} %: {target_met})",
        "  timed per turn: send -> turn end seen; host turns include their durable begin/finish",
        "",
        f"2. Durable turn completions/s, {params.completions} completions per repeat, all in one thread",
        _rate_line(
            "raw:  APSW WAL synchronous=FULL, 256 UPDATEs per COMMIT",
            durability.baseline_per_s,
            "completions/s",
            durability.baseline_runs,
        ),
        _rate_line(
            "host: PersistenceActor group commit (CompleteTurn)",
            durability.host_per_s,
            "completions/s",
            durability.host_runs,
        ),
        f"  host/raw {durability.ratio_pct:.1f} %   (design target >= 80 %: "
        f"{'met' if durability.ratio_pct >= 80 else 'NOT met'})",
        "  host: every CompleteTurn told at once, timed until the last TurnPersisted; one completion is durable",
        "  when its reply arrives: committed (synchronous=FULL, group commit of up to 256) AND its thread's",
        "  end record appended to its transcript (one append + fsync per thread per batch). Raw: commits only.",
        *_breakdown_lines(report, durability),
        "",
    ]


def _breakdown_lines(report: BenchReport, durability: Comparison) -> list[str]:
    parts = report.durability_breakdown
    if parts is None:
        return []
    raw_us, host_us = 1e6 / durability.baseline_per_s, 1e6 / durability.host_per_s
    rest = host_us - parts.finish_rows_us - parts.transcript_us
    return [
        f"  per completion: raw {raw_us:.1f} us; host {host_us:.1f} us = rows {parts.finish_rows_us:.1f} (validate, "
        f"update, group commit)",
        f"    + transcript {parts.transcript_us:.1f} (one append + fsync per batch) + actor messaging and the "
        f"rest {rest:.1f}",
    ]


def _codex_lines(report: BenchReport) -> list[str]:
    codex = report.codex
    if codex is None:
        return [f"3. Codex turn round trip: skipped ({report.codex_skipped})", ""]
    ms = lambda rate: f"{1000.0 / rate:.1f} ms/turn"  # noqa: E731
    return [
        f"3. Codex turn round trip (codex 0.169.0, mock model, {report.params.codex_turns} timed turns per repeat)",
        _rate_line(
            "direct: minimal client on codex app-server pipes", codex.baseline_per_s, "turns/s", codex.baseline_runs
        )
        + f"  = {ms(codex.baseline_per_s)}",
        _rate_line(
            "host:   AgentHost(runtime=codex, workers=1) send+wait", codex.host_per_s, "turns/s", codex.host_runs
        )
        + f"  = {ms(codex.host_per_s)}",
        f"  host/direct {codex.ratio_pct:.1f} %  "
        f"(host adds {1000.0 / codex.host_per_s - 1000.0 / codex.baseline_per_s:.1f} "
        "ms per turn: actor hops + durable begin/finish)",
        "",
    ]


def _service_lines(report: BenchReport) -> list[str]:
    latency = report.service
    if latency is None:
        return []
    met = "met" if latency.added_p50_ms <= _service.SOCKET_TARGET_MS else "NOT met"
    return [
        f"4. A turn through the service's control socket vs embedded (built-in runtime, 1 worker, {latency.turns} "
        "turns each, alternating; both log at warning)",
        f"  embedded: AgentHost send+wait              p50 {latency.embedded_p50_ms:.2f} ms   "
        f"p90 {latency.embedded_p90_ms:.2f} ms",
        f"  service:  turns.send + turn.event stream   p50 {latency.service_p50_ms:.2f} ms   "
        f"p90 {latency.service_p90_ms:.2f} ms",
        f"  the socket adds {latency.added_p50_ms:.2f} ms at p50   (design target <= {_service.SOCKET_TARGET_MS:g} ms: "
        f"{met})",
        "",
    ]


def _appserver_lines(report: BenchReport) -> list[str]:
    latency = report.appserver
    if latency is None and report.codex_skipped is None:
        return []  # not run (--only issue10)
    if latency is None:
        return [f"5. agenthost app-server vs codex app-server: skipped ({report.codex_skipped})", ""]
    met = "met" if latency.ratio_pct >= _appserver.FRONT_END_TARGET_PCT else "NOT met"
    return [
        f"5. A turn through `agenthost app-server --runtime codex` vs `codex app-server` itself (same binary, mock "
        f"model, {latency.turns} turns each, alternating)",
        f"  direct:    codex app-server               p50 {latency.direct_p50_ms:.1f} ms",
        f"  front end: agenthost app-server (1 worker) p50 {latency.front_end_p50_ms:.1f} ms",
        f"  direct/front end {latency.ratio_pct:.1f} %, the front end adds {latency.added_p50_ms:.1f} ms at p50   "
        f"(design target >= {_appserver.FRONT_END_TARGET_PCT:g} %: {met})",
        "",
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small parameters, 1 repeat (about 40 s; smoke test)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the figures as JSON to PATH")
    parser.add_argument("--repeats", type=_positive_int, default=None, help="repeats per figure (median)")
    parser.add_argument(
        "--only",
        choices=("all", "base", "issue10"),
        default="all",
        help="base: the five comparisons; issue10: the issue 10 section (with the codex comparison); default all",
    )
    parser.add_argument(
        "--soak-turns", type=_positive_int, default=None, help="turns of the issue 10 memory soak (>= 500)"
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: must be >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure("warning")
    params = QUICK if args.quick else FULL
    if args.repeats is not None:
        params = msgspec.structs.replace(params, repeats=args.repeats)
    if args.soak_turns is not None:
        params = msgspec.structs.replace(params, soak_turns=args.soak_turns)
    report = run(params, args.only)  # a crashed measurement raises: traceback on stderr, exit 1
    print(format_report(report), flush=True)
    if getattr(args, "only", "all") != "issue10":  # Ray placement vs local placement (bench/_ray.py)
        print(format_ray_section(*run_ray_section(args.quick)), flush=True)
    if args.json is not None:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
