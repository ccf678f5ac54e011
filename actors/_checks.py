"""Field checks for configuration data: each raises `PolicyError` naming the field and the bad value.

Contract: `finite`, `integer` and the comparisons accept ints and floats but never bools; a check returns the value
(as float for `finite`) so a validator can chain them. Messages read "<field> must be <rule>, got <value!r>", e.g.
"backoff.initial_s must be > 0, got -1.0". The policy module and `HostConfig` build one validator per rule from
these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["PolicyError", "above", "at_least", "finite", "instance", "integer", "one_of"]


class PolicyError(ValueError):
    """A policy or configuration value is invalid; the message names the field and the value."""


def finite(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError(f"{field} must be a finite number, got {value!r}")
    return float(value)


def integer(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{field} must be an int, got {value!r}")
    return value


def above(field: str, value: object, bound: int | float) -> float:
    """`value` is a finite number > `bound`."""
    number = finite(field, value)
    if not number > bound:
        raise PolicyError(f"{field} must be > {bound!r}, got {value!r}")
    return number


def at_least(field: str, value: object, bound: int | float, *, whole: bool = False) -> float:
    """`value` is a finite number (an int when `whole`) >= `bound`."""
    number = integer(field, value) if whole else finite(field, value)
    if not number >= bound:
        raise PolicyError(f"{field} must be >= {bound!r}, got {value!r}")
    return float(number)


def one_of(field: str, value: object, choices: Iterable[object]) -> None:
    options = tuple(choices)
    if value not in options:
        raise PolicyError(f"{field} must be one of {options}, got {value!r}")


def instance(field: str, value: object, expected: type) -> None:
    if not isinstance(value, expected):
        raise PolicyError(f"{field} must be of type {expected.__name__}, got {value!r}")
