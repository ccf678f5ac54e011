"""`agenthost serve` on the command line: flags and a TOML file into a `HostConfig` and `ServiceOptions`.

Contract: `--config FILE` is TOML (read with tomllib) with two tables: `[host]`, any `HostConfig` field
(`storage_root`, `workers`, `runtime`, `turn_timeout_s`, `worker_policy = {backoff = {initial_s = 1.0}}`, ...), and
`[service]`, any `ServiceOptions` field (`metrics`, `http`, `http_allow_remote`, `log_file`, `log_level`,
`log_format`). `--http HOST:PORT` serves the status page (agenthost._http): loopback unless `--http-allow-remote`
is given too, which prints a warning. Flags given on the command line win over the file. Every value is checked
(unknown keys too); a bad one is exit 2 with one line naming the file, the key and the value. `--check-config`
prints the resulting configuration as JSON and exits 0. `--ray-address ADDR` sets `ray_address` and
`placement = "ray"`: the runtimes run in Ray actors on that cluster (README "Running on a cluster").
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from typing import Any

import msgspec

from agenthost._cli_common import HelpFormatter
from agenthost._config import HostConfig
from agenthost._http_auth import parse_http_address
from agenthost._metrics import parse_loopback
from agenthost._service import Service, ServiceOptions

__all__ = ["add_serve_parser", "load_service_config", "run_serve"]

_HOST_FLAGS = {
    "root": "storage_root",
    "workers": "workers",
    "runtime": "runtime",
    "codex_bin": "codex_bin",
    "drain_timeout": "drain_timeout_s",
    "turn_timeout": "turn_timeout_s",
    "request_timeout": "request_timeout_s",
    "max_active_turns": "max_active_turns",
    "ray_address": "ray_address",
}


def add_serve_parser(commands: Any) -> argparse.ArgumentParser:
    serve: argparse.ArgumentParser = commands.add_parser(
        "serve", help="run a host as a long-running service with a control socket", formatter_class=HelpFormatter
    )
    serve.add_argument("--root", help="storage root (or storage_root in the [host] table of --config)")
    serve.add_argument("--config", metavar="FILE", help="TOML file with [host] and [service] tables")
    serve.add_argument("--check-config", action="store_true", help="print the configuration as JSON and exit")
    serve.add_argument("--workers", type=int, help="runtime workers (default 2)")
    serve.add_argument("--runtime", choices=("builtin", "codex"), help="runtime to host (default builtin)")
    serve.add_argument("--codex-bin", help="native codex binary (runtime codex)")
    serve.add_argument(
        "-c",
        dest="codex_config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="codex config override, passed to `codex app-server -c` (repeatable)",
    )
    serve.add_argument("--drain-timeout", type=float, metavar="S", help="seconds open turns get at SIGTERM (30)")
    serve.add_argument("--turn-timeout", type=float, metavar="S", help="a turn's deadline in seconds (600)")
    serve.add_argument("--request-timeout", type=float, metavar="S", help="a runtime call's deadline (30)")
    serve.add_argument("--max-active-turns", type=int, metavar="N", help="turns running at once (8)")
    serve.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run the runtimes on this Ray cluster (auto, HOST:PORT or ray://HOST:PORT; needs agenthost[ray])",
    )
    serve.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics on this loopback address")
    serve.add_argument("--http", metavar="HOST:PORT", help="serve the status page here (loopback; see `agenthost url`)")
    serve.add_argument(
        "--http-allow-remote",
        action="store_true",
        default=None,
        help="let --http bind a non-loopback address (exposed to the network; prefer an ssh port forward)",
    )
    serve.add_argument("--log-file", metavar="FILE", help="structured log file (reopened on SIGHUP); default stderr")
    return serve


def load_service_config(args: argparse.Namespace) -> tuple[HostConfig, ServiceOptions]:
    """The configuration from --config and the flags; ValueError naming the bad value."""
    host: dict[str, Any] = {}
    service: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as handle:
                document = tomllib.load(handle)
        except OSError as exc:
            raise ValueError(f"config {args.config!r} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config {args.config!r} is not valid TOML: {exc}") from None
        unknown = sorted(set(document) - {"host", "service"})
        if unknown:
            raise ValueError(f"config {args.config!r} has unknown tables {unknown}: expected [host] and [service]")
        host, service = dict(document.get("host", {})), dict(document.get("service", {}))
    for flag, field in _HOST_FLAGS.items():
        if getattr(args, flag, None) is not None:
            host[field] = getattr(args, flag)
    if args.codex_config:
        host["codex_config"] = list(args.codex_config)
    if getattr(args, "ray_address", None) is not None:
        host["placement"] = "ray"  # --ray-address means: place the runtimes there
    for flag, field in (
        ("metrics", "metrics"),
        ("http", "http"),
        ("http_allow_remote", "http_allow_remote"),
        ("log_file", "log_file"),
        ("log_level", "log_level"),
        ("log_format", "log_format"),
    ):
        if getattr(args, flag, None) is not None:
            service[field] = getattr(args, flag)
    if "storage_root" not in host:
        raise ValueError("no storage root: pass --root DIR or set storage_root in the [host] table of --config")
    faults = host.get("worker_faults")
    if isinstance(faults, dict):  # TOML keys are strings; worker ids are ints
        host["worker_faults"] = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in faults.items()}
    source = f"config {args.config!r}" if args.config else "the flags"
    try:
        config = msgspec.convert(host, HostConfig)
        options = msgspec.convert(service, ServiceOptions)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{source}: {exc}") from None
    if options.metrics is not None:
        parse_loopback(options.metrics)
    if options.http is not None:
        parse_http_address(options.http, options.http_allow_remote)
    if config.runtime == "builtin" and config.codex_config:
        raise ValueError(f"-c {list(config.codex_config)} configures codex; the runtime is 'builtin'")
    return config, options


def run_serve(args: argparse.Namespace) -> int:
    config, options = load_service_config(args)
    if args.check_config:
        print(msgspec.json.format(msgspec.json.encode({"host": config, "service": options})).decode())
        return 0
    where = f" on the Ray cluster at {config.ray_address}" if config.placement == "ray" else ""
    print(
        f"agenthost serve: root {config.storage_root}, {config.workers} {config.runtime} workers{where}",
        file=sys.stderr,
    )
    return Service(config, options).run()
