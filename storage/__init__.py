"""agenthost persistence: ids, on-disk layout, the SQLite database (APSW, WAL) and Markdown transcripts.

Contract: plain synchronous code with no threads; the persistence actor is its only runtime user and owns the one
database connection. Every error derives from ``StorageError``; see each private module's docstring for details.
"""

from ._database import Database
from ._errors import (
    InvalidIdError,
    SchemaError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
    StorageIOError,
    UnknownThreadError,
    UnknownTurnError,
)
from ._ids import ID_PATTERN, validate_id
from ._paths import StorageRoot
from ._rows import (
    ActionCardRow,
    FollowUpRow,
    FollowUpState,
    MappingRow,
    ProjectRow,
    ThreadRow,
    TurnFinish,
    TurnRow,
    TurnStatus,
)
from ._transcripts import (
    PHASES,
    AtomicFs,
    ThreadDocument,
    TranscriptStore,
    atomic_write,
    checkpoint_phase,
    parse_checkpoints,
    render_transcript,
)

__all__ = [
    "ID_PATTERN",
    "PHASES",
    "ActionCardRow",
    "AtomicFs",
    "Database",
    "FollowUpRow",
    "FollowUpState",
    "InvalidIdError",
    "MappingRow",
    "ProjectRow",
    "SchemaError",
    "StorageCorruptError",
    "StorageError",
    "StorageFullError",
    "StorageIOError",
    "StorageRoot",
    "ThreadRow",
    "ThreadDocument",
    "TranscriptStore",
    "TurnFinish",
    "TurnRow",
    "TurnStatus",
    "UnknownThreadError",
    "UnknownTurnError",
    "atomic_write",
    "checkpoint_phase",
    "parse_checkpoints",
    "render_transcript",
]
