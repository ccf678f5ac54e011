"""The storage root's lock: one agenthost process per storage root.

Contract: `RootLock.acquire(root)` creates `system/agenthost.lock` if needed and takes an exclusive, non-blocking
flock on it for as long as the lock object is held (`release()` or process death frees it: the OS drops flocks of
dead processes, so a crashed host never leaves a stale lock). A root already locked raises `RootLockedError` naming
the root. `storage.root_in_use()` (migration, `doctor --repair`) probes the same lock.
"""

from __future__ import annotations

import fcntl
import os

from ._errors import StorageError
from ._paths import StorageRoot, private_mkdir

__all__ = ["LOCK_NAME", "RootLock", "RootLockedError"]

LOCK_NAME = "agenthost.lock"


class RootLockedError(StorageError):
    """Another process holds this storage root."""


class RootLock:
    def __init__(self, root: StorageRoot, descriptor: int) -> None:
        self.root = root
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, root: StorageRoot) -> RootLock:
        private_mkdir(root.system_dir)
        descriptor = os.open(root.system_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RootLockedError(
                f"storage root {str(root.root)!r} is in use by another agenthost process (lock {LOCK_NAME})"
            ) from None
        return cls(root, descriptor)

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None
