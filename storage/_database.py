"""The agenthost SQLite database: one APSW connection in WAL mode (storage._dbcore) plus typed repository methods
(this module, and the follow-up queue in storage._followups).

Contract:
- ``Database.open(path)`` opens (creating if absent; the parent folder must exist) and configures the connection,
  then verifies each setting by reading it back, raising ``SchemaError`` naming the pragma if it did not take:
  journal_mode=WAL, synchronous=FULL (2), automatic WAL checkpoints off (0), busy timeout 5000 ms,
  foreign_keys=ON. It then runs the schema migrations (see ``_schema``). An in-memory database is refused
  (its journal mode cannot be WAL).
- The object is not thread-safe by design: the persistence actor owns it and uses it from one thread.
- Every write runs in exactly one transaction; ``finish_turns`` finishes many turns in one transaction (all or
  nothing). Times are caller-supplied wall-clock float seconds (``now``).
- Bad input raises ``StorageError`` (or ``InvalidIdError`` / ``UnknownThreadError`` / ``UnknownTurnError``) naming
  the bad value; the transaction is rolled back. SQLite I/O failures (IOError, FullError, CantOpenError,
  ReadOnlyError, CorruptError, NotADBError) raise ``StorageIOError`` with the apsw exception as ``__cause__``; any
  other apsw error raises ``StorageError``, also chained.
- Terminal states are final: a turn that is completed/failed/interrupted cannot be finished again nor get a worker;
  a follow-up that is done or cancelled cannot change state (storage._followups has the queue's rules).
- A thread keeps its runtime settings (``ThreadSettings``: thread-level and per-turn parameters for the runtime);
  ``update_thread`` renames it and merges settings (a key given as None is removed), at most
  ``MAX_SETTINGS_BYTES`` (64 KiB) of JSON.
- Listing order: projects and threads by (created_at, id); turns and follow-ups by seq; action cards by card_id
  (insertion order); pending turns by (created_at, thread_id, seq); mappings by thread_id.
- ``take_back`` undoes begins and enqueues whose callers heard "refused" but which committed after all (an answer
  past the asker's deadline): the turns end "failed", their follow-ups are queued again, enqueued ones cancelled.
- ``batch(action)`` groups operations into one transaction (each one's own becomes a savepoint): all are
  committed together, or none.
- Transcript bookkeeping: every change a transcript shows marks its thread in the same transaction (storage._schema
  v4); ``dirty_transcripts`` lists the marked threads, ``mark_transcripts_synced`` unmarks threads whose transcript
  holds every change. ``mapping_pins`` / ``invalid_mappings`` summarise the mappings without loading every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from ._dbcore import (
    BUSY_TIMEOUT_MS,
    CheckpointMode,
    _columns,
    _fields_of,
    _integer,
    _optional_text,
    _row,
    _text,
    _time,
    _values,
)
from ._errors import StorageCorruptError, StorageError, TurnAlreadyFinishedError
from ._followups import FollowUpQueue
from ._ids import validate_id
from ._rows import (
    TERMINAL_TURN_STATUSES,
    ActionCardRow,
    MappingPin,
    MappingRow,
    ProjectRow,
    ThreadRow,
    ThreadSettings,
    TurnFinish,
    TurnRow,
)
from ._transaction import translate_errors

__all__ = ["BUSY_TIMEOUT_MS", "MAX_SETTINGS_BYTES", "CheckpointMode", "Database"]

MAX_SETTINGS_BYTES = 64 * 1024
# A turn's end in one statement; no row returned: the turn is unknown or already finished. A worker id None keeps
# the one the turn has.
_FINISH_SQL = (
    "UPDATE turns SET status = ?1, assistant_text = ?2, error = ?3, finished_at = ?4,"
    f" worker_id = COALESCE(?5, worker_id) WHERE turn_id = ?6 AND status = 'pending' RETURNING {_columns(TurnRow)}"
)


def _merged(field: str, stored: dict[str, Any], changes: dict[str, Any] | None) -> dict[str, Any]:
    if changes is None:
        return stored
    if not isinstance(changes, dict) or not all(isinstance(key, str) for key in changes):
        raise StorageError(f"{field} {changes!r} are invalid: must be a JSON object")
    try:
        msgspec.json.encode(changes)
    except (TypeError, msgspec.EncodeError) as exc:
        raise StorageError(f"{field} are invalid: not JSON ({exc})") from None
    merged = {**stored, **changes}
    return {key: value for key, value in merged.items() if value is not None}


class Database(FollowUpQueue):
    """Typed access to the agenthost database. Create with ``Database.open(path)``."""

    __slots__ = ()

    # --- projects --------------------------------------------------------------------------------------------

    def ensure_project(self, project_id: str, name: str, now: float) -> ProjectRow:
        """Insert the project if absent; return the stored row (an existing row keeps its name and time)."""
        validate_id("project id", project_id)
        values = (project_id, _text("project name", name), _time("now", now))
        with self._transaction(f"ensuring project {project_id!r}"):
            self._conn.execute(
                "INSERT INTO projects (project_id, name, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (project_id) DO NOTHING",
                values,
            )
            return self._require_row(ProjectRow, "project_id", project_id)

    def list_projects(self) -> list[ProjectRow]:
        return self._select_all(ProjectRow, "projects", "", (), "created_at, project_id")

    # --- threads ---------------------------------------------------------------------------------------------

    def create_thread(self, thread_id: str, project_id: str, title: str, now: float) -> ThreadRow:
        validate_id("thread id", thread_id)
        validate_id("project id", project_id)
        row = ThreadRow(
            thread_id=thread_id, project_id=project_id, title=_text("thread title", title), created_at=_time("now", now)
        )
        with self._transaction(f"creating thread {thread_id!r}"):
            if self._select_one(ProjectRow, "project_id", project_id) is None:
                raise StorageError(
                    f"unknown project id {project_id!r} for thread {thread_id!r}: call ensure_project first"
                )
            if self._select_one(ThreadRow, "thread_id", thread_id) is not None:
                raise StorageError(f"thread id {thread_id!r} already exists")
            self._insert("threads", row)
            for table in ("turns", "followups"):  # a new thread has none: its first seqs are 1
                self._keep_next_seq(table, thread_id, 1)
        return row

    def get_thread(self, thread_id: str) -> ThreadRow:
        validate_id("thread id", thread_id)
        with translate_errors(f"reading thread {thread_id!r}"):
            return self._require_thread(thread_id)

    def list_threads(self) -> list[ThreadRow]:
        return self._select_all(ThreadRow, "threads", "", (), "created_at, thread_id")

    def update_thread(
        self,
        thread_id: str,
        *,
        title: str | None = None,
        thread_settings: dict[str, Any] | None = None,
        turn_settings: dict[str, Any] | None = None,
    ) -> ThreadRow:
        """Rename the thread and/or merge settings into its `ThreadSettings` (a key given as None is removed: the
        runtime's default applies again). Settings over `MAX_SETTINGS_BYTES` of JSON are refused."""
        validate_id("thread id", thread_id)
        new_title = None if title is None else _text("thread title", title)
        with self._transaction(f"updating thread {thread_id!r}"):
            row = self._require_thread(thread_id)
            settings = row.thread_settings()
            merged = ThreadSettings(
                thread=_merged("thread settings", settings.thread, thread_settings),
                turn=_merged("turn settings", settings.turn, turn_settings),
            )
            encoded = msgspec.json.encode(merged).decode()
            if len(encoded) > MAX_SETTINGS_BYTES:
                raise StorageError(
                    f"settings of thread {thread_id!r} are too large: {len(encoded)} bytes of JSON, "
                    f"at most {MAX_SETTINGS_BYTES}"
                )
            updated = msgspec.structs.replace(
                row, title=row.title if new_title is None else new_title, settings=encoded
            )
            self._conn.execute(
                "UPDATE threads SET title = ?, settings = ? WHERE thread_id = ?",
                (updated.title, updated.settings, thread_id),
            )
            self._forget_thread(thread_id)
        return updated

    # --- runtime-thread mappings -----------------------------------------------------------------------------

    def save_mapping(self, thread_id: str, worker_id: int, runtime_thread_id: str | None, now: float) -> MappingRow:
        """Insert or replace the thread's single mapping row."""
        validate_id("thread id", thread_id)
        row = MappingRow(
            thread_id=thread_id,
            worker_id=_integer("worker id", worker_id),
            runtime_thread_id=_optional_text("runtime thread id", runtime_thread_id),
            updated_at=_time("now", now),
        )
        with self._transaction(f"saving mapping of thread {thread_id!r}"):
            self._require_thread(thread_id)
            self._conn.execute(
                "INSERT INTO runtime_thread_mappings (thread_id, worker_id, runtime_thread_id, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (thread_id) DO UPDATE SET worker_id = excluded.worker_id, "
                "runtime_thread_id = excluded.runtime_thread_id, updated_at = excluded.updated_at",
                _values(row),
            )
        return row

    def delete_mapping(self, thread_id: str) -> None:
        """Remove the thread's mapping; no-op when it has none."""
        validate_id("thread id", thread_id)
        with self._transaction(f"deleting mapping of thread {thread_id!r}"):
            self._conn.execute("DELETE FROM runtime_thread_mappings WHERE thread_id = ?", (thread_id,))

    def load_mappings(self) -> list[MappingRow]:
        return self._select_all(MappingRow, "runtime_thread_mappings", "", (), "thread_id")

    def load_pins(self) -> list[MappingPin]:
        """Every mapping without its time, by thread id; a value of the wrong type raises ``StorageCorruptError``
        naming it."""
        sql = "SELECT thread_id, worker_id, runtime_thread_id FROM runtime_thread_mappings ORDER BY thread_id"
        with translate_errors("listing runtime_thread_mappings"):
            values = self._conn.execute(sql).fetchall()
        try:
            return msgspec.convert(values, list[MappingPin])
        except msgspec.ValidationError as error:
            raise StorageCorruptError(f"runtime_thread_mappings holds a bad value: {error}") from error

    def mapping_pins(self) -> dict[int, int]:
        """How many threads are pinned to each worker id (one aggregate query)."""
        sql = "SELECT worker_id, count(*) FROM runtime_thread_mappings GROUP BY worker_id ORDER BY worker_id"
        with translate_errors("counting mappings"):
            return {int(worker): int(count) for worker, count in self._conn.execute(sql)}

    def invalid_mappings(self) -> list[MappingRow]:
        """Mappings to a worker id below 1 (worker ids start at 1)."""
        return self._select_all(MappingRow, "runtime_thread_mappings", "WHERE worker_id < 1", (), "thread_id")

    # --- transcript bookkeeping ------------------------------------------------------------------------------

    def dirty_transcripts(self) -> list[ThreadRow]:
        """The threads whose transcript may lack a committed change (see the module contract)."""
        where = "WHERE thread_id IN (SELECT thread_id FROM transcript_dirty)"
        return self._select_all(ThreadRow, "threads", where, (), "created_at, thread_id")

    def mark_transcripts_synced(self, thread_ids: Sequence[str]) -> None:
        """Unmark threads whose transcript holds every committed change (one transaction; unknown ids are no-ops)."""
        rows = [(validate_id("thread id", thread_id),) for thread_id in thread_ids]
        with self._transaction(f"marking {len(rows)} transcripts in sync"):
            self._conn.executemany("DELETE FROM transcript_dirty WHERE thread_id = ?", rows)

    # --- turns -----------------------------------------------------------------------------------------------

    def begin_turn(self, turn_id: str, thread_id: str, user_text: str, now: float) -> TurnRow:
        """Insert a pending turn with seq = 1 + the thread's highest seq."""
        validate_id("turn id", turn_id)
        validate_id("thread id", thread_id)
        text = _text("user text", user_text)
        created_at = _time("now", now)
        with self._transaction(f"beginning turn {turn_id!r}"):
            return self._begin_turn_row(turn_id, thread_id, text, created_at)

    def set_turn_worker(self, turn_id: str, worker_id: int) -> None:
        """Record which worker runs the pending turn; a finished turn raises ``StorageError``."""
        validate_id("turn id", turn_id)
        worker = _integer("worker id", worker_id)
        with self._transaction(f"setting worker of turn {turn_id!r}"):
            turn = self._require_turn(turn_id)
            if turn.status != "pending":
                raise TurnAlreadyFinishedError(f"turn {turn_id!r} is already {turn.status}; terminal states are final")
            self._conn.execute("UPDATE turns SET worker_id = ? WHERE turn_id = ?", (worker, turn_id))

    def finish_turn(
        self,
        turn_id: str,
        status: Literal["completed", "failed", "interrupted"],
        assistant_text: str,
        error: str | None,
        now: float,
    ) -> TurnRow:
        return self.finish_turns([TurnFinish(turn_id, status, assistant_text, error, now)])[0]

    def finish_turns(self, finishes: Sequence[TurnFinish]) -> list[TurnRow]:
        """Finish every turn in one transaction (group commit): all are applied, or none and the error is raised."""
        if not finishes:
            return []
        turn_ids = [getattr(finish, "turn_id", finish) for finish in finishes]
        with self._transaction(f"finishing turns {turn_ids!r}"):
            return [self._finish_one(finish) for finish in finishes]

    def take_back(
        self, begun: Sequence[tuple[str, str | None]], enqueued: Sequence[str], error: str, now: float
    ) -> list[TurnRow]:
        """Undo, in one transaction, writes whose callers were told they were refused: `begun` is (turn id, the
        follow-up it ran or None); each such turn still pending ends "failed" with `error` and its follow-up,
        still dispatched with it, is queued again in its place (it runs as a new turn); each follow-up of
        `enqueued` still queued is cancelled. Anything already moved on is left as it is. Returns the turns it
        ended."""
        reason = _text("take-back error", error)
        ended: list[TurnRow] = []
        with self._transaction(f"taking back turns {[turn_id for turn_id, _ in begun]!r} and follow-ups {enqueued!r}"):
            for turn_id, followup_id in begun:
                turn = self._select_one(TurnRow, "turn_id", validate_id("turn id", turn_id))
                if turn is None or turn.status != "pending":
                    continue
                ended.append(self._finish_one(TurnFinish(turn_id, "failed", "", reason, now)))
                if followup_id is not None:
                    self._conn.execute(
                        "UPDATE followups SET state = 'queued' WHERE followup_id = ? AND turn_id = ?"
                        " AND state = 'dispatched'",
                        (validate_id("follow-up id", followup_id), turn_id),
                    )
            for followup_id in enqueued:
                self._conn.execute(
                    "UPDATE followups SET state = 'cancelled' WHERE followup_id = ? AND state = 'queued'",
                    (validate_id("follow-up id", followup_id),),
                )
        return ended

    def get_turn(self, turn_id: str) -> TurnRow:
        validate_id("turn id", turn_id)
        with translate_errors(f"reading turn {turn_id!r}"):
            return self._require_turn(turn_id)

    def list_turns(self, thread_id: str) -> list[TurnRow]:
        self.get_thread(thread_id)
        return self._select_all(TurnRow, "turns", "WHERE thread_id = ?", (thread_id,), "seq")

    def pending_turns(self) -> list[TurnRow]:
        return self._select_all(TurnRow, "turns", "WHERE status = 'pending'", (), "created_at, thread_id, seq")

    def _finish_one(self, finish: TurnFinish) -> TurnRow:
        if not isinstance(finish, TurnFinish):
            raise StorageError(f"expected a TurnFinish, got {finish!r}")
        validate_id("turn id", finish.turn_id)
        if finish.status not in TERMINAL_TURN_STATUSES:
            raise StorageError(
                f"turn status {finish.status!r} is not terminal: expected one of {TERMINAL_TURN_STATUSES}"
            )
        assistant_text = _text("assistant text", finish.assistant_text)
        error = _optional_text("turn error", finish.error)
        finished_at = _time("now", finish.now)
        worker_id = None if finish.worker_id is None else _integer("worker id", finish.worker_id)
        values = (finish.status, assistant_text, error, finished_at, worker_id, finish.turn_id)
        for row in self._conn.execute(_FINISH_SQL, values).fetchall():
            return _row(TurnRow, row)
        turn = self._require_turn(finish.turn_id)
        raise TurnAlreadyFinishedError(f"turn {finish.turn_id!r} is already {turn.status}; terminal states are final")

    # --- action cards ----------------------------------------------------------------------------------------

    def add_action_card(self, thread_id: str, turn_id: str | None, kind: str, text: str, now: float) -> ActionCardRow:
        """Append a user-facing note to the thread, optionally tied to one of its turns."""
        validate_id("thread id", thread_id)
        if turn_id is not None:
            validate_id("turn id", turn_id)
        values = (thread_id, turn_id, _card_kind(kind), _text("action card text", text), _time("now", now))
        with self._transaction(f"adding action card to thread {thread_id!r}"):
            self._require_thread(thread_id)
            if turn_id is not None:
                self._require_turn_of_thread(turn_id, thread_id)
            self._conn.execute(
                "INSERT INTO action_cards (thread_id, turn_id, kind, text, created_at) VALUES (?, ?, ?, ?, ?)", values
            )
            return ActionCardRow(card_id=self._conn.last_insert_rowid(), **_fields_of(ActionCardRow, values, skip=1))

    def list_action_cards(self, thread_id: str) -> list[ActionCardRow]:
        self.get_thread(thread_id)
        return self._select_all(ActionCardRow, "action_cards", "WHERE thread_id = ?", (thread_id,), "card_id")


def _card_kind(kind: object) -> str:
    text = _text("action card kind", kind)
    if not text or len(text.splitlines()) != 1 or text.splitlines()[0] != text:
        raise StorageError(f"action card kind {kind!r} is invalid: must be one non-empty line")
    return text
