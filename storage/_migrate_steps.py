"""What every part of a storage migration shares: its error, and the hook called before each file-system step.

Contract:
- ``MigrationError`` (a ``StorageError``) means the migration was refused or failed; the message names the paths
  and what to do.
- ``MigrationHooks.before(step, path)`` is called before each file-system step with what the step is about to
  create or change ("verify": the NEW root). The default does nothing; tests raise from it to simulate a crash at
  that point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ._errors import StorageError

__all__ = ["MigrationError", "MigrationHooks", "MigrationStep"]

MigrationStep = Literal["mkdir", "journal", "backup_db", "write_temp", "rename", "verify", "switch"]


class MigrationError(StorageError):
    """The migration was refused or failed; the message names the paths and what to do."""


class MigrationHooks:
    """Called before each file-system step; tests raise from ``before`` to simulate a crash at that point."""

    def before(self, step: MigrationStep, path: Path) -> None:
        """``path`` is what the step is about to create or change (the NEW root for "verify")."""
