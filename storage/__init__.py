"""agenthost persistence: ids, on-disk layout, the SQLite database (APSW, WAL) and Markdown transcripts.

Contract: plain synchronous code with no threads; the persistence actor is its only runtime user and owns the one
database connection. Every error derives from ``StorageError``; see each private module's docstring for details.
"""

from ._database import MAX_SETTINGS_BYTES, CheckpointMode, Database
from ._errors import (
    InvalidIdError,
    SchemaError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
    StorageIOError,
    TurnAlreadyFinishedError,
    UnknownThreadError,
    UnknownTurnError,
)
from ._health import RESTARTED_NOTE, Finding, FindingStatus, check_storage
from ._ids import ID_PATTERN, validate_id
from ._lock import RootLock, RootLockedError
from ._migrate import (
    MigrationError,
    MigrationHooks,
    MigrationReport,
    MigrationStep,
    migrate_storage,
    resolve_root,
    root_in_use,
)
from ._paths import StorageRoot, private_mkdir
from ._permissions import check_permissions, make_private
from ._quarantine import QuarantineReport, open_or_quarantine, quarantine, quarantine_runtime_state
from ._rebuild import import_transcript
from ._rows import (
    TERMINAL_TURN_STATUSES,
    ActionCardRow,
    DispatchMode,
    FollowUpRow,
    FollowUpStart,
    FollowUpState,
    MappingPin,
    MappingRow,
    ProjectRow,
    QueueHead,
    ThreadRow,
    ThreadSettings,
    TurnFinish,
    TurnRow,
    TurnStatus,
)
from ._transcript_parser import (
    ParsedCard,
    ParsedThread,
    ParsedTurn,
    TranscriptParseError,
    parse_transcript,
    parsed_rows,
    render_transcript_v1,
)
from ._transcript_sync import TranscriptCheck, TranscriptWriter, fsync_transcripts, sync_transcript
from ._transcripts import (
    PHASES,
    AtomicFs,
    TranscriptStore,
    atomic_write,
    checkpoint_phase,
    parse_checkpoints,
    readable,
    render_transcript,
)

__all__ = [
    "ID_PATTERN",
    "MAX_SETTINGS_BYTES",
    "PHASES",
    "RESTARTED_NOTE",
    "TERMINAL_TURN_STATUSES",
    "ActionCardRow",
    "AtomicFs",
    "CheckpointMode",
    "Database",
    "DispatchMode",
    "Finding",
    "FindingStatus",
    "FollowUpRow",
    "FollowUpStart",
    "FollowUpState",
    "InvalidIdError",
    "MappingPin",
    "MappingRow",
    "MigrationError",
    "MigrationHooks",
    "MigrationReport",
    "MigrationStep",
    "ParsedCard",
    "ParsedThread",
    "ParsedTurn",
    "ProjectRow",
    "QuarantineReport",
    "QueueHead",
    "RootLock",
    "RootLockedError",
    "SchemaError",
    "StorageCorruptError",
    "StorageError",
    "StorageFullError",
    "StorageIOError",
    "StorageRoot",
    "ThreadRow",
    "ThreadSettings",
    "TranscriptCheck",
    "TranscriptParseError",
    "TranscriptStore",
    "TranscriptWriter",
    "TurnAlreadyFinishedError",
    "TurnFinish",
    "TurnRow",
    "TurnStatus",
    "UnknownThreadError",
    "UnknownTurnError",
    "atomic_write",
    "check_permissions",
    "check_storage",
    "checkpoint_phase",
    "fsync_transcripts",
    "import_transcript",
    "make_private",
    "migrate_storage",
    "open_or_quarantine",
    "parse_checkpoints",
    "parse_transcript",
    "parsed_rows",
    "private_mkdir",
    "quarantine",
    "quarantine_runtime_state",
    "readable",
    "render_transcript",
    "render_transcript_v1",
    "resolve_root",
    "root_in_use",
    "sync_transcript",
    "validate_id",
]
