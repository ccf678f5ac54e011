"""Where the tests find the real codex 0.169.0: env AGENTHOST_CODEX_BIN, else `.ci/install-codex`'s cache folder
(${AGENTHOST_CODEX_CACHE:-~/.cache/agenthost}/codex-0.169.0). None when it is not installed (the tests then skip)."""

from __future__ import annotations

import os
from pathlib import Path

from agenthost.actors._runtimes import find_native_codex

CODEX_VERSION = "0.169.0"


def codex_binary() -> str | None:
    configured = os.environ.get("AGENTHOST_CODEX_BIN")
    if configured:
        return configured
    cache = Path(os.environ.get("AGENTHOST_CODEX_CACHE") or Path.home() / ".cache" / "agenthost")
    found = find_native_codex(cache / f"codex-{CODEX_VERSION}")
    return None if found is None else str(found)
