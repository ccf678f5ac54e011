"""`agenthost send` without a service: an embedded host for one message (see agenthost._cli_client's contract).

The turn's deadline is `--timeout`, so a runtime that cannot finish (codex retrying an unreachable model forever)
ends the turn failed, persisted, with the runtime's own words in the error. Ctrl-C once interrupts the turn and
still prints how it ended; twice stops waiting (the host then shuts down: the turn ends failed, persisted; exit 130).
"""

from __future__ import annotations

import argparse
import json
import sys

from agenthost._api import AgentHost
from agenthost._cli_common import follow_turn
from agenthost._config import HostConfig
from agenthost.actors import TurnNotActiveError
from agenthost.protocol import ApprovalRequested, Delta, TurnFinished

__all__ = ["send_embedded"]

_GRACE_S = 30.0  # beyond the turn's own deadline: the host ends it, persisting, within this


def send_embedded(args: argparse.Namespace, text: str, codex_bin: str | None) -> int:
    config = HostConfig(
        storage_root=args.root,
        workers=args.workers,
        runtime=args.runtime,
        codex_bin=codex_bin,
        codex_config=tuple(args.codex_config),
        turn_timeout_s=args.timeout,
    )
    with AgentHost(config) as host:
        thread_id = args.thread or host.create_thread(args.new_thread)
        handle = host.send(thread_id, text)

        def announce() -> None:
            if not args.json:
                print(f"thread {thread_id} turn {handle.turn_id}", file=sys.stderr)

        def next_end() -> TurnFinished | None:
            event = handle.next_event(args.timeout + _GRACE_S)
            if isinstance(event, Delta) and not args.json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, ApprovalRequested):
                if not args.json:
                    print(f"\n[approval {event.approval_id}: {event.command!r} -> {args.approval}]", file=sys.stderr)
                host.answer_approval(event.approval_id, args.approval)
            return handle.finished

        def interrupt() -> None:
            try:
                host.interrupt(handle.turn_id)
            except TurnNotActiveError:
                pass  # it had not started yet or just ended: the events say which

        finished = follow_turn(announce, next_end, interrupt, "stop waiting")
        if finished is None:
            print("\nagenthost: stopped waiting; the turn ends as the host shuts down", file=sys.stderr)
            host.shutdown(drain_timeout_s=0.0)  # no drain: the turn ends failed now, not whenever it would finish
            return 130
        return _report(args, thread_id, finished)


def _report(args: argparse.Namespace, thread_id: str, finished: TurnFinished) -> int:
    if args.json:
        print(
            json.dumps(
                {
                    "thread_id": thread_id,
                    "turn_id": finished.turn_id,
                    "status": finished.status,
                    "text": finished.text,
                    "error": finished.error,
                }
            )
        )
    else:
        print()
        error = f": {finished.error}" if finished.error else ""
        print(f"[turn {finished.turn_id} {finished.status}{error}]", file=sys.stderr)
    return 0 if finished.status == "completed" else 1
