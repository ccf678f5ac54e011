"""The host side of a chaos campaign: `python -m agenthost.chaos._serve CONFIG_JSON`.

Contract: runs one `EmbeddedHost` on `config["root"]` (see chaos._plugin) and answers the runner's control requests,
one JSON object per line on stdin, until "shutdown" or EOF (see chaos._host_process for the protocol). The first line
written is `{"id": 0, "ok": true, "result": {"pid": ...}}` once the host started (or `ok: false` with the error,
exit 1). Every event named in RECORDED_EVENTS and every turn event goes to stdout as `{"event": {...}}`; the host's
own warnings and errors go to stderr as console lines.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from agenthost._logging import configure
from agenthost.chaos._host_process import RECORDED_EVENTS
from agenthost.chaos._plugin import EmbeddedHost, tee_events_to

__all__ = ["serve"]


def serve(config: dict[str, Any]) -> int:
    """Run one host on `config["root"]` and answer control requests on stdin until "shutdown" or EOF."""
    out_lock = threading.Lock()
    stdout = sys.stdout.buffer

    def emit(message: dict[str, Any]) -> None:
        line = json.dumps(message, default=str).encode() + b"\n"
        with out_lock:
            stdout.write(line)
            stdout.flush()

    configure("warning", "console")  # the host's own warnings and errors on its stderr, for the runner's log
    tee_events_to(lambda event: emit({"event": event}), RECORDED_EVENTS)
    try:
        host = EmbeddedHost.from_config(config, lambda event: emit({"event": event}))
    except Exception as exc:  # noqa: BLE001 - reported to the runner, which decides
        emit({"id": 0, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({"id": 0, "ok": True, "result": {"pid": os.getpid()}})
    for raw in sys.stdin.buffer:
        request = json.loads(raw)
        request_id, op = request.pop("id"), request.pop("op")
        try:
            result = host.handle(op, request)
        except Exception as exc:  # noqa: BLE001 - every error goes back to the runner by name
            emit({"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        emit({"id": request_id, "ok": True, "result": result})
        if op == "shutdown":
            return 0
    host.handle("shutdown", {})
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 2:
        sys.exit(serve(json.loads(sys.argv[1])))
    print("usage: python -m agenthost.chaos._serve CONFIG_JSON", file=sys.stderr)
    sys.exit(2)
