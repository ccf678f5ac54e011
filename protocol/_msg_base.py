"""The base of every agenthost actor message.

Contract: a message is a frozen, keyword-only msgspec Struct tagged with its class name (`Msg` subclasses repeat
`frozen=True, kw_only=True`). Fields that hold live objects (actor refs, sinks) are typed `Any` and are never
serialised; every other field is plain data and round-trips through `msgspec.json`.
"""

from __future__ import annotations

import msgspec

__all__ = ["Msg"]


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base: frozen, keyword-only, tagged with the class name."""
