"""The built-in reference runtime: `python -m agenthost.protocol.reference_runtime --state-dir DIR [--faults JSON]
[--faults-file PATH] [--deltas-per-reply N]`.

A small stand-in for `codex app-server` (stdlib + msgspec + the fault knobs of protocol._faults) speaking its
dialect over stdin/stdout: newline-delimited JSON, never "jsonrpc", notifications carry "emittedAtMs",
server->client request ids are ints from 0 per process, logs go to stderr. Every request-level error is code -32600
with codex's message text.

Methods (before `initialize`, any other request gets "Not initialized"; a second one gets "Already initialized"):
- `initialize {clientInfo{name, version}}` -> {userAgent: "agenthost-reference/0.1", codexHome: <abs state dir>,
  platformFamily: "unix", platformOs: "linux"}. The `initialized` notification is accepted, not required.
- `thread/start {cwd?, approvalPolicy?, sandbox?}` -> {thread{id, turns: [], status{type: idle}, cwd}, model:
  "reference", modelProvider: "builtin", cwd, approvalPolicy, sandbox(policy object)}, then `thread/started {thread}`.
  The thread is saved to <state-dir>/threads/<id>.jsonl (append-only; see protocol._runtime_store) before the answer.
- `thread/resume {threadId}` -> the same shape with thread.turns[] ({id, status, items[userMessage, agentMessage],
  error}); a turn cut off by a dead process reads "interrupted" with only its userMessage. Errors: "invalid session
  id: <id>" (not a UUID), "no rollout found for thread id <id>". Overrides in params are ignored.
- `turn/start {threadId, input[{type: "text", text}]}` -> {turn{id, status: "inProgress", items: [], error: null}},
  then `turn/started`, item/started+item/completed (userMessage), item/started (agentMessage, text ""),
  `--deltas-per-reply` (default 4, min 2) `item/agentMessage/delta`s of "Reference reply to: <text>", item/completed
  (agentMessage, full text), `turn/completed {turn{status: "completed", items: [agentMessage]}}`. Errors: "invalid
  thread id: <id>" (not a UUID), "thread not found: <id>" (not loaded in THIS process), "thread <id> already has an
  active turn" (documented deviation: codex merges the input into the running turn).
- Input containing "RUN: <command>": before the agent message, item/started (commandExecution "call_<n>"),
  thread/status/changed (active, [waitingOnApproval]), then the server request
  `item/commandExecution/requestApproval` (id = next int). Only a reply with that exact id (same JSON type) counts.
  Then serverRequest/resolved, thread/status/changed (active, []) and item/completed: accept/acceptForSession ->
  "completed" (nothing is executed), reply "Command finished: <command>"; decline -> "declined", "Command declined:
  <command>"; cancel -> "declined", then turn/completed "interrupted" with items [] at once; an error reply or an
  unknown decision -> "failed", "Command failed: <command>".
- `turn/interrupt {threadId, turnId}` -> {} then turn/completed "interrupted" (no deltas after the answer), then
  serverRequest/resolved if an approval was pending. Errors: "no active turn to interrupt", "expected active turn id
  <given> but found <active>", "thread not found: <id>".
- Unknown method -> "Invalid request: unknown variant `<method>`, expected one of ..."; missing/ill-typed params ->
  "Invalid request: missing field `threadId`" / "Invalid request: invalid type: integer `5`, expected a string".
  Unparsable lines: logged, no answer. Replies to unknown ids: ignored. stdin EOF -> exit 0 at once.

Faults: `--faults` JSON, else env AGENTHOST_RUNTIME_FAULTS (see protocol._faults.RuntimeFaults). `--faults-file PATH`:
while that file exists its JSON overrides them, re-read live whenever its mtime/size changes (before each request,
turn start and delta; see protocol._live_faults.LiveFaults). Bad faults or bad arguments -> exit 2 with the
reason on stderr (a bad faults FILE is logged and ignored); crash_on_start -> exit 3 before reading stdin.
"""

from __future__ import annotations

import argparse
import os
import sys

from agenthost.protocol._faults import FAULTS_ENV_VAR, RuntimeFaults, decode_faults
from agenthost.protocol._live_faults import LiveFaults
from agenthost.protocol._runtime_io import StdoutWriter, log
from agenthost.protocol._runtime_server import ReferenceRuntime

__all__ = ["main"]

CRASH_ON_START_EXIT_CODE = 3


def main(argv: list[str] | None = None) -> int:
    parser = _argument_parser()
    args = parser.parse_args(argv)
    faults = _load_faults(parser, args.faults)
    in_force = LiveFaults(faults, args.faults_file).faults
    if in_force.crash_on_start:
        log(f"fault crash_on_start: exiting with {CRASH_ON_START_EXIT_CODE}")
        return CRASH_ON_START_EXIT_CODE
    runtime = ReferenceRuntime(
        state_dir=os.path.abspath(args.state_dir),
        out=StdoutWriter(sys.stdout.buffer, in_force.crash_after_deltas),
        faults=faults,
        deltas_per_reply=args.deltas_per_reply,
        faults_file=args.faults_file,
    )
    return runtime.serve(sys.stdin.fileno())


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agenthost.protocol.reference_runtime", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--state-dir", required=True, help="folder for persisted threads (created if missing)")
    parser.add_argument("--faults", default=None, help=f"RuntimeFaults JSON (default: ${FAULTS_ENV_VAR})")
    parser.add_argument(
        "--faults-file",
        default=None,
        help="RuntimeFaults JSON file; overrides --faults while it exists, re-read live on change",
    )
    parser.add_argument("--deltas-per-reply", type=_at_least_two, default=4, help="deltas per agent reply (>= 2)")
    return parser


def _at_least_two(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} is invalid: a reply always has >= 2 deltas")
    return value


def _load_faults(parser: argparse.ArgumentParser, flag_value: str | None) -> RuntimeFaults:
    text = flag_value if flag_value is not None else os.environ.get(FAULTS_ENV_VAR, "")
    if not text:
        return RuntimeFaults()
    try:
        return decode_faults(text)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2


if __name__ == "__main__":
    sys.exit(main())
