"""`agenthost app-server`: the drop-in `codex app-server` front end on stdio (agenthost._appserver has the protocol).

Contract: `--root DIR` runs an embedded host on DIR (created if missing) with the same runtime options as `send`
(`--runtime builtin|codex`, `--codex-bin`, `-c key=value` passed to codex), so `agenthost app-server --root R
--runtime codex --codex-bin C -c k=v` replaces `C app-server -c k=v`. `--connect DIR` uses the `agenthost serve`
that holds DIR instead, through its control socket, so several clients share one supervised pool (the runtime
options are then the service's: giving them is refused). `--listen` accepts only `stdio://` (codex's default);
`--analytics-default-enabled` is accepted and ignored, as clients pass it. stdout carries the protocol only; logs
go to stderr. Exit 0 when stdin closes; 1 when the host cannot start or no service answers; 2 on bad options.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from agenthost._cli_common import HelpFormatter, codex_bin, runtime_options

__all__ = ["add_appserver_parser", "run_appserver"]


def add_appserver_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "app-server",
        help="serve the codex app-server protocol on stdio, backed by agenthost",
        formatter_class=HelpFormatter,
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", help="storage root of an embedded host (created if missing)")
    where.add_argument("--connect", metavar="ROOT", help="use the `agenthost serve` that holds this root")
    parser.add_argument("--workers", type=int, default=2, help="runtime workers of an embedded host")
    parser.add_argument("--turn-timeout", type=float, default=600.0, help="a turn's deadline in seconds")
    runtime_options(parser)
    parser.add_argument("--listen", default="stdio://", help="transport; only stdio:// is served")
    parser.add_argument("--analytics-default-enabled", action="store_true", help=argparse.SUPPRESS)


def run_appserver(args: argparse.Namespace) -> int:
    if args.listen != "stdio://":
        raise ValueError(f"--listen {args.listen!r} is not served: agenthost app-server speaks on stdio:// only")
    if args.connect is not None:
        if args.runtime != "builtin" or args.codex_config or args.codex_bin:
            raise ValueError(
                "--runtime, --codex-bin and -c configure an embedded host; with --connect the service's apply"
            )
        from agenthost._appserver_remote import connect_backend

        backend: Any = connect_backend(args.connect)
        label = "agenthost"
    else:
        backend, label = _embedded(args), args.runtime
    from agenthost._appserver import Session

    session = Session(backend, sys.stdout.buffer, label)
    signal.signal(signal.SIGTERM, _stop)
    try:
        return session.serve(sys.stdin.fileno())
    except KeyboardInterrupt:
        return 0


def _embedded(args: argparse.Namespace) -> Any:
    from agenthost._api import AgentHost
    from agenthost._appserver_backend import EmbeddedBackend
    from agenthost._config import HostConfig

    if args.workers < 1:
        raise ValueError(f"--workers {args.workers!r} is invalid: must be >= 1")
    config = HostConfig(
        storage_root=args.root,
        workers=args.workers,
        runtime=args.runtime,
        codex_bin=codex_bin(args),
        codex_config=tuple(args.codex_config),
        turn_timeout_s=args.turn_timeout,
    )
    if config.runtime == "builtin" and config.codex_config:
        raise ValueError(f"-c {list(config.codex_config)} configures codex; the runtime is 'builtin'")
    return EmbeddedBackend(AgentHost(config).start())


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the session's loop ends; its `finally` stops agenthost
