"""The `agenthost` command line.

Commands (exit code 0 on success, 1 when the operation failed, 2 on bad input with a one-line message naming the
bad value, never a traceback; 130 after Ctrl-C detached):
- `serve`: the host as a long-running service with a control socket (agenthost._cli_service, agenthost._service).
- `app-server`: a drop-in `codex app-server` on stdio, backed by agenthost (agenthost._cli_appserver).
- `demo`: the main job on the built-in runtime (see agenthost._demo); self-checking, exits 1 if any step misbehaves.
- `send --thread ID | --new-thread TITLE  TEXT|-|--file F`: one message; through the service when one holds the
  root, else in an embedded host (agenthost._cli_client has the details).
- `status`, `transcript THREAD_ID`, `doctor`: the live view through the service when one runs, else the database.
- `approvals`, `approve`, `interrupt`, `tail`, `followups`, `workers`, `shutdown`: a running service's operations.
- `url`, `top`: the status page's URL, and the same live view in the terminal (agenthost._cli_view).
- `migrate-storage`: see agenthost._cli_storage.
- Commands that other installed packages register under the entry point group "agenthost.commands" (agenthost's
  own `chaos` command is one): each entry point is an object (e.g. a module) with `add_parser(subparsers)` and
  `run(args) -> int`. This keeps the application layer from importing the layers above it.

Global options: `--version`; `--log-level debug|info|warning|error` (default warning; info for `serve`) and
`--log-format console|json` (default: console on a terminal, json otherwise) for the structured events on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from agenthost._api import HostStartError
from agenthost._cli_appserver import add_appserver_parser, run_appserver
from agenthost._cli_client import (
    add_client_parsers,
    check_send_args,
    read_text,
    run_client_command,
    send_via_service,
    service_for,
    via_service,
)
from agenthost._cli_common import HelpFormatter, codex_bin, runtime_options
from agenthost._cli_service import add_serve_parser, run_serve
from agenthost._cli_storage import STORAGE_COMMANDS, add_storage_commands, run_storage_command
from agenthost._cli_view import VIEW_COMMANDS, add_view_parsers, run_view_command
from agenthost._client import ServiceError
from agenthost._logging import FORMATS, LEVELS, configure
from agenthost._version import __version__
from agenthost.storage import Database, StorageError, StorageRoot, TranscriptStore, resolve_root, validate_id

__all__ = ["COMMANDS_GROUP", "format_table", "main"]

COMMANDS_GROUP = "agenthost.commands"
_CLIENT_COMMANDS = ("approvals", "approve", "interrupt", "tail", "followups", "workers", "shutdown")


def _parser(plugins: dict[str, Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agenthost", description="Supervised hosting of agent runtimes.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"agenthost {__version__}")
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LEVELS,
        default=None,
        help="lowest level of the structured events written to stderr (default: warning; info for serve)",
    )
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=FORMATS,
        default=None,
        help="event format on stderr (default: console on a terminal, json otherwise)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_parser(commands)
    add_appserver_parser(commands)
    demo = commands.add_parser(
        "demo", help="run the end-to-end demo on the built-in runtime", formatter_class=HelpFormatter
    )
    demo.add_argument("--root", default=None, help="storage root (default: a new temporary folder)")
    runtime_options(demo)
    _send_parser(commands)
    status = commands.add_parser(
        "status", help="the host's live state (service) or what the root stores", formatter_class=HelpFormatter
    )
    status.add_argument("--root", required=True, help="storage root")
    status.add_argument("--json", action="store_true", help="print JSON")
    add_storage_commands(commands)
    transcript = commands.add_parser("transcript", help="print a thread's transcript", formatter_class=HelpFormatter)
    transcript.add_argument("--root", required=True, help="storage root")
    transcript.add_argument("thread_id", help="the thread's id")
    add_client_parsers(commands, HelpFormatter)
    add_view_parsers(commands, HelpFormatter)
    for plugin in plugins.values():
        plugin.add_parser(commands)
    return parser


def _send_parser(commands: Any) -> None:
    send = commands.add_parser("send", help="send one message and stream the reply", formatter_class=HelpFormatter)
    send.add_argument("--root", required=True, help="storage root (created if missing, for --new-thread)")
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--thread", help="id of an existing thread")
    target.add_argument("--new-thread", metavar="TITLE", help="create a thread with this title")
    send.add_argument("--workers", type=int, default=1, help="runtime workers of an embedded host")
    runtime_options(send)
    send.add_argument(
        "--approval",
        choices=("accept", "decline", "cancel"),
        default="decline",
        help="answer to every approval the runtime asks for",
    )
    send.add_argument("--timeout", type=float, default=120.0, help="seconds the turn may take")
    send.add_argument("--json", action="store_true", help="print one JSON result instead of the streamed text")
    send.add_argument("--file", default=None, help="read the message from this file")
    send.add_argument("text", nargs="?", default=None, help="the message, or - to read it from stdin")


def _plugins() -> dict[str, Any]:
    """Commands registered by installed packages (entry point group COMMANDS_GROUP), by name."""
    return {entry.name: entry.load() for entry in metadata.entry_points(group=COMMANDS_GROUP)}


def main(argv: Sequence[str] | None = None) -> int:
    plugins = _plugins()
    args = _parser(plugins).parse_args(argv)
    default_level = "info" if args.command == "serve" else "warning"
    if args.command != "serve":  # serve configures its own logging (a log file, reopened on SIGHUP)
        configure(args.log_level or default_level, args.log_format)
    try:
        return _run(args, plugins)
    except (StorageError, ValueError) as exc:
        print(f"agenthost: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"agenthost: the service answered: {exc}", file=sys.stderr)
        return 2 if exc.code in (-32602, -32000) else 1
    except (HostStartError, TimeoutError, ConnectionError) as exc:
        print(f"agenthost: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nagenthost: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, plugins: dict[str, Any]) -> int:
    command = args.command
    if command == "serve":
        return run_serve(args)
    if command == "app-server":
        return run_appserver(args)
    if command == "demo":
        from agenthost._demo import run_demo

        return run_demo(args.root, runtime=args.runtime, codex_bin=codex_bin(args), codex_config=args.codex_config)
    if command in plugins:
        return int(plugins[command].run(args))
    if command in _CLIENT_COMMANDS:
        return run_client_command(args)
    if command in VIEW_COMMANDS:
        return run_view_command(args)
    if command == "send":
        return _send(args)
    if command in ("status", "transcript", "doctor"):
        client = service_for(args.root) if StorageRoot(args.root).root.exists() else None
        if client is not None:
            with client:
                via_service(client, quiet=getattr(args, "json", False))
                return _live(client, args)
    if command in STORAGE_COMMANDS:
        return run_storage_command(args)
    if command == "status":
        return _status(resolve_root(StorageRoot(args.root)), args.json)
    return _transcript(resolve_root(StorageRoot(args.root)), args.thread_id)


def _live(client: Any, args: argparse.Namespace) -> int:
    if args.command == "transcript":
        print(client.call("transcript.read", {"thread_id": validate_id("thread id", args.thread_id)})["text"])
        return 0
    if args.command == "doctor":
        if args.repair:
            raise ValueError("doctor --repair needs the host stopped: a service holds this root")
        findings = client.call("doctor")
        for finding in findings:
            print(f"[{finding['status']}] {finding['kind']} {finding['subject']}: {finding['detail']}")
        return 1 if any(f["status"] == "problem" for f in findings) else 0
    status = client.call("status")
    print(json.dumps(status, indent=1, sort_keys=True) if args.json else _live_table(status))
    return 0


def _live_table(status: dict[str, Any]) -> str:
    rows = [("WORKER", "STATE", "GEN", "PID", "RESTARTS", "NEXT RESTART", "LAST EXIT")]
    for w in status["workers"]:
        rows.append(
            (
                str(w["worker_id"]),
                w["state"],
                str(w["generation"]),
                str(w["pid"] or "-"),
                str(w["restarts"]),
                "-" if w["next_restart_at"] is None else f"{w['next_restart_at']:.1f}",
                w["last_exit"] or "-",
            )
        )
    head = f"host: {status['state']}" + (f" ({status['cause']})" if status.get("cause") else "")
    turns = [
        f"  turn {t['turn_id']} thread {t['thread_id']} worker {t['worker_id']} {t['phase']}"
        + (f" approvals {list(t['pending_approvals'])}" if t["pending_approvals"] else "")
        for t in status["active_turns"]
    ]
    queued = [f"  {thread}: {count} queued" for thread, count in sorted(status.get("queue_depths", {}).items())]
    return "\n".join(
        [
            head,
            format_table(rows),
            "active turns:",
            *(turns or ["  none"]),
            "follow-up queues:",
            *(queued or ["  none"]),
        ]
    )


def _send(args: argparse.Namespace) -> int:
    check_send_args(args)
    text = read_text(args)
    client = service_for(args.root) if StorageRoot(args.root).root.exists() else None
    if client is not None:
        if args.runtime != "builtin" or args.codex_config or args.codex_bin:
            raise ValueError("--runtime, --codex-bin and -c configure an embedded host; a service holds this root")
        with client:
            via_service(client, quiet=args.json)
            return send_via_service(client, args, text)
    from agenthost._embedded_send import send_embedded

    return send_embedded(args, text, codex_bin(args))


def _status(root: StorageRoot, as_json: bool) -> int:
    if not root.db_path.exists():
        print(f"agenthost: no database at {root.db_path}", file=sys.stderr)
        return 1
    db = Database.open(root.db_path)
    try:
        pins = {pin.thread_id: pin.worker_id for pin in db.load_pins()}
        rows = [("THREAD", "PROJECT", "TITLE", "TURNS", "STATUS", "WORKER")]
        data = []
        for thread in db.list_threads():
            turns = db.list_turns(thread.thread_id)
            counts: dict[str, int] = {}
            for turn in turns:
                counts[turn.status] = counts.get(turn.status, 0) + 1
            summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "-"
            worker = pins.get(thread.thread_id)
            rows.append(
                (
                    thread.thread_id,
                    thread.project_id,
                    thread.title,
                    str(len(turns)),
                    summary,
                    "-" if worker is None else str(worker),
                )
            )
            data.append({"thread_id": thread.thread_id, "turns": counts, "worker": worker})
        if as_json:
            print(json.dumps({"service": None, "threads": data}, indent=1, sort_keys=True))
        else:
            print("no service runs on this root; what it stores:", file=sys.stderr)
            print(format_table(rows))
    finally:
        db.close()
    return 0


def _transcript(root: StorageRoot, thread_id: str) -> int:
    if not root.db_path.exists():
        print(f"agenthost: no database at {root.db_path}", file=sys.stderr)
        return 1
    db = Database.open(root.db_path)
    try:
        thread = db.get_thread(validate_id("thread id", thread_id))
    finally:
        db.close()
    print(TranscriptStore(root).read(thread.project_id, thread.thread_id))  # up to its last complete record
    return 0


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)
