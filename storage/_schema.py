"""Schema migrations, tracked in ``PRAGMA user_version``.

Contract: ``MIGRATIONS`` is an ordered list of ``(version, sql)`` with versions 1, 2, 3, ... ``apply_migrations``
runs every migration newer than the database's ``user_version``, each in its own transaction together with the
``user_version`` bump, so a failing migration leaves the database at the previous version. Reopening an up-to-date
database runs nothing. A database whose ``user_version`` is newer than ``SCHEMA_VERSION`` raises ``SchemaError``
("database schema version 9 is newer than supported 1") and is not modified.

Tables are STRICT (SQLite >= 3.37), so a value of the wrong type is refused instead of stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import apsw

from ._errors import SchemaError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "apply_migrations"]

_V1_SQL = """
CREATE TABLE projects (
    project_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at REAL NOT NULL
) STRICT;

CREATE TABLE threads (
    thread_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(project_id),
    title TEXT NOT NULL,
    created_at REAL NOT NULL
) STRICT;
CREATE INDEX threads_by_project ON threads(project_id);
CREATE INDEX threads_by_created ON threads(created_at, thread_id);

CREATE TABLE runtime_thread_mappings (
    thread_id TEXT PRIMARY KEY REFERENCES threads(thread_id) ON DELETE CASCADE,
    worker_id INTEGER NOT NULL,
    runtime_thread_id TEXT,
    updated_at REAL NOT NULL
) STRICT;

CREATE TABLE turns (
    turn_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads(thread_id),
    seq INTEGER NOT NULL CHECK (seq >= 1),
    user_text TEXT NOT NULL,
    assistant_text TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed', 'interrupted')),
    error TEXT,
    worker_id INTEGER,
    created_at REAL NOT NULL,
    finished_at REAL,
    CHECK ((status = 'pending') = (finished_at IS NULL)),
    UNIQUE (thread_id, seq)
) STRICT;
CREATE INDEX turns_pending ON turns(created_at, thread_id, seq) WHERE status = 'pending';

CREATE TABLE action_cards (
    card_id INTEGER PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads(thread_id),
    turn_id TEXT REFERENCES turns(turn_id),
    kind TEXT NOT NULL CHECK (kind <> ''),
    text TEXT NOT NULL,
    created_at REAL NOT NULL
) STRICT;
CREATE INDEX action_cards_by_thread ON action_cards(thread_id, card_id);
CREATE INDEX action_cards_by_turn ON action_cards(turn_id);

CREATE TABLE followups (
    followup_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads(thread_id),
    seq INTEGER NOT NULL CHECK (seq >= 1),
    text TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'done', 'failed')),
    created_at REAL NOT NULL,
    UNIQUE (thread_id, seq)
) STRICT;
CREATE INDEX followups_queued ON followups(thread_id, seq) WHERE state = 'queued';
"""

# v2: a follow-up keeps the error of its last failed turn and that turn's id, can be cancelled, and a failed one
# can be retried (queued again, it runs as a new turn); a thread has a dispatch mode (auto: queued follow-ups run
# one after the other; manual: each waits to be sent).
_V2_SQL = """
CREATE TABLE followups_v2 (
    followup_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL REFERENCES threads(thread_id),
    seq INTEGER NOT NULL CHECK (seq >= 1),
    text TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'done', 'failed', 'cancelled')),
    created_at REAL NOT NULL,
    turn_id TEXT,
    last_error TEXT,
    UNIQUE (thread_id, seq)
) STRICT;
INSERT INTO followups_v2 (followup_id, thread_id, seq, text, state, created_at, turn_id, last_error)
    SELECT followup_id, thread_id, seq, text, state, created_at,
           CASE WHEN state = 'queued' THEN NULL ELSE followup_id END, NULL
    FROM followups;
DROP TABLE followups;
ALTER TABLE followups_v2 RENAME TO followups;
CREATE INDEX followups_queued ON followups(thread_id, seq) WHERE state = 'queued';
ALTER TABLE threads ADD COLUMN dispatch_mode TEXT NOT NULL DEFAULT 'auto' CHECK (dispatch_mode IN ('auto', 'manual'));
"""

# v3: a thread keeps its runtime settings (storage._rows.ThreadSettings as JSON), so a thread that fails over to
# another worker, or is resumed after a restart, runs with the parameters its client gave.
_V3_SQL = """
ALTER TABLE threads ADD COLUMN settings TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings));
"""

# v4: the threads whose transcript may lack a committed change. Every change a transcript shows (a thread created or
# renamed, a turn begun or finished, a card added) marks its thread in the same transaction (triggers); the
# persistence actor unmarks threads once their transcript holds every change, so a start checks only the marked
# ones. Existing threads start marked: the first start on v4 checks each transcript once.
_V4_SQL = """
CREATE TABLE transcript_dirty (
    thread_id TEXT PRIMARY KEY REFERENCES threads(thread_id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
INSERT INTO transcript_dirty (thread_id) SELECT thread_id FROM threads;
CREATE TRIGGER transcript_dirty_thread_created AFTER INSERT ON threads BEGIN
    INSERT OR IGNORE INTO transcript_dirty (thread_id) VALUES (NEW.thread_id);
END;
CREATE TRIGGER transcript_dirty_thread_renamed AFTER UPDATE OF title ON threads WHEN NEW.title IS NOT OLD.title BEGIN
    INSERT OR IGNORE INTO transcript_dirty (thread_id) VALUES (NEW.thread_id);
END;
CREATE TRIGGER transcript_dirty_turn_begun AFTER INSERT ON turns BEGIN
    INSERT OR IGNORE INTO transcript_dirty (thread_id) VALUES (NEW.thread_id);
END;
CREATE TRIGGER transcript_dirty_turn_finished AFTER UPDATE OF status, assistant_text, error ON turns BEGIN
    INSERT OR IGNORE INTO transcript_dirty (thread_id) VALUES (NEW.thread_id);
END;
CREATE TRIGGER transcript_dirty_card_added AFTER INSERT ON action_cards BEGIN
    INSERT OR IGNORE INTO transcript_dirty (thread_id) VALUES (NEW.thread_id);
END;
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1_SQL), (2, _V2_SQL), (3, _V3_SQL), (4, _V4_SQL))
SCHEMA_VERSION: int = MIGRATIONS[-1][0]


def apply_migrations(conn: apsw.Connection, migrations: Sequence[tuple[int, str]] = MIGRATIONS) -> int:
    """Bring ``conn`` up to the newest version in ``migrations``; return the resulting ``user_version``."""
    _check_numbering(migrations)
    supported = migrations[-1][0] if migrations else 0
    current = int(conn.pragma("user_version"))
    if current > supported:
        raise SchemaError(f"database schema version {current} is newer than supported {supported}")
    for version, sql in migrations:
        if version > current:
            with conn:
                conn.execute(sql)
                conn.pragma("user_version", version)
            current = version
    return current


def _check_numbering(migrations: Sequence[tuple[int, str]]) -> None:
    versions = [version for version, _sql in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"migration versions must be 1, 2, 3, ... in order, got {versions!r}")
