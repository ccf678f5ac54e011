"""Opening the persistence actor's database: quarantine and rebuild when corrupt, then the start-up repairs.

Contract: `open_and_repair(root, vfs, now)` opens `root`'s database with its quick_check. A database that fails it
(or is not a database) is moved into `system/quarantine/<timestamp>-<reason>/` and rebuilt from the transcripts
(storage's `open_or_quarantine`; one "storage.quarantined" error event). With `vfs` (fault-injection runs) nothing
is quarantined: a failed quick_check raises `StorageCorruptError`, so the injected error surfaces. Then the
start-up health checks run with repairs (after a rebuild also every transcript, orphans and temp files), each
finding one "storage.health" event (info when ok, else warning). Any failure closes the database (no checkpoint)
and is raised.
"""

from __future__ import annotations

from agenthost.actors._log import get_logger
from agenthost.storage import (
    Database,
    QuarantineReport,
    StorageCorruptError,
    StorageRoot,
    check_storage,
    open_or_quarantine,
)

__all__ = ["open_and_repair"]

_log = get_logger("agenthost.persistence")


def open_and_repair(root: StorageRoot, vfs: str | None, now: float) -> Database:
    """Open the database (quick_check included); a corrupt one is quarantined and rebuilt from the transcripts.
    Then the start-up health checks run with repairs; every finding is one "storage.health" event."""
    quarantined: QuarantineReport | None = None
    if vfs is None:
        db, quarantined = open_or_quarantine(root, now)
        if quarantined is not None:
            _log.error(
                "storage.quarantined",
                reason=quarantined.reason,
                moved=list(quarantined.moved),
                into=quarantined.into,
                rebuilt_threads=quarantined.rebuilt_threads,
                rebuilt_turns=quarantined.rebuilt_turns,
                skipped=list(quarantined.skipped),
            )
    else:  # fault-injection runs: no quarantine, the injected error must surface
        db = Database.open(root.db_path, vfs=vfs)
        problems = db.quick_check()
        if problems != ["ok"]:
            db.close(checkpoint=False)
            raise StorageCorruptError(f"database {str(root.db_path)!r} failed quick_check: {problems[:5]}")
    try:
        full = quarantined is not None  # after a rebuild: every transcript, orphans and temp files too
        for finding in check_storage(db, root, repair=True, now=now, pending_turns=False, full=full):
            log = _log.info if finding.status == "ok" else _log.warning
            log(
                "storage.health",
                kind=finding.kind,
                subject=finding.subject,
                status=finding.status,
                detail=finding.detail,
            )
    except BaseException:
        db.close(checkpoint=False)
        raise
    return db
