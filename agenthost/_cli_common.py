"""What every `agenthost` subcommand shares: the help formatter.

`HelpFormatter` appends "(default: X)" to an option's help text when the option has a meaningful default (not None,
False or empty) and the text does not already say what the default is.
"""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"
