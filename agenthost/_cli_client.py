"""The CLI commands that talk to a running service when one holds the root, and what they do without one.

Contract:
- When `agenthost serve` holds the root (its socket answers), `status`, `send`, `transcript`, `approvals`,
  `approve`, `interrupt`, `tail`, `followups`, `workers` and `shutdown` go through the control socket and say so on
  stderr ("via the service (pid N)"). Without one, `send` runs an embedded host as before, `status` and
  `transcript` read the database (following a finished migration's MOVED pointer), and the commands that need a
  live host exit 1 saying no service runs.
- `send`: the text is the argument, `-` (stdin) or `--file`; deltas stream to stdout; approvals are answered with
  `--approval`; `--json` prints one JSON object {thread_id, turn_id, status, text, error} instead. Ctrl-C once
  interrupts the turn and still prints how it ended; a second Ctrl-C detaches (the turn goes on in the service;
  exit 130). Exit 0 only when the turn completed. `--timeout S` bounds the turn (its deadline in an embedded host,
  the wait for the service).
- Bad input is exit 2 with one line naming it: an empty --thread, --thread on a root that does not exist, a
  timeout that is not a positive finite number, `-c` given to the built-in runtime.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from agenthost._cli_common import follow_turn
from agenthost._client import ControlClient, ServiceError, connect_service
from agenthost.storage import MigrationError, StorageRoot, resolve_root

__all__ = ["add_client_parsers", "check_send_args", "read_text", "service_for", "via_service"]


def service_for(root_arg: str) -> ControlClient | None:
    """A client of the service that holds this root (after a migration: the root it moved to), or None."""
    root = StorageRoot(root_arg)
    try:
        root = resolve_root(root)
    except MigrationError as exc:
        raise ValueError(str(exc)) from None
    try:
        return connect_service(root.system_dir)
    except ServiceError as exc:
        raise ValueError(f"the service of {root_arg!r} refuses this user: {exc}") from None


def via_service(client: ControlClient, quiet: bool = False) -> None:
    if not quiet:
        facts = client.call("status").get("service", {})
        print(f"agenthost: via the service (pid {facts.get('pid')})", file=sys.stderr)


def read_text(args: argparse.Namespace) -> str:
    if args.file is not None:
        if args.text is not None:
            raise ValueError("give the message as TEXT or --file, not both")
        try:
            return Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--file {args.file!r} cannot be read: {exc.strerror}") from None
    if args.text is None:
        raise ValueError("no message: give TEXT, - (read stdin) or --file FILE")
    return sys.stdin.read() if args.text == "-" else str(args.text)


def check_send_args(args: argparse.Namespace) -> None:
    if args.thread is not None and not args.thread.strip():
        raise ValueError("--thread '' is empty: give a thread id, or --new-thread TITLE")
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise ValueError(f"--timeout {args.timeout!r} is invalid: must be a positive number of seconds")
    if args.thread is not None and not Path(args.root).exists():
        raise ValueError(f"--root {args.root!r} does not exist, so thread {args.thread!r} cannot be in it")
    if args.runtime == "builtin" and args.codex_config:
        raise ValueError(f"-c {args.codex_config} configures codex; the runtime is 'builtin' (pass --runtime codex)")


def add_client_parsers(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    approvals = commands.add_parser(
        "approvals", help="approvals waiting for an answer (service)", formatter_class=formatter
    )
    approvals.add_argument("--root", required=True, help="storage root")
    approve = commands.add_parser("approve", help="answer an approval (service)", formatter_class=formatter)
    approve.add_argument("--root", required=True, help="storage root")
    approve.add_argument("approval_id", help="the approval's id")
    approve.add_argument("decision", choices=("accept", "acceptForSession", "decline", "cancel"), help="the answer")
    interrupt = commands.add_parser("interrupt", help="interrupt a running turn (service)", formatter_class=formatter)
    interrupt.add_argument("--root", required=True, help="storage root")
    interrupt.add_argument("turn_id", help="the turn's id")
    tail = commands.add_parser("tail", help="follow the service's structured events", formatter_class=formatter)
    tail.add_argument("--root", required=True, help="storage root")
    tail.add_argument("--names", default=None, help="comma-separated event names (default: all)")
    followups = commands.add_parser(
        "followups", help="work a thread's follow-up queue (service)", formatter_class=formatter
    )
    followups.add_argument("--root", required=True, help="storage root")
    actions = followups.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text, arguments in (
        ("list", "the thread's queue", ("thread_id",)),
        ("move", "move one to a position (0 = next)", ("followup_id", "position")),
        ("edit", "change its text", ("followup_id", "text")),
        ("cancel", "remove it for good", ("followup_id",)),
        ("retry", "queue a failed one again", ("followup_id",)),
        ("mode", "auto: run one after the other; manual: wait for send-next", ("thread_id", "mode")),
        ("send-next", "run the next one now, even in manual mode", ("thread_id",)),
    ):
        action = actions.add_parser(name, help=help_text, formatter_class=formatter)
        for argument in arguments:
            kwargs: dict[str, Any] = {"type": int} if argument == "position" else {}
            if argument == "mode":
                kwargs = {"choices": ("auto", "manual")}
            action.add_argument(argument, help=argument.replace("_", " "), **kwargs)
    workers = commands.add_parser("workers", help="replace or repair a worker (service)", formatter_class=formatter)
    workers.add_argument("--root", required=True, help="storage root")
    workers.add_argument(
        "action",
        choices=("restart", "repair"),
        help="restart: a new runtime now; repair: move its own runtime state aside, then restart",
    )
    workers.add_argument("worker_id", type=int, help="the worker's id")
    shutdown = commands.add_parser("shutdown", help="drain and stop the service", formatter_class=formatter)
    shutdown.add_argument("--root", required=True, help="storage root")
    shutdown.add_argument("--drain-timeout", type=float, default=None, help="seconds open turns get")


def run_client_command(args: argparse.Namespace) -> int:
    client = service_for(args.root)
    if client is None:
        print(
            f"agenthost: no service runs on {args.root}: start one with `agenthost serve --root {args.root}`",
            file=sys.stderr,
        )
        return 1
    with client:
        via_service(client)
        return _dispatch(client, args)


def _dispatch(client: ControlClient, args: argparse.Namespace) -> int:
    command = args.command
    if command == "approvals":
        _print_json(client.call("approvals.list"))
    elif command == "approve":
        client.call("approvals.answer", {"approval_id": args.approval_id, "decision": args.decision})
    elif command == "interrupt":
        client.call("turns.interrupt", {"turn_id": args.turn_id})
    elif command == "tail":
        return _tail(client, args.names)
    elif command == "workers":
        _print_json(client.call(f"workers.{args.action}", {"worker_id": args.worker_id}))
    elif command == "shutdown":
        params = {} if args.drain_timeout is None else {"drain_timeout_s": args.drain_timeout}
        client.call("service.shutdown", params)
    else:
        method = "followups." + args.action.replace("-", "_")
        params = {
            key: getattr(args, key)
            for key in ("thread_id", "followup_id", "position", "text", "mode")
            if getattr(args, key, None) is not None
        }
        _print_json(client.call(method, params))
    return 0


def _tail(client: ControlClient, names: str | None) -> int:
    client.call("events.subscribe", {"names": names.split(",")} if names else {})
    try:
        while True:
            note = client.next_notification()
            print(json.dumps(note.params, sort_keys=True), flush=True)
    except KeyboardInterrupt:
        return 0


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=1, sort_keys=True))


def send_via_service(client: ControlClient, args: argparse.Namespace, text: str) -> int:
    thread_id = args.thread or client.call("threads.create", {"title": args.new_thread})["thread_id"]
    accepted = client.call("turns.send", {"thread_id": thread_id, "text": text})
    turn_id = accepted["turn_id"]

    def announce() -> None:
        if not args.json:
            queued = " (queued)" if accepted["queued"] else ""
            print(f"thread {thread_id} turn {turn_id}{queued}", file=sys.stderr)

    def next_end() -> dict[str, Any] | None:
        return _on_turn_event(client, args, client.next_notification(timeout_s=args.timeout).params)

    finished = follow_turn(announce, next_end, lambda: _quietly_interrupt(client, turn_id), "detach")
    if finished is None:
        print(f"\nagenthost: detached; turn {turn_id} goes on in the service", file=sys.stderr)
        return 130
    return _report(args, thread_id, finished)


def _quietly_interrupt(client: ControlClient, turn_id: str) -> None:
    try:
        client.call("turns.interrupt", {"turn_id": turn_id})
    except ServiceError as exc:
        print(f"agenthost: {exc}", file=sys.stderr)


def _on_turn_event(client: ControlClient, args: argparse.Namespace, params: Any) -> dict[str, Any] | None:
    event = params.get("event", {})
    kind = event.get("type")
    if kind == "Delta" and not args.json:
        sys.stdout.write(event.get("text", ""))
        sys.stdout.flush()
    elif kind == "ApprovalRequested":
        if not args.json:
            print(f"\n[approval {event['approval_id']}: {event.get('command')!r} -> {args.approval}]", file=sys.stderr)
        client.call("approvals.answer", {"approval_id": event["approval_id"], "decision": args.approval})
    elif kind == "TurnFinished":
        return dict(event)
    return None


def _report(args: argparse.Namespace, thread_id: str, finished: dict[str, Any]) -> int:
    status, error = finished.get("status"), finished.get("error")
    if args.json:
        print(
            json.dumps(
                {
                    "thread_id": thread_id,
                    "turn_id": finished.get("turn_id"),
                    "status": status,
                    "text": finished.get("text", ""),
                    "error": error,
                }
            )
        )
    else:
        print()
        print(f"[turn {finished.get('turn_id')} {status}{': ' + error if error else ''}]", file=sys.stderr)
    return 0 if status == "completed" else 1
