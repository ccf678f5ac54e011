"""`agenthost url` and `agenthost top`: the ways to look at a running service.

Contract:
- `agenthost url --root R` prints the status page's full URL, token included (`http://127.0.0.1:PORT/?token=...`),
  read from the running service (its `--http` address, in `status`'s service facts) and `R/system/http-token`.
  Exit 1 when no service runs on R or it runs without `--http`. The URL is a secret: whoever has it can answer
  approvals.
- `agenthost top --root R [--interval S] [--once]`: agenthost._top against the running service; exit 1 when none
  runs. `--interval` must be a number of seconds in [0.05, 1] (the screen refreshes at least once a second),
  otherwise exit 2 naming it.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from agenthost._cli_client import service_for
from agenthost._http_auth import read_token
from agenthost.storage import MigrationError, StorageRoot, resolve_root

__all__ = ["VIEW_COMMANDS", "add_view_parsers", "run_view_command"]

VIEW_COMMANDS = ("url", "top")


def add_view_parsers(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    url = commands.add_parser(
        "url", help="print the status page's URL with its token (service with --http)", formatter_class=formatter
    )
    url.add_argument("--root", required=True, help="storage root of the running service")
    top = commands.add_parser("top", help="live view of a running service in the terminal", formatter_class=formatter)
    top.add_argument("--root", required=True, help="storage root of the running service")
    top.add_argument("--interval", type=float, default=0.5, metavar="S", help="seconds between snapshots (<= 1)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")


def run_view_command(args: argparse.Namespace) -> int:
    if args.command == "top" and (not math.isfinite(args.interval) or not 0.05 <= args.interval <= 1.0):
        raise ValueError(f"--interval {args.interval!r} is invalid: must be between 0.05 and 1 second")
    client = service_for(args.root) if StorageRoot(args.root).root.exists() else None
    if client is None:
        print(f"agenthost: no service runs on {args.root!r} (start one with `agenthost serve`)", file=sys.stderr)
        return 1
    with client:
        if args.command == "url":
            return _url(client.call("status").get("service", {}), args.root)
        from rich.console import Console

        from agenthost._top import run_top

        return run_top(client, Console(), args.interval, args.once)


def _url(facts: dict[str, Any], root_arg: str) -> int:
    base = facts.get("http")
    if not base:
        print(f"agenthost: the service on {root_arg!r} runs without --http: no status page", file=sys.stderr)
        return 1
    try:
        root = resolve_root(StorageRoot(root_arg))
    except MigrationError as exc:
        raise ValueError(str(exc)) from None
    token = read_token(root.system_dir)
    if token is None:
        print(f"agenthost: no token in {root.system_dir / 'http-token'}", file=sys.stderr)
        return 1
    print(f"{base}?token={token}")
    return 0
