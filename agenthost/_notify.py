"""systemd's notify protocol (sd_notify), without libsystemd: `Type=notify` units and their watchdog.

Contract: with NOTIFY_SOCKET set (a filesystem path, or "@name" for the abstract namespace), `ready(status)` sends
"READY=1\\nSTATUS=...", `status(text)` "STATUS=...", `stopping()` "STOPPING=1" and `watchdog()` "WATCHDOG=1", each
one datagram. Without NOTIFY_SOCKET every call does nothing. `watchdog_interval_s` is half of WATCHDOG_USEC when
the watchdog is meant for this process (NOTIFY_SOCKET set, WATCHDOG_PID unset or equal to our pid), else None. A
datagram that cannot be sent is logged once ("notify.failed") and never raises: systemd's absence must not stop the
service.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from agenthost.actors._log import get_logger

__all__ = ["Notifier"]

_log = get_logger("agenthost.notify")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self._warned = False
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        mine = bool(address) and (pid is None or pid == str(os.getpid()))
        self.watchdog_interval_s = int(usec) / 2e6 if usec and usec.isdigit() and int(usec) > 0 and mine else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                _log.warning("notify.failed", address=self._address.lstrip("\0"), error=repr(exc))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=draining: no new turns, waiting for open ones")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")
