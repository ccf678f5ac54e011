"""The `agenthost` command line.

Commands (exit code 0 on success, 1 when the operation failed, 2 on bad input with a one-line message naming the
bad value, never a traceback):
- `demo`: the main job on the built-in runtime (see agenthost._demo); self-checking, exits 1 if any step misbehaves.
- `send --thread ID | --new-thread TITLE  TEXT`: start a host, send one message, stream the reply to stdout,
  answer approvals with `--approval` (default decline), shut down. Exit 0 only if the turn completed.
- `status`: threads, turn counts by status and pinned workers, read from the database (no runtime started).
- `transcript THREAD_ID`: print the thread's Markdown transcript.
- `doctor`, `migrate-storage`: see agenthost._cli_storage.
- Commands that other installed packages register under the entry point group "agenthost.commands" (agenthost's
  own `chaos` command is one): each entry point is an object (e.g. a module) with `add_parser(subparsers)` and
  `run(args) -> int`. This keeps the application layer from importing the layers above it.

Global options: `--version`; `--log-level debug|info|warning|error` (default warning) and
`--log-format console|json` (default: console on a terminal, json otherwise) for the structured events on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from agenthost._api import HostStartError
from agenthost._cli_common import HelpFormatter
from agenthost._cli_storage import STORAGE_COMMANDS, add_storage_commands, run_storage_command
from agenthost._logging import FORMATS, LEVELS, configure
from agenthost._version import __version__
from agenthost.actors._runtimes import CODEX_CACHE, default_codex_bin
from agenthost.storage import Database, StorageError, StorageRoot, validate_id

__all__ = ["COMMANDS_GROUP", "format_table", "main"]

COMMANDS_GROUP = "agenthost.commands"


def _parser(plugins: dict[str, Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agenthost", description="Supervised hosting of agent runtimes.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"agenthost {__version__}")
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LEVELS,
        default="warning",
        help="lowest level of the structured events written to stderr",
    )
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=FORMATS,
        default=None,
        help="event format on stderr (default: console on a terminal, json otherwise)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the end-to-end demo on the built-in runtime", formatter_class=HelpFormatter
    )
    demo.add_argument("--root", default=None, help="storage root (default: a new temporary folder)")
    _runtime_options(demo)

    send = commands.add_parser("send", help="send one message and stream the reply", formatter_class=HelpFormatter)
    send.add_argument("--root", required=True, help="storage root (created if missing)")
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--thread", help="id of an existing thread")
    target.add_argument("--new-thread", metavar="TITLE", help="create a thread with this title")
    send.add_argument("--workers", type=int, default=1, help="runtime workers to start")
    _runtime_options(send)
    send.add_argument(
        "--approval",
        choices=("accept", "decline", "cancel"),
        default="decline",
        help="answer to every approval the runtime asks for",
    )
    send.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each event of the turn")
    send.add_argument("text", help="the message")

    status = commands.add_parser(
        "status", help="threads, turns and pins stored under a root", formatter_class=HelpFormatter
    )
    status.add_argument("--root", required=True, help="storage root")

    add_storage_commands(commands)
    transcript = commands.add_parser("transcript", help="print a thread's transcript", formatter_class=HelpFormatter)
    transcript.add_argument("--root", required=True, help="storage root")
    transcript.add_argument("thread_id", help="the thread's id")
    for plugin in plugins.values():
        plugin.add_parser(commands)
    return parser


def _runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", choices=("builtin", "codex"), default="builtin", help="runtime to host")
    parser.add_argument(
        "--codex-bin",
        default=None,
        help=f"native codex binary (default: the one .ci/install-codex put under {CODEX_CACHE})",
    )
    parser.add_argument(
        "-c",
        dest="codex_config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra codex config override, passed to `codex app-server -c` (repeatable)",
    )


def _codex_bin(args: argparse.Namespace) -> str | None:
    if args.runtime != "codex":
        return None
    if args.codex_bin:
        return str(args.codex_bin)
    found = default_codex_bin()
    if found is None:
        raise ValueError(f"no codex binary under {CODEX_CACHE}: run .ci/install-codex or pass --codex-bin")
    return str(found)


def _plugins() -> dict[str, Any]:
    """Commands registered by installed packages (entry point group COMMANDS_GROUP), by name."""
    return {entry.name: entry.load() for entry in metadata.entry_points(group=COMMANDS_GROUP)}


def main(argv: Sequence[str] | None = None) -> int:
    plugins = _plugins()
    args = _parser(plugins).parse_args(argv)
    configure(args.log_level, args.log_format)
    try:
        if args.command == "demo":
            from agenthost._demo import run_demo

            return run_demo(args.root, runtime=args.runtime, codex_bin=_codex_bin(args), codex_config=args.codex_config)
        if args.command in STORAGE_COMMANDS:
            return run_storage_command(args)
        if args.command in plugins:
            return int(plugins[args.command].run(args))
        if args.command == "send":
            return _send(args)
        if args.command == "status":
            return _status(StorageRoot(args.root))
        return _transcript(StorageRoot(args.root), args.thread_id)
    except (StorageError, ValueError) as exc:
        print(f"agenthost: {exc}", file=sys.stderr)
        return 2
    except HostStartError as exc:
        print(f"agenthost: {exc}", file=sys.stderr)
        return 1


def _send(args: argparse.Namespace) -> int:
    from agenthost._api import AgentHost, HostConfig
    from agenthost.protocol import ApprovalRequested, Delta, TurnFinished

    config = HostConfig(
        storage_root=args.root,
        workers=args.workers,
        runtime=args.runtime,
        codex_bin=_codex_bin(args),
        codex_config=tuple(args.codex_config),
    )
    with AgentHost(config) as host:
        thread_id = args.thread or host.create_thread(args.new_thread)
        print(f"thread {thread_id}", file=sys.stderr)
        handle = host.send(thread_id, args.text)
        for event in handle.events(timeout_s=args.timeout):
            if isinstance(event, Delta):
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, ApprovalRequested):
                print(f"\n[approval {event.approval_id}: {event.command!r} -> {args.approval}]", file=sys.stderr)
                host.answer_approval(event.approval_id, args.approval)
            elif isinstance(event, TurnFinished):
                print()
                print(
                    f"[turn {event.turn_id} {event.status}{': ' + event.error if event.error else ''}]", file=sys.stderr
                )
        assert handle.finished is not None
        return 0 if handle.finished.status == "completed" else 1


def _status(root: StorageRoot) -> int:
    if not root.db_path.exists():
        print(f"agenthost: no database at {root.db_path}", file=sys.stderr)
        return 1
    db = Database.open(root.db_path)
    try:
        pins = {row.thread_id: row.worker_id for row in db.load_mappings()}
        rows = [("THREAD", "PROJECT", "TITLE", "TURNS", "STATUS", "WORKER")]
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
        print(format_table(rows))
    finally:
        db.close()
    return 0


def _transcript(root: StorageRoot, thread_id: str) -> int:
    db = Database.open(root.db_path)
    try:
        thread = db.get_thread(validate_id("thread id", thread_id))
    finally:
        db.close()
    print(root.transcript_path(thread.project_id, thread.thread_id).read_text(encoding="utf-8"))
    return 0


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)
