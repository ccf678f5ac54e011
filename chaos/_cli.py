"""`agenthost chaos run`: a seeded fault-injection campaign against a host subprocess, with invariant checks.

Contract:
- `agenthost chaos run --seed N --faults 1000 [--runtime builtin|codex] [--codex-bin PATH] [--kinds A,B,...]
  [--workers 2] [--root DIR] [--report PATH] [--history PATH] [--no-shrink]` prints the seed and the commit first,
  progress every 100 ops on stderr, then a summary; writes the JSON report (faults injected/skipped by kind,
  invariants checked, violations each with a reproducer: seed + schedule prefix, shrunk when cheap) to `--report`.
- `--root` defaults to a new temporary folder (kept, its path printed). Exit 0 when no invariant was violated, 1 when
  one was, 2 on bad input (the message names the value). `--runtime codex` uses `--codex-bin` or the binary
  `.ci/install-codex` installed; runtime fault knobs do not apply to codex and are counted as skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

from agenthost._cli_common import HelpFormatter
from agenthost.actors._runtimes import CODEX_CACHE, default_codex_bin

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `chaos run` to the `agenthost` command line (entry point group "agenthost.commands")."""
    formatter = HelpFormatter
    chaos: argparse.ArgumentParser = subparsers.add_parser(
        "chaos", help="seeded fault-injection campaigns with invariant checks", formatter_class=formatter
    )
    actions = chaos.add_subparsers(dest="chaos_command", required=True, metavar="ACTION")
    campaign = actions.add_parser("run", help="run one campaign", formatter_class=formatter)
    campaign.add_argument("--seed", type=int, required=True, help="the one seed every random choice comes from")
    campaign.add_argument("--faults", type=int, default=200, help="number of faults to inject")
    campaign.add_argument("--runtime", choices=("builtin", "codex"), default="builtin", help="runtime to host")
    campaign.add_argument(
        "--codex-bin", default=None, help=f"native codex binary (runtime codex; default: the one under {CODEX_CACHE})"
    )
    campaign.add_argument("--kinds", default=None, help="comma-separated fault kinds (default: all)")
    campaign.add_argument("--workers", type=int, default=2, help="runtime workers of the host")
    campaign.add_argument("--root", default=None, help="storage root (default: a new temporary folder)")
    campaign.add_argument("--report", default=None, help="write the JSON report here")
    campaign.add_argument("--history", default=None, help="write the recorded history (JSON lines) here")
    campaign.add_argument("--no-shrink", action="store_true", help="do not re-run to shrink reproducers")
    return chaos


def run(args: argparse.Namespace) -> int:
    from agenthost.chaos._campaign import run_campaign
    from agenthost.chaos._campaign_report import git_commit
    from agenthost.chaos._campaign_settings import CampaignSettings
    from agenthost.chaos._schedule import FAULT_KINDS, generate_schedule

    kinds = tuple(k.strip() for k in args.kinds.split(",")) if args.kinds else FAULT_KINDS
    if args.runtime == "codex" and not args.codex_bin:
        found = default_codex_bin()
        args.codex_bin = None if found is None else str(found)
    if args.runtime == "codex" and not args.codex_bin:
        print(f"agenthost: --runtime codex needs --codex-bin (none installed under {CODEX_CACHE})", file=sys.stderr)
        return 2
    try:
        schedule = generate_schedule(args.seed, args.faults, kinds, workers=args.workers)
    except ValueError as exc:
        print(f"agenthost: {exc}", file=sys.stderr)
        return 2
    root = args.root or tempfile.mkdtemp(prefix=f"agenthost-chaos-{args.seed}-")
    print(
        f"chaos: seed={args.seed} commit={git_commit() or 'unknown'} faults={args.faults} runtime={args.runtime} "
        f"root={root}",
        flush=True,
    )
    settings = CampaignSettings(runtime=args.runtime, codex_bin=args.codex_bin)
    result = run_campaign(
        schedule,
        root,
        settings,
        shrink=not args.no_shrink,
        history_path=args.history,
        progress=lambda line: print(f"chaos: {line}", file=sys.stderr, flush=True),
    )
    report = _report(result)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    _print_summary(report)
    return 1 if result.violations else 0


def _report(result: Any) -> dict[str, Any]:
    import msgspec

    report: dict[str, Any] = msgspec.to_builtins(result)
    return report


def _print_summary(report: dict[str, Any]) -> None:
    injected = sum(report["faults_injected"].values())
    print(
        f"chaos: {injected}/{report['faults_scheduled']} faults injected in {report['duration_s']:.1f} s; "
        f"{report['turns_acknowledged']} turns acknowledged {report['turns_by_status']}; "
        f"{report['host_processes']} host processes"
    )
    print(f"chaos: injected by kind {report['faults_injected']}; skipped {report['faults_skipped']}")
    print(f"chaos: invariants checked: {', '.join(report['invariants_checked'])}")
    print(f"chaos: {report['violations_total']} violations ({len(report['violations'])} reported)")
    for violation in report["violations"]:
        print(
            f"  - {violation['invariant']}: {violation['message']} "
            f"(reproducer: seed {violation['reproducer']['seed']}, "
            f"{len(violation['reproducer']['schedule']['events'])} faults)"
        )
