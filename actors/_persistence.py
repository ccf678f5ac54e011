"""Persistence actor: the only owner of the database connection and the transcript files.

Contract:
- Every command is asked; when the reply arrives, the change is durable: the SQLite transaction is committed with
  synchronous=FULL in WAL mode, and the thread's Markdown transcript has been re-rendered from the database and
  written by atomic replace (temp file, fsync, rename, fsync of the folder). The transcript is therefore always a
  pure function of committed rows: a crash leaves it either at the old or at the new content.
- Automatic checkpoints are off; this actor runs a PASSIVE checkpoint every `checkpoint_interval_s` (injected
  clock) and a TRUNCATE checkpoint when it stops.
- Errors from storage (unknown ids, invalid ids, I/O errors) are raised to the asker; the actor keeps running.
- The database is opened when the actor is constructed, so `PersistenceActor.start()` raises the storage error
  (corrupt file, newer schema, unwritable folder) to the caller.
"""

from __future__ import annotations

from typing import Any, Callable

import msgspec
import pykka

from actors._clock import Clock, Timer
from actors._log import get_logger
from actors._refs import SupervisedActor, tell_quietly, unknown_message
from protocol._messages import (
    AddActionCard,
    BeginTurn,
    Checkpoint,
    CreateThread,
    DeleteMapping,
    EnqueueFollowUp,
    FinishTurn,
    GetThread,
    ListThreads,
    ListTurns,
    ListFollowUps,
    ListPendingTurns,
    LoadMappings,
    NextFollowUp,
    ReadTranscript,
    SaveMapping,
    SetFollowUpState,
)
from storage import Database, StorageRoot, TranscriptStore, render_transcript, validate_id

__all__ = ["PersistenceActor"]

_log = get_logger("agenthost.persistence")


class _CheckpointTick(msgspec.Struct, frozen=True):
    """Timer message: run the periodic PASSIVE checkpoint."""


class PersistenceActor(SupervisedActor):
    child_name = "persistence"

    def __init__(
        self,
        *,
        root: StorageRoot,
        clock: Clock,
        wall: Callable[[], float],
        checkpoint_interval_s: float = 5.0,
        supervisor_ref: Any = None,
    ) -> None:
        super().__init__(supervisor_ref=supervisor_ref)
        self._root = root
        self._clock = clock
        self._wall = wall
        self._interval = checkpoint_interval_s
        self._transcripts = TranscriptStore(root)
        self._timer: Timer | None = None
        # Opened here, in the starting thread, so that a database that cannot be opened fails `start()` itself
        # with the storage error instead of killing the actor silently (apsw connections may change threads).
        root.ensure()
        self._db: Database | None = Database.open(root.db_path)

    @property
    def db(self) -> Database:
        assert self._db is not None, "persistence actor not started"
        return self._db

    def on_child_start(self) -> None:
        assert self._db is not None
        _log.info("persistence.opened", path=str(self._root.db_path), schema=self._db.schema_version)
        self._schedule_checkpoint()

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._db is not None:
            self._db.close(checkpoint=True)
            _log.info("persistence.closed", checkpoint="TRUNCATE")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        if self._db is not None:
            self._db.close(checkpoint=False)
        super().on_failure(exception_type, exception_value, traceback)

    def _schedule_checkpoint(self) -> None:
        ref = self.actor_ref
        self._timer = self._clock.call_later(self._interval, lambda: tell_quietly(ref, _CheckpointTick()))

    def on_receive(self, message: Any) -> Any:
        db = self.db
        now = self._wall()
        match message:
            case CreateThread():
                return self._create_thread(message, now)
            case GetThread():
                return db.get_thread(message.thread_id)
            case BeginTurn():
                row = db.begin_turn(message.turn_id, message.thread_id, message.user_text, now)
                self._write_transcript(message.thread_id)
                return row
            case FinishTurn():
                return self._finish_turn(message, now)
            case AddActionCard():
                row = db.add_action_card(message.thread_id, message.turn_id, message.kind, message.text, now)
                self._write_transcript(message.thread_id)
                return row
            case SaveMapping():
                return db.save_mapping(message.thread_id, message.worker_id, message.runtime_thread_id, now)
            case DeleteMapping():
                return db.delete_mapping(message.thread_id)
            case LoadMappings():
                return db.load_mappings()
            case ListPendingTurns():
                return db.pending_turns()
            case ListFollowUps():
                return db.list_followups(message.thread_id)
            case ListThreads():
                return db.list_threads()
            case ListTurns():
                return db.list_turns(message.thread_id)
            case ReadTranscript():
                thread = db.get_thread(message.thread_id)
                return self._transcripts.read(thread.project_id, thread.thread_id)
            case EnqueueFollowUp():
                return db.enqueue_followup(message.followup_id, message.thread_id, message.text, now)
            case NextFollowUp():
                return db.next_followup(message.thread_id)
            case SetFollowUpState():
                return db.set_followup_state(message.followup_id, message.state)
            case Checkpoint():
                return self._checkpoint(message.mode)
            case _CheckpointTick():
                self._checkpoint("PASSIVE")
                self._schedule_checkpoint()
                return None
            case _:
                unknown_message("persistence actor", message)

    def _create_thread(self, message: CreateThread, now: float) -> Any:
        project_id = validate_id("project id", message.project_id)
        thread_id = validate_id("thread id", message.thread_id)
        self._root.threads_dir(project_id).mkdir(parents=True, exist_ok=True)
        self.db.ensure_project(project_id, project_id, now)
        row = self.db.create_thread(thread_id, project_id, message.title, now)
        self._write_transcript(thread_id)
        _log.info("persistence.thread_created", thread=thread_id, project=project_id)
        return row

    def _finish_turn(self, message: FinishTurn, now: float) -> Any:
        db = self.db
        if message.worker_id is not None:
            db.set_turn_worker(message.turn_id, message.worker_id)
        row = db.finish_turn(message.turn_id, message.status, message.assistant_text, message.error, now)
        self._write_transcript(row.thread_id)
        return row

    def _write_transcript(self, thread_id: str) -> None:
        db = self.db
        thread = db.get_thread(thread_id)
        text = render_transcript(thread, db.list_turns(thread_id), db.list_action_cards(thread_id))
        self._transcripts.write(thread.project_id, thread_id, text)

    def _checkpoint(self, mode: str) -> tuple[int, int]:
        frames = self.db.checkpoint(mode)  # type: ignore[arg-type]
        _log.debug("persistence.checkpoint", mode=mode, wal_frames=frames[0], checkpointed=frames[1])
        return frames
