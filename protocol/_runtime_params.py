"""Checking the params of the reference runtime's requests, with codex's (serde's) error texts.

Contract:
- Every check raises `RequestError`, which the runtime answers as -32600 with the message as it is:
  "Invalid request: missing field `<field>`" for absent `params` or a missing field, "Invalid request: invalid type:
  <value>, expected <kind>" (the value described serde-style: "integer `5`", "string 'x'", "null", "map"...), and
  "Invalid request: unknown variant `<value>`, expected one of `a`, `b`" for an unknown policy.
- A field whose value is null counts as absent for `optional_field`; `object_params(None, required=False)` is {}.
- `approval_policy`: absent -> "on-request"; "untrusted", "on-request", "never" or an object with "granular" are
  kept as given. `sandbox_policy`: a sandbox mode (absent -> "read-only") -> its policy object.
- `text_inputs`: the texts of the `text` items of a turn's input; items of other types are accepted and ignored.
- `check_turn_options`: a turn's `model` other than the runtime's own is "model not found: <model> ..."; an
  `effort` outside codex's levels is an unknown variant.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "RequestError",
    "approval_policy",
    "check_turn_options",
    "checked",
    "object_params",
    "optional_field",
    "required_field",
    "sandbox_policy",
    "text_inputs",
    "unknown_variant",
]

_SANDBOX_POLICIES: dict[str, dict[str, Any]] = {
    "read-only": {"type": "readOnly", "networkAccess": False},
    "workspace-write": {
        "type": "workspaceWrite",
        "writableRoots": [],
        "networkAccess": False,
        "excludeTmpdirEnvVar": False,
        "excludeSlashTmp": False,
    },
    "danger-full-access": {"type": "dangerFullAccess"},
}
_APPROVAL_POLICIES = ("untrusted", "on-request", "never")


class RequestError(Exception):
    """Answered as -32600 with this message."""


def object_params(params: Any, *, required: bool = True) -> dict[str, Any]:
    if params is None:
        if required:
            raise RequestError("Invalid request: missing field `params`")
        return {}
    if not isinstance(params, dict):
        raise RequestError(f"Invalid request: invalid type: {_describe(params)}, expected a map")
    return params


def required_field(params: dict[str, Any], field: str, kind: type, kind_name: str) -> Any:
    if field not in params:
        raise RequestError(f"Invalid request: missing field `{field}`")
    return checked(params[field], kind, kind_name)


def optional_field(params: dict[str, Any], field: str, kind: type, kind_name: str) -> Any:
    value = params.get(field)
    return None if value is None else checked(value, kind, kind_name)


def checked(value: Any, kind: type, kind_name: str) -> Any:
    if not isinstance(value, kind):
        raise RequestError(f"Invalid request: invalid type: {_describe(value)}, expected {kind_name}")
    return value


def unknown_variant(value: Any, names: Iterable[str]) -> RequestError:
    """The error for a value that is none of `names` (a method, a policy)."""
    expected = ", ".join(f"`{name}`" for name in names)
    return RequestError(f"Invalid request: unknown variant `{value}`, expected one of {expected}")


def _describe(value: Any) -> str:
    """serde-style description of a JSON value, e.g. "integer `5`"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {value!r}"
    return "sequence" if isinstance(value, list) else "map"


def approval_policy(value: Any) -> Any:
    if value is None:
        return "on-request"
    if value in _APPROVAL_POLICIES or (isinstance(value, dict) and "granular" in value):
        return value
    raise unknown_variant(value, _APPROVAL_POLICIES)


def sandbox_policy(mode: Any) -> dict[str, Any]:
    if mode is None:
        mode = "read-only"
    policy = _SANDBOX_POLICIES.get(mode) if isinstance(mode, str) else None
    if policy is None:
        raise unknown_variant(mode, _SANDBOX_POLICIES)
    return policy


EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def check_turn_options(params: dict[str, Any], model: str) -> None:
    """A turn's `model` must be the one this runtime serves and its `effort` one codex knows."""
    chosen = optional_field(params, "model", str, "a string")
    if chosen is not None and chosen != model:
        raise RequestError(f"model not found: {chosen} (this runtime serves `{model}`)")
    effort = params.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise unknown_variant(effort, EFFORTS)


def text_inputs(items: list[Any]) -> list[str]:
    """The texts of the `text` inputs; other input types are accepted and ignored."""
    texts: list[str] = []
    for raw in items:
        item = checked(raw, dict, "a map")
        if required_field(item, "type", str, "a string") == "text":
            texts.append(required_field(item, "text", str, "a string"))
    return texts
