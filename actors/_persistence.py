"""Persistence actor: the only owner of the database connection and the transcript files.

When is a caller's write durable? (synchronous=FULL in WAL mode: a committed transaction survives power loss.)
- Asked commands (`BeginTurn`, `FinishTurn`, `AddActionCard`, `CreateThread`, `UpdateThread`, follow-up and mapping
  writes): when the ask returns, the transaction is committed (fsynced) and, for thread content, the change is in
  the thread's Markdown transcript: one record appended (a new thread's transcript is created by atomic replace);
  storage._transcript_sync.TranscriptWriter does it. Appends are fsynced together, one fsync per thread, at each
  checkpoint tick, at stop, and by a `_SyncTranscripts` the actor tells itself once SYNC_THREADS (256) transcripts
  wait (so it runs after the answers, behind the messages already waiting), which hands them to a thread of their
  own (actors._transcript_fsync; one batch at a time, the actor answers meanwhile, takes the outcome when told
  `_TranscriptsFsynced`, at the next tick or at stop, which waits up to FSYNC_STOP_WAIT_S: actors._upkeep); until
  then the thread stays marked in the database, so a power cut before that fsync leaves a transcript start-up
  repairs. Failures, interruptions and approval resets always take this path: they are never batched.
- `CompleteTurn` (a completed turn, told with `reply_to`): group-committed. Completions that arrive back to back
  are finished in ONE transaction when `max_batch` (default MAX_BATCH, 256) are waiting or the actor's mailbox is
  empty (so an idle host adds no delay); then each thread in the batch gets its end records in one append; only
  then does every caller get its `TurnPersisted`. Told pins (`SaveMapping`) and follow-up states
  (`SettleFollowUp`) wait in the same batch. An asked message of the turn path (`_JOINS_BATCH`: begins, follow-up
  starts, enqueues, `FinishTurn`, `GetTurn`) that finds writes waiting joins their transaction (actors._groupcommit's
  `_flush`); `GetThread` is answered without them (no told write changes a thread row), so it does not wait for a
  commit, and completions left waiting are committed by a
  `_CommitWaiting` the actor tells itself (behind the messages already queued); any other message first commits
  them alone. Either way the database sees writes in the order the actor received
  them, and a read sees every write told before it. If a batch fails, each completion is retried alone, so one bad row
  never fails the others, and every caller hears its own outcome.
- `TakeBack` (told by the coordinator): begins and enqueues refused to their callers that committed after all (the
  answer came past the ask deadline) are taken back in one transaction (storage's `take_back`); a refusal is logged.
- The transcript is written after the commit, so a crash between the two leaves a transcript without the change,
  and its thread marked in the database (every transcript change marks its thread in the same transaction); the
  start-up checks append what such transcripts lack. When a transcript write fails (I/O error, disk full) the
  commit still stands and is acknowledged; the thread is stale and its transcript repaired from the database at
  its next write or checkpoint tick, and at start-up at the latest. At each checkpoint tick and at stop the threads
  whose transcripts hold every change are unmarked, so a start checks only the threads changed since.

Fault injection: `vfs` (a registered APSW VFS name) and `transcript_fs` (an `AtomicFs`) are the seams chaos tests
use to fail reads, writes, syncs and each step of a transcript append or replace.

Checkpoints (actors._upkeep): automatic checkpoints are off. A WAL hook watches the WAL size after each commit; at
`checkpoint_pages` or more a PASSIVE checkpoint runs right after the message. A PASSIVE checkpoint also runs every
`checkpoint_interval_s` (injected clock) and a TRUNCATE checkpoint when the actor stops. `quick_check` runs at
open (actors._storage_open): a database that fails it is moved into `system/quarantine/<timestamp>-<reason>/` and
rebuilt from the transcripts ("storage.quarantined" event); then the start-up health checks run with repairs
(missing project folders, transcripts of the threads marked as changed, bad mappings; after a rebuild also every
transcript, orphan transcripts and leftover temp files), each finding one "storage.health" event. The actor holds
the root's lock (`system/agenthost.lock`) while it lives: a second host on the same root fails to start with
`RootLockedError`.
Errors from storage (unknown ids, invalid ids, I/O errors) are raised to the asker; the actor keeps running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from agenthost.actors._clock import Clock, Timer
from agenthost.actors._events import StorageTimed
from agenthost.actors._groupcommit import GroupCommits
from agenthost.actors._log import get_logger
from agenthost.actors._refs import FaultHook, SupervisedActor, tell_quietly
from agenthost.actors._storage_open import open_and_repair
from agenthost.actors._transcript_fsync import BackgroundFsync
from agenthost.actors._upkeep import CHECKPOINT_INTERVAL_S, CHECKPOINT_PAGES, SYNC_THREADS, TranscriptWrite
from agenthost.protocol._messages import (
    AddActionCard,
    BeginTurn,
    BeginTurns,
    CancelFollowUp,
    Checkpoint,
    CompleteTurn,
    CreateThread,
    EditFollowUp,
    EnqueueFollowUp,
    EnqueueFollowUps,
    FinishTurn,
    GetThread,
    GetTurn,
    HealthCheck,
    ListActionCards,
    ListFollowUps,
    ListPendingTurns,
    ListThreads,
    ListTurns,
    LoadMappings,
    MoveFollowUp,
    QueueDepths,
    ReadTranscript,
    RetryFollowUp,
    SaveMapping,
    SetDispatchMode,
    SetFollowUpState,
    SettleFollowUp,
    StartNextFollowUps,
    TakeBack,
    TurnBegun,
    UpdateThread,
)
from agenthost.storage import (
    AtomicFs,
    Database,
    RootLock,
    StorageError,
    StorageRoot,
    ThreadRow,
    TranscriptWriter,
    TurnFinish,
    check_permissions,
    check_storage,
    private_mkdir,
    validate_id,
)

__all__ = ["MAX_BATCH", "PersistenceActor"]

_WRITES = (
    TakeBack,
    UpdateThread,
    BeginTurn,
    BeginTurns,
    StartNextFollowUps,
    EnqueueFollowUps,
    FinishTurn,
    AddActionCard,
    CreateThread,
    EnqueueFollowUp,
    SetFollowUpState,
)

# Reads of what no told write changes: answered without committing those first (no told write changes a thread
# row).
_READS_PAST_BATCH = (GetThread,)
# Asked messages that share the group commit of the told writes waiting before them (the turn path's writes and
# the reads it makes between them); anything else first commits the waiting writes on their own.
_JOINS_BATCH = (
    BeginTurn,
    BeginTurns,
    StartNextFollowUps,
    EnqueueFollowUp,
    EnqueueFollowUps,
    FinishTurn,
    GetTurn,
)

_log = get_logger("agenthost.persistence")
MAX_BATCH = 256  # completions per group commit at most


class _CommitWaiting(msgspec.Struct, frozen=True):
    """Told to itself when a read answered past completions waiting in the batch: commit them once the messages
    already queued are handled (the read's asker does not wait for that commit)."""


class PersistenceActor(GroupCommits, SupervisedActor):
    child_name = "persistence"
    expected_errors = (StorageError,)

    def __init__(
        self,
        *,
        root: StorageRoot,
        clock: Clock,
        wall: Callable[[], float],
        checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
        checkpoint_pages: int = CHECKPOINT_PAGES,
        max_batch: int = MAX_BATCH,
        sync_threads: int = SYNC_THREADS,
        vfs: str | None = None,
        transcript_fs: AtomicFs | None = None,
        supervisor_ref: Any = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        super().__init__(supervisor_ref=supervisor_ref, fault_hook=fault_hook)
        self._root = root
        self._clock = clock
        self._wall = wall
        self._interval = checkpoint_interval_s
        self._checkpoint_pages = checkpoint_pages
        self._max_batch = max_batch
        self._sync_threads = sync_threads
        self._transcript_fs = transcript_fs
        self._transcripts: TranscriptWriter | None = None
        self._fsync: BackgroundFsync | None = None  # fsyncs transcripts while this actor answers
        self._timer: Timer | None = None
        self._batch: list[CompleteTurn | SettleFollowUp | SaveMapping] = []
        self._wal_pages = 0
        self._transcript_s = 0.0  # transcript time inside the message being handled (kept out of its commit time)
        self._sync_told = False  # a _SyncTranscripts is waiting in the mailbox
        self._commit_told = False  # a _CommitWaiting is waiting in the mailbox
        self._answers_waiting = False  # a CompleteTurn waits in the batch (pins and follow-up states alone wait on)
        self._later: list[TranscriptWrite] | None = None  # inside a group commit: its transcript writes
        self._vfs = vfs
        self._lock: RootLock | None = None
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        assert self._db is not None, "persistence actor not started"
        return self._db

    @property
    def transcripts(self) -> TranscriptWriter:
        assert self._transcripts is not None, "persistence actor not started"
        return self._transcripts

    def on_child_start(self) -> None:
        """Lock the root, open (quarantine and rebuild if corrupt) and repair, in this actor's own thread: a long
        rebuild never blocks the host supervisor's mailbox. A failure is a crash the host decides about."""
        self._root.ensure()
        self._lock = RootLock.acquire(self._root)
        self._db = open_and_repair(self._root, self._vfs, self._wall())
        self._transcripts = TranscriptWriter(self._root, self._db, fs=self._transcript_fs)
        _log.info("persistence.opened", path=str(self._root.db_path), schema=self._db.schema_version)
        self._start_upkeep()

    def on_stop(self) -> None:
        try:
            self._flush()
            if self._transcripts is not None:
                self._sync_at_stop()
        finally:
            self._close(checkpoint=True)

    def on_crash(self, error: BaseException) -> None:
        self._close(checkpoint=False)

    def _close(self, *, checkpoint: bool) -> None:
        """Close the database and release the root's lock. A close the storage refuses (a full disk fails SQLite's
        checkpoint) is logged: the lock is released anyway, so the restarted actor can take the root again."""
        try:
            if self._timer is not None:
                self._timer.cancel()
            db, self._db = self._db, None
            if db is not None:
                try:
                    db.close(checkpoint=checkpoint)
                except StorageError as exc:
                    _log.warning("persistence.close_failed", checkpoint=checkpoint, error=repr(exc))
                else:
                    if checkpoint:
                        _log.info("persistence.closed", checkpoint="TRUNCATE")
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- dispatch -------------------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        try:
            return self._dispatch(message)
        finally:
            self._sync_later()

    def _dispatch(self, message: Any) -> Any:
        if isinstance(message, CompleteTurn | SettleFollowUp | SaveMapping):
            self._batch.append(message)
            self._answers_waiting |= isinstance(message, CompleteTurn)
            if len(self._batch) >= self._max_batch or (self._answers_waiting and self.actor_inbox.empty()):
                self._flush()
            return None
        if isinstance(message, _READS_PAST_BATCH):
            if self._answers_waiting and not self._commit_told:  # nothing else may come to commit them
                self._commit_told = True
                tell_quietly(self.actor_ref, _CommitWaiting())
            return self._handle(message, self._wall())
        if isinstance(message, _CommitWaiting):
            self._commit_told = False
            return self._flush()
        if self._batch and isinstance(message, _JOINS_BATCH):
            return self._flush(message)
        self._flush()
        started, self._transcript_s = time.perf_counter(), 0.0
        try:
            return self._handle(message, self._wall())
        finally:
            if isinstance(message, _WRITES):  # the transaction's own time, its transcript rewrite left out
                seconds = time.perf_counter() - started - self._transcript_s
                _log.record(StorageTimed(op="commit", seconds=max(0.0, seconds)), "debug")
            self._after_commit()

    def _handle(self, message: Any, now: float) -> Any:
        db = self.db
        match message:
            case CreateThread():
                return self._create_thread(message, now)
            case GetThread():
                return db.get_thread(message.thread_id)
            case BeginTurn():
                return self._begun(db.begin_turn(message.turn_id, message.thread_id, message.user_text, now))
            case BeginTurns() | StartNextFollowUps() | EnqueueFollowUps():
                return self._group(message, now)
            case UpdateThread():
                return self._thread_updated(
                    db.update_thread(
                        message.thread_id,
                        title=message.title,
                        thread_settings=message.thread_settings,
                        turn_settings=message.turn_settings,
                    ),
                    renamed=message.title is not None,
                )
            case FinishTurn():
                finish = TurnFinish(
                    message.turn_id, message.status, message.assistant_text, message.error, now, message.worker_id
                )
                return self._turn_written(db.finish_turns([finish])[0])
            case AddActionCard():
                card = db.add_action_card(message.thread_id, message.turn_id, message.kind, message.text, now)
                self._transcript(lambda: self.transcripts.card_added(card))
                return card
            case LoadMappings():
                return db.load_pins()
            case ListPendingTurns():
                return db.pending_turns()
            case ListFollowUps():
                return db.list_followups(message.thread_id)
            case ListActionCards():
                return db.list_action_cards(message.thread_id)
            case ListThreads(open_followups_only=True):
                return db.threads_with_open_followups()
            case ListThreads():
                return db.list_threads()
            case ListTurns():
                return db.list_turns(message.thread_id)
            case ReadTranscript():
                thread = db.get_thread(message.thread_id)
                return self.transcripts.read(thread.project_id, thread.thread_id)
            case EnqueueFollowUp():
                return db.enqueue_followup(message.followup_id, message.thread_id, message.text, now)
            case QueueDepths():
                return db.queue_depths()
            case GetTurn():
                return db.get_turn(message.turn_id)
            case HealthCheck():
                findings = check_storage(db, self._root, repair=False, pending_turns=False)
                return [*findings, *check_permissions(self._root)]
            case MoveFollowUp():
                return db.move_followup(message.followup_id, message.position)
            case EditFollowUp():
                return db.edit_followup(message.followup_id, message.text)
            case CancelFollowUp():
                return db.cancel_followup(message.followup_id)
            case SetDispatchMode():
                return self._thread_updated(db.set_dispatch_mode(message.thread_id, message.mode), renamed=False)
            case RetryFollowUp():
                return db.retry_followup(message.followup_id)
            case SetFollowUpState():
                return db.set_followup_state(message.followup_id, message.state, message.error)
            case Checkpoint():
                return self._checkpoint(message.mode)
            case TakeBack():
                return self._take_back(message, now)
            case _ if self._upkeep(message):
                return None
            case _:
                return super().handle(message)

    # --- writes ---------------------------------------------------------------------------------------------
    def _create_thread(self, message: CreateThread, now: float) -> Any:
        project_id = validate_id("project id", message.project_id)
        thread_id = validate_id("thread id", message.thread_id)
        private_mkdir(self._root.threads_dir(project_id))
        self.db.ensure_project(project_id, project_id, now)
        row = self.db.create_thread(thread_id, project_id, message.title, now)
        self._transcript(lambda: self.transcripts.thread_created(row))
        _log.info("persistence.thread_created", thread=thread_id, project=project_id)
        return row

    def _begun(self, row: Any) -> TurnBegun:
        self._turn_written(row)
        thread = self.db.get_thread(row.thread_id)
        return TurnBegun(turn=row, settings=thread.thread_settings(), project_id=thread.project_id)

    def _take_back(self, message: TakeBack, now: float) -> None:
        """Told: a refusal is logged (start-up reconciliation ends a turn that stays pending)."""
        begun = [(taken.turn_id, taken.followup_id) for taken in message.begun]
        try:
            rows = self.db.take_back(begun, message.enqueued, message.error, now)
        except StorageError as exc:
            turns = [turn_id for turn_id, _ in begun]
            _log.error("persistence.take_back_failed", turns=turns, followups=list(message.enqueued), error=repr(exc))
            return
        self._transcript(lambda: self.transcripts.turns_written(rows))

    def _thread_updated(self, row: ThreadRow, *, renamed: bool) -> ThreadRow:
        """A thread row changed: a new title reaches the transcript."""
        if renamed:
            self._transcript(lambda: self.transcripts.renamed(row))
        return row

    def _turn_written(self, row: Any) -> Any:
        """A turn row was committed (begun or finished): its record goes to the transcript."""
        self._transcript(lambda: self.transcripts.turns_written([row]))
        return row
