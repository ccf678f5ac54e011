"""Storage health checks and repairs (the `doctor` command; the host runs the start-up part of them at start).

Contract: ``check_storage(db, root, repair=False, now=None, pending_turns=True, full=True)`` returns one ``Finding``
per problem (status "problem", or "repaired" when ``repair`` fixed it) plus one "ok" summary per check that found
nothing wrong, in this order:
- integrity: ``PRAGMA quick_check``. No repair here (a corrupt database is quarantined by ``open_or_quarantine``).
- pending turns: a turn still pending in the database. Expected while a host runs; with the host stopped it can
  never finish. Repair: mark it failed with ``RESTARTED_NOTE`` (the coordinator's start-up wording) as its error,
  keeping its assistant text, and append its end to the transcript.
- project folders: ``projects/<id>/threads/`` missing for a project in the database. Repair: create it.
- transcripts: a thread's transcript is missing, unreadable, has a torn tail, lacks records the database has or
  contradicts it (a v1 transcript: its markers disagree with the turns); see storage._transcript_sync. Repair: cut
  the torn tail and append what it lacks, or rewrite it from the database (the database is the source of truth).
  With ``repair``, every thread found (or made) in sync is unmarked (``Database.mark_transcripts_synced``).
- orphan transcripts: ``projects/*/threads/*.md`` without its thread in the database. Repair: import it (see
  ``import_transcript``); when it cannot be imported (unparseable, wrong folder, ids already used) move it to the
  quarantine instead.
- temp files: leftover ``.*.tmp`` files in threads folders (an atomic write interrupted by a crash). Repair: delete.
- mappings: one "ok" summary of the thread -> worker pins (pins to workers that are not up are re-pinned by the
  host on next use); a worker id below 1 is a problem, repaired by deleting that mapping.
- quarantine: one "ok" line per folder under ``system/quarantine`` (kept for the user to review and delete).
``full=False`` is the host's start, right after ``open_or_quarantine`` ran quick_check: its work does not grow with
the number of threads. It skips integrity, orphan transcripts and temp files (``doctor`` checks them) and checks
only the transcripts of the threads the database marks as changed since their transcript was last known to hold
every change (``Database.dirty_transcripts``). Without ``repair`` nothing is written. With it, ``now`` (wall-clock
seconds) is required. Repairs are not safe while a host is running on the root (its pending turns would be failed
under it): the CLI refuses then.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ._database import Database
from ._errors import StorageError
from ._paths import StorageRoot, private_mkdir
from ._quarantine import quarantine, quarantine_dir
from ._rebuild import import_transcript, read_transcript_file, transcript_paths
from ._transcript_sync import sync_transcript
from ._transcripts import TranscriptStore

__all__ = ["RESTARTED_NOTE", "Finding", "FindingStatus", "check_storage"]

FindingStatus = Literal["ok", "repaired", "problem"]
RESTARTED_NOTE = "agenthost restarted while this turn was running; it did not finish. Send the message again."


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    subject: str
    status: FindingStatus
    detail: str

    def line(self) -> str:
        return f"[{self.status}] {self.kind} {self.subject}: {self.detail}"


def check_storage(
    db: Database,
    root: StorageRoot,
    *,
    repair: bool = False,
    now: float | None = None,
    pending_turns: bool = True,
    full: bool = True,
) -> list[Finding]:
    """Run the checks in order (see the module contract). `pending_turns=False` leaves pending turns to the caller
    (the host's turn coordinator settles them itself, so it can tell the callers it still knows); `full=False` is
    the start-up subset."""
    if repair and now is None:
        raise StorageError("check_storage: now is required when repair=True")
    stamp = 0.0 if now is None else now
    return [
        *(_check_integrity(db) if full else []),
        *(_check_pending_turns(db, root, repair, stamp) if pending_turns else []),
        *_check_project_folders(db, root, repair),
        *_check_transcripts(db, root, repair, full),
        *(_check_orphan_transcripts(db, root, repair, stamp) if full else []),
        *(_check_temp_files(root, repair) if full else []),
        *_check_mappings(db, repair),
        *_check_quarantine(root),
    ]


def _check_integrity(db: Database) -> list[Finding]:
    found = db.quick_check()
    if found == ["ok"]:
        return [Finding(kind="integrity", subject=str(db.path), status="ok", detail="quick_check ok")]
    detail = f"quick_check found {found[:3]!r}; run doctor --repair to quarantine it and rebuild from transcripts"
    return [Finding(kind="integrity", subject=str(db.path), status="problem", detail=detail)]


def _check_pending_turns(db: Database, root: StorageRoot, repair: bool, now: float) -> list[Finding]:
    pending = db.pending_turns()
    if not pending:
        return [_ok("pending-turns", "database", "no turn is pending")]
    findings = []
    for turn in pending:
        subject = f"{turn.turn_id} (thread {turn.thread_id})"
        if not repair:
            detail = "pending in the database; with the host stopped it never finishes"
            findings.append(_problem("pending-turn", subject, detail))
            continue
        db.finish_turn(turn.turn_id, "failed", turn.assistant_text, RESTARTED_NOTE, now)
        sync_transcript(db, TranscriptStore(root), turn.thread_id, repair=True)
        findings.append(_repaired("pending-turn", subject, f"marked failed: {RESTARTED_NOTE}"))
    return findings


def _check_project_folders(db: Database, root: StorageRoot, repair: bool) -> list[Finding]:
    projects = db.list_projects()
    missing = [project for project in projects if not root.threads_dir(project.project_id).is_dir()]
    if not missing:
        return [_ok("project-folders", str(root.projects_dir), f"{len(projects)} present")]
    findings = []
    for project in missing:
        folder = root.threads_dir(project.project_id)
        if repair:
            private_mkdir(folder)
            findings.append(_repaired("project-folder", str(folder), "created"))
        else:
            findings.append(_problem("project-folder", str(folder), "missing"))
    return findings


def _check_transcripts(db: Database, root: StorageRoot, repair: bool, full: bool) -> list[Finding]:
    threads = db.list_threads() if full else db.dirty_transcripts()
    store = TranscriptStore(root)
    findings = []
    in_sync = []
    for thread in threads:
        check = sync_transcript(db, store, thread.thread_id, repair=repair)
        in_sync.append(thread.thread_id)
        if check.problem is None:
            continue
        if repair:
            findings.append(_repaired("transcript", check.path, f"{check.problem}; {check.repaired}"))
        else:
            findings.append(_problem("transcript", check.path, check.problem))
    if repair and in_sync:
        db.mark_transcripts_synced(in_sync)
    which = "agree with the database" if full else "changed since they were last in sync: all agree now"
    return findings or [_ok("transcripts", str(root.projects_dir), f"{len(threads)} {which}")]


def _check_orphan_transcripts(db: Database, root: StorageRoot, repair: bool, now: float) -> list[Finding]:
    known = {root.transcript_path(thread.project_id, thread.thread_id) for thread in db.list_threads()}
    orphans = [path for path in transcript_paths(root) if path not in known]
    if not orphans:
        return [_ok("orphan-transcripts", str(root.projects_dir), "none")]
    findings = []
    for path in orphans:
        if not repair:
            findings.append(_problem("orphan-transcript", str(path), "no thread in the database"))
            continue
        try:
            parsed = read_transcript_file(root, path)
            turns = import_transcript(db, parsed, now)
            detail = f"imported thread {parsed.thread_id} with {turns} turns"
        except (StorageError, OSError, UnicodeDecodeError) as error:
            report = quarantine(root, [path], "orphan transcript", now)
            detail = f"cannot import ({error}); moved to {report.into}"
        findings.append(_repaired("orphan-transcript", str(path), detail))
    return findings


def _check_temp_files(root: StorageRoot, repair: bool) -> list[Finding]:
    temps = sorted(root.projects_dir.glob("*/threads/.*.tmp"))
    if not temps:
        return [_ok("temp-files", str(root.projects_dir), "none")]
    findings = []
    for temp in temps:
        if repair:
            temp.unlink(missing_ok=True)
            findings.append(_repaired("temp-file", str(temp), "deleted"))
        else:
            findings.append(_problem("temp-file", str(temp), "left over from an interrupted write"))
    return findings


def _check_mappings(db: Database, repair: bool) -> list[Finding]:
    findings = []
    for mapping in db.invalid_mappings():
        detail = f"pinned to worker {mapping.worker_id}; worker ids start at 1"
        if repair:
            db.delete_mapping(mapping.thread_id)
            findings.append(_repaired("mapping", mapping.thread_id, f"{detail}; mapping deleted"))
        else:
            findings.append(_problem("mapping", mapping.thread_id, detail))
    per_worker = {worker: count for worker, count in db.mapping_pins().items() if worker >= 1}
    pins = ", ".join(f"worker {worker}: {count}" for worker, count in sorted(per_worker.items())) or "none"
    findings.append(_ok("mappings", "database", f"{sum(per_worker.values())} threads pinned ({pins})"))
    return findings


def _check_quarantine(root: StorageRoot) -> list[Finding]:
    folder = quarantine_dir(root)
    entries = sorted(entry for entry in folder.iterdir() if entry.is_dir()) if folder.is_dir() else []
    findings = []
    for entry in entries:
        count = sum(1 for path in entry.rglob("*") if path.is_file())
        findings.append(_ok("quarantine", str(entry), f"{count} files kept aside; review, then delete the folder"))
    return findings or [_ok("quarantine", str(folder), "empty")]


def _ok(kind: str, subject: str, detail: str) -> Finding:
    return Finding(kind=kind, subject=subject, status="ok", detail=detail)


def _repaired(kind: str, subject: str, detail: str) -> Finding:
    return Finding(kind=kind, subject=subject, status="repaired", detail=detail)


def _problem(kind: str, subject: str, detail: str) -> Finding:
    return Finding(kind=kind, subject=subject, status="problem", detail=detail)
