"""Identifier validation.

Contract: an id is a ``str`` of 1..64 ASCII characters matching ``ID_PATTERN``: it starts with a letter or digit and
continues with letters, digits, ``_`` or ``-``. Such an id is safe as a single path component (no ``/``, no ``..``,
no NUL, no whitespace, no non-ASCII). ``validate_id`` returns the value unchanged or raises ``InvalidIdError`` whose
message names the kind, the bad value (``repr``) and the reason.
"""

from __future__ import annotations

import re

from ._errors import InvalidIdError

__all__ = ["ID_MAX_LENGTH", "ID_PATTERN", "validate_id"]

ID_PATTERN: str = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ID_MAX_LENGTH: int = 64

_ID_RE = re.compile(ID_PATTERN)


def validate_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid id, else raise ``InvalidIdError`` naming ``kind`` and the value."""
    if isinstance(value, str) and _ID_RE.fullmatch(value):
        return value
    raise InvalidIdError(f"{kind} {value!r} is invalid: {_invalid_reason(value)}")


def _invalid_reason(value: object) -> str:
    if not isinstance(value, str):
        return f"must be a str, got {type(value).__name__}"
    if value == "":
        return "must not be empty"
    if len(value) > ID_MAX_LENGTH:
        return f"must be at most {ID_MAX_LENGTH} characters, got {len(value)}"
    if "\x00" in value:
        return "must not contain NUL"
    if "/" in value or "\\" in value:
        return "must not contain a path separator"
    if ".." in value:
        return "must not contain '..'"
    if any(character.isspace() for character in value):
        return "must not contain whitespace"
    return f"must match {ID_PATTERN} (ASCII letters, digits, '_' and '-'; starting with a letter or digit)"
