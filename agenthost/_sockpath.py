"""Unix socket paths of any length, and the control socket's place in a storage root.

Contract: a socket path longer than the kernel's limit (108 bytes) is bound or connected through the folder's file
descriptor (`/proc/self/fd/<fd>/<name>`), so a deep storage root still gets its socket. `socket_path(root)` is
`ROOT/system/agenthost.sock`. `connect(path, timeout_s)` returns a connected blocking socket or raises OSError
(FileNotFoundError / ConnectionRefusedError when no service listens; TimeoutError when its listen queue stays
full for `timeout_s`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["bind", "connect", "socket_path"]

_MAX_PATH = 100  # sun_path holds 108 bytes; leave room for the NUL and a margin


def socket_path(system_dir: Path) -> Path:
    return system_dir / "agenthost.sock"


@contextlib.contextmanager
def _short(path: Path) -> Iterator[str]:
    """A path to the same socket that fits in sun_path (valid while the block runs)."""
    if len(os.fsencode(str(path))) <= _MAX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def bind(sock: socket.socket, path: Path) -> None:
    with _short(path) as short:
        sock.bind(short)


def connect(path: Path, timeout_s: float = 10.0) -> socket.socket:
    """A connected socket; a full listen queue (EAGAIN) is waited out until `timeout_s`, then TimeoutError."""
    deadline = time.monotonic() + timeout_s
    pause_s = 0.001
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            with _short(path) as short:
                sock.connect(short)
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() + pause_s > deadline:
                raise TimeoutError(f"the service at {path} accepted no connection within {timeout_s:g} s") from None
            time.sleep(pause_s)  # the service is accepting a burst of clients; try again shortly
            pause_s = min(pause_s * 2, 0.1)
        except BaseException:
            sock.close()
            raise
