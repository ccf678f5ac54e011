"""The storage subcommands of `agenthost`: `migrate-storage` and `doctor`.

`agenthost._cli` wires them in: `add_storage_commands(subparsers)` adds both parsers; `run_storage_command(args)`
runs the parsed command and returns the exit code.
- `migrate-storage --root OLD NEW_ROOT`: stop the host first. Copies, verifies, switches (see `storage._migrate`);
  prints the report. Exit 0 when switched; 1 when refused, failed (rerun to resume) or rolled back.
- `doctor --root R [--repair]`: follows a completed migration's pointer, then prints one line per finding,
  `[ok|repaired|problem] <kind> <subject>: <detail>` (see `storage._health`). Read-only unless `--repair`; with it,
  a corrupt database is first quarantined and rebuilt from the transcripts, and a root whose host is running
  (lock held) is refused. Exit 1 if a problem remains, else 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agenthost._cli_common import HelpFormatter
from agenthost.storage import (
    Database,
    Finding,
    MigrationError,
    MigrationReport,
    StorageError,
    StorageRoot,
    check_permissions,
    check_storage,
    migrate_storage,
    open_or_quarantine,
    resolve_root,
    root_in_use,
)

__all__ = ["STORAGE_COMMANDS", "add_storage_commands", "run_storage_command"]

STORAGE_COMMANDS: tuple[str, ...] = ("migrate-storage", "doctor")


def add_storage_commands(subparsers: Any) -> None:
    """Add `migrate-storage` and `doctor` to an argparse subparsers object (dest must be "command")."""
    formatter = HelpFormatter
    migrate = subparsers.add_parser(
        "migrate-storage", help="move a storage root to a new folder (stop the host first)", formatter_class=formatter
    )
    migrate.add_argument("--root", required=True, help="the current storage root (kept after the move)")
    migrate.add_argument("new_root", metavar="NEW_ROOT", help="an empty or missing folder")
    doctor = subparsers.add_parser(
        "doctor", help="check a storage root (read-only unless --repair)", formatter_class=formatter
    )
    doctor.add_argument("--root", required=True, help="storage root")
    doctor.add_argument("--repair", action="store_true", help="apply the repairs (stop the host first)")


def run_storage_command(args: argparse.Namespace) -> int:
    if args.command == "migrate-storage":
        return _migrate(StorageRoot(args.root), StorageRoot(args.new_root))
    if args.command == "doctor":
        return _doctor(StorageRoot(args.root), repair=bool(args.repair))
    raise ValueError(f"command {args.command!r} is not a storage command: expected one of {STORAGE_COMMANDS}")


def _migrate(old: StorageRoot, new: StorageRoot) -> int:
    try:
        report = migrate_storage(old, new)
    except MigrationError as error:
        print(f"agenthost: migrate-storage: {error}", file=sys.stderr)
        return 1
    print(_format_report(report))
    return 0 if report.state == "switched" else 1


def _format_report(report: MigrationReport) -> str:
    lines = [
        f"state: {report.state}",
        f"old root: {report.old_root}",
        f"new root: {report.new_root}",
        f"database pages: {report.db_pages}",
        f"transcripts: {report.transcripts}",
        f"bytes copied: {report.bytes_copied}",
        f"resumed: {'yes' if report.resumed else 'no'}",
    ]
    if report.detail:
        lines.append(f"detail: {report.detail}")
    if report.state == "switched":
        lines.append(f"the old root is kept: check the new one, then delete {report.old_root} yourself")
    return "\n".join(lines)


def _doctor(root: StorageRoot, *, repair: bool) -> int:
    findings: list[Finding] = []
    try:
        target = resolve_root(root)
    except MigrationError as error:
        return _print_findings([_problem("root", str(root.root), str(error))])
    if target != root:
        moved = f"moved to {target.root}; checking that root"
        findings.append(Finding(kind="root", subject=str(root.root), status="ok", detail=moved))
    if not target.db_path.is_file():
        return _print_findings([*findings, _problem("database", str(target.db_path), "missing")])
    if repair and root_in_use(target):
        detail = "a running host holds the lock; stop it before repairing"
        return _print_findings([*findings, _problem("root", str(target.root), detail)])
    now = time.time()
    try:
        db = _open(target, repair, now, findings)
    except StorageError as error:
        hint = "" if repair else "; doctor --repair quarantines a corrupt database and rebuilds it from the transcripts"
        return _print_findings([*findings, _problem("database", str(target.db_path), f"{error}{hint}")])
    try:
        findings.extend(check_storage(db, target, repair=repair, now=now if repair else None))
    finally:
        db.close(checkpoint=repair)
    findings.extend(check_permissions(target, repair=repair))
    return _print_findings(findings)


def _open(root: StorageRoot, repair: bool, now: float, findings: list[Finding]) -> Database:
    if not repair:
        return Database.open(root.db_path)
    db, report = open_or_quarantine(root, now)
    if report is not None:
        detail = (
            f"{report.reason}: moved {list(report.moved)} to {report.into or '-'}; rebuilt {report.rebuilt_threads}"
            f" threads, {report.rebuilt_turns} turns from transcripts"
        )
        if report.skipped:  # the orphan-transcript check below imports or quarantines each of them
            detail += f"; {len(report.skipped)} transcripts skipped: {list(report.skipped)[:3]}"
        findings.append(Finding(kind="database", subject=str(root.db_path), status="repaired", detail=detail))
    return db


def _print_findings(findings: list[Finding]) -> int:
    for finding in findings:
        print(finding.line())
    return 1 if any(finding.status == "problem" for finding in findings) else 0


def _problem(kind: str, subject: str, detail: str) -> Finding:
    return Finding(kind=kind, subject=subject, status="problem", detail=detail)
