"""What `agenthost` subcommands share: the help formatter, and Ctrl-C while a turn runs.

`HelpFormatter` appends "(default: X)" to an option's help text when the option has a meaningful default (not None,
False or empty) and the text does not already say what the default is.

`runtime_options(parser)` adds --runtime, --codex-bin and -c; `codex_bin(args)` is the binary to run (None for the
built-in runtime; ValueError when codex is asked for and none is installed).

`follow_turn(announce, next_end, interrupt, second)`: `announce()` once, then `next_end()` until it returns the
turn's end. From the first statement on, the first Ctrl-C calls `interrupt()`, then prints "interrupting the turn
(Ctrl-C again to <second>)" (so a press after those words cannot cut the interrupt short) and waits on; a second
Ctrl-C, wherever it lands (even inside `interrupt`, or
inside a lock's wait, where it surfaces as that lock's RuntimeError), returns None.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from agenthost.actors._runtimes import CODEX_CACHE, default_codex_bin

__all__ = ["HelpFormatter", "codex_bin", "follow_turn", "runtime_options"]

End = TypeVar("End")


def follow_turn(
    announce: Callable[[], None], next_end: Callable[[], End | None], interrupt: Callable[[], None], second: str
) -> End | None:
    finished: End | None = None
    interrupted = announced = False
    try:
        while finished is None:
            try:
                if not announced:
                    announced = True
                    announce()
                finished = next_end()
            except BaseException as exc:
                if interrupted or not _a_press(exc):
                    raise
                interrupted = True
                interrupt()  # asked before it is said, so a second press after the words cannot lose it
                print(f"\nagenthost: interrupting the turn (Ctrl-C again to {second})", file=sys.stderr)
    except BaseException as exc:
        if not _a_press(exc):
            raise
        return None
    return finished


def _a_press(exc: BaseException) -> bool:
    """A Ctrl-C: KeyboardInterrupt, or the RuntimeError a lock raises when a KeyboardInterrupt lands inside a wait
    on it (threading's Condition then releases a lock it no longer holds)."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, RuntimeError) and isinstance(exc.__context__, KeyboardInterrupt)
    )


class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def runtime_options(parser: argparse.ArgumentParser) -> None:
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


def codex_bin(args: argparse.Namespace) -> str | None:
    if args.runtime != "codex":
        return None
    if args.codex_bin:
        return str(args.codex_bin)
    found = default_codex_bin()
    if found is None:
        raise ValueError(f"no codex binary under {CODEX_CACHE}: run .ci/install-codex or pass --codex-bin")
    return str(found)
