"""Storage under injected faults: failing SQLite reads/writes/syncs, power cuts, and failing transcript replaces.

Every sweep prints its parameters (`-s` shows them; pytest shows them on failure). The workload is fixed; a step
whose call returned is "acknowledged" and must survive exactly; a step that raised must have raised a
`StorageError` (a `StorageIOError` when a fault fired during it) and must leave its row either as before or as
fully written, never half-done.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import msgspec
import pytest

from agenthost.chaos import FS_STEPS, CrashVFS, FailingFs, FaultPlan, FaultyVFS, PowerCutError
from agenthost.storage import (
    ActionCardRow,
    Database,
    FollowUpRow,
    MappingRow,
    ProjectRow,
    StorageError,
    StorageIOError,
    StorageRoot,
    ThreadRow,
    TranscriptStore,
    TurnRow,
    UnknownThreadError,
    UnknownTurnError,
)

SWEEP_CAP = 300  # fault sweeps: N never needs to get here (asserted)
CRASH_SWEEP_CAP = 400  # crash-before-the-Nth-change sweep
LONG_ANSWER = "".join(f"answer line {index}\n" for index in range(1500))  # ~25 KB: overflow pages, many WAL frames
LONG_USER_TEXT = "hello 2 " + "x" * 3000
# Close errors (SQLite's final checkpoint failing) must also come out as StorageError; a test fails if any raw apsw
# error escapes, including from Connection.close().
TOLERATE_RAW_CLOSE_ERRORS = False
LOOSE_FIELDS = ("seq", "card_id")  # may differ from the intended row when an earlier step failed


# --- the workload ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    entity: str | None  # the row the step changes (see ENTITY_READERS), None for checkpoints
    needs: tuple[str, ...]  # steps that must be acknowledged for this one to be required to succeed
    intended: Any  # the row this step leaves behind when it commits
    call: Callable[[Database], Any]


@dataclasses.dataclass(frozen=True)
class Attempt:
    step: Step
    acked: bool
    returned: Any = None


def _workload() -> list[Step]:
    project = ProjectRow(project_id="p1", name="Project One", created_at=1.0)
    thread = ThreadRow(thread_id="t1", project_id="p1", title="Fault sweep", created_at=2.0)
    u1 = _pending_turn("u1", 1, "hello 1", 3.0)
    u2 = _pending_turn("u2", 2, LONG_USER_TEXT, 4.0)
    u1_done = msgspec.structs.replace(u1, status="completed", assistant_text=LONG_ANSWER, finished_at=5.0)
    u2_failed = msgspec.structs.replace(u2, status="failed", error="runtime crashed", finished_at=6.0)
    card = ActionCardRow(card_id=1, thread_id="t1", turn_id="u1", kind="note", text="card\nsecond line", created_at=7.0)
    mapping = MappingRow(thread_id="t1", worker_id=3, runtime_thread_id="rt-1", updated_at=8.0)
    followup = FollowUpRow(followup_id="f1", thread_id="t1", seq=1, text="follow up", state="queued", created_at=9.0)
    u3 = _pending_turn("u3", 3, "after the checkpoint", 10.0)
    return [
        Step("ensure_project", "project", (), project, lambda db: db.ensure_project("p1", "Project One", 1.0)),
        Step(
            "create_thread",
            "thread",
            ("ensure_project",),
            thread,
            lambda db: db.create_thread("t1", "p1", "Fault sweep", 2.0),
        ),
        Step("begin_turn u1", "turn u1", ("create_thread",), u1, lambda db: db.begin_turn("u1", "t1", "hello 1", 3.0)),
        Step(
            "begin_turn u2",
            "turn u2",
            ("create_thread",),
            u2,
            lambda db: db.begin_turn("u2", "t1", LONG_USER_TEXT, 4.0),
        ),
        Step(
            "finish_turn u1",
            "turn u1",
            ("begin_turn u1",),
            u1_done,
            lambda db: db.finish_turn("u1", "completed", LONG_ANSWER, None, 5.0),
        ),
        Step(
            "finish_turn u2",
            "turn u2",
            ("begin_turn u2",),
            u2_failed,
            lambda db: db.finish_turn("u2", "failed", "", "runtime crashed", 6.0),
        ),
        Step(
            "add_action_card",
            "card",
            ("create_thread", "begin_turn u1"),
            card,
            lambda db: db.add_action_card("t1", "u1", "note", "card\nsecond line", 7.0),
        ),
        Step("save_mapping", "mapping", ("create_thread",), mapping, lambda db: db.save_mapping("t1", 3, "rt-1", 8.0)),
        Step(
            "enqueue_followup",
            "followup",
            ("create_thread",),
            followup,
            lambda db: db.enqueue_followup("f1", "t1", "follow up", 9.0),
        ),
        Step("checkpoint PASSIVE", None, (), None, lambda db: db.checkpoint("PASSIVE")),
        Step(
            "begin_turn u3",
            "turn u3",
            ("create_thread",),
            u3,
            lambda db: db.begin_turn("u3", "t1", "after the checkpoint", 10.0),
        ),
    ]


def _pending_turn(turn_id: str, seq: int, user_text: str, created_at: float) -> TurnRow:
    return TurnRow(
        turn_id=turn_id,
        thread_id="t1",
        seq=seq,
        user_text=user_text,
        assistant_text="",
        status="pending",
        error=None,
        worker_id=None,
        created_at=created_at,
        finished_at=None,
    )


def _run_workload(
    label: str, path: Path, vfs_name: str, steps: list[Step], faults: Callable[[], int], *, absorbed_ok: bool
) -> tuple[list[Attempt], Database | None]:
    """Open on `vfs_name` and run every step; `faults()` counts the faults raised so far by the VFS. A step that
    returns although a fault fired during it fails the test unless `absorbed_ok` (read faults)."""
    before = faults()
    try:
        db = Database.open(path, vfs=vfs_name)
    except Exception as error:  # noqa: BLE001 - _check_error fails the test on anything but a StorageError
        _check_error(label, "Database.open", error, fault_fired=faults() > before, needs_met=True)
        return [Attempt(step, acked=False) for step in steps], None
    attempts: list[Attempt] = []
    acked_names: set[str] = set()
    for step in steps:
        before = faults()
        try:
            returned = step.call(db)
        except Exception as error:  # noqa: BLE001
            needs_met = all(need in acked_names for need in step.needs)
            _check_error(label, step.name, error, fault_fired=faults() > before, needs_met=needs_met)
            attempts.append(Attempt(step, acked=False))
            continue
        if faults() > before:  # SQLite absorbed the failed call: harmless for a retried read, lost data otherwise
            message = f"{label}: {step.name} was acknowledged although {faults() - before} fault(s) fired during it"
            assert absorbed_ok, message
            print(message)
        if step.entity is not None:
            assert _loose(returned) == _loose(step.intended), f"{label}: {step.name} returned {returned!r}"
        attempts.append(Attempt(step, acked=True, returned=returned))
        acked_names.add(step.name)
    return attempts, db


def _check_error(label: str, action: str, error: Exception, *, fault_fired: bool, needs_met: bool) -> None:
    if TOLERATE_RAW_CLOSE_ERRORS and isinstance(error, apsw.Error) and _raised_by_connection_close(error):
        print(f"{label}: {action} raised a raw {error!r} from apsw Connection.close (known storage bug)")
        return
    assert isinstance(error, StorageError), f"{label}: {action} raised a raw {type(error).__name__}: {error!r}"
    assert str(error), f"{label}: {action} raised {type(error).__name__} with an empty message"
    if fault_fired:
        assert isinstance(error, StorageIOError), f"{label}: {action} hit an I/O fault but raised {error!r}"
    else:
        assert not needs_met, (
            f"{label}: {action} failed although no fault fired during it and its prerequisites were acknowledged:"
            f" {error!r}"
        )


def _raised_by_connection_close(error: BaseException) -> bool:
    return any(frame.name == "Connection.close" for frame in traceback.extract_tb(error.__traceback__))


def _close_quietly(db: Database | None) -> None:
    """Close a connection whose VFS may be failing; the errors are the point of other tests."""
    if db is None:
        return
    try:
        db.close()
    except Exception:  # noqa: BLE001 - see test_close_under_io_faults_raises_storage_errors
        pass


# --- verification after reopening without faults -------------------------------------------------------------


def _turn(turn_id: str) -> Callable[[Database], TurnRow | None]:
    def read(db: Database) -> TurnRow | None:
        try:
            return db.get_turn(turn_id)
        except UnknownTurnError:
            return None

    return read


def _single(rows: list[Any]) -> Any:
    return rows[0] if len(rows) == 1 else (tuple(rows) or None)  # a tuple never matches: more than one row


def _of_thread(read: Callable[[Database], list[Any]]) -> Callable[[Database], Any]:
    def reader(db: Database) -> Any:
        try:
            return _single(read(db))
        except UnknownThreadError:
            return None

    return reader


ENTITY_READERS: dict[str, Callable[[Database], Any]] = {
    "project": lambda db: _single(db.list_projects()),
    "thread": lambda db: _single(db.list_threads()),
    "turn u1": _turn("u1"),
    "turn u2": _turn("u2"),
    "turn u3": _turn("u3"),
    "card": _of_thread(lambda db: db.list_action_cards("t1")),
    "mapping": lambda db: _single(db.load_mappings()),
    "followup": _of_thread(lambda db: db.list_followups("t1")),
}


def _loose(row: Any) -> Any:
    if not isinstance(row, msgspec.Struct):
        return row
    changes = {field: 0 for field in LOOSE_FIELDS if field in row.__struct_fields__}
    return msgspec.structs.replace(row, **changes)


def _allowed_states(attempts: list[Attempt]) -> list[tuple[Any, bool]]:
    """(row or None, exact?): the last acknowledged row exactly, or any later attempt's row (it may have committed
    before its error was raised); with nothing acknowledged, also None."""
    acked_indexes = [index for index, attempt in enumerate(attempts) if attempt.acked]
    if not acked_indexes:
        return [(None, True)] + [(attempt.step.intended, False) for attempt in attempts]
    last = acked_indexes[-1]
    return [(attempts[last].returned, True)] + [(attempt.step.intended, False) for attempt in attempts[last + 1 :]]


def _state_matches(actual: Any, expected: Any, exact: bool) -> bool:
    if expected is None or actual is None:
        return actual is expected
    return actual == expected if exact else _loose(actual) == _loose(expected)


def _verify(label: str, path: Path, attempts: list[Attempt]) -> None:
    """Reopen without faults: integrity ok, every acknowledged row exact, nothing half-done."""
    db = Database.open(path)
    try:
        integrity = db.pragma("integrity_check")
        assert integrity == "ok", f"{label}: integrity_check says {integrity!r}"
        for entity, read in ENTITY_READERS.items():
            entity_attempts = [attempt for attempt in attempts if attempt.step.entity == entity]
            actual = read(db)
            allowed = _allowed_states(entity_attempts)
            assert any(_state_matches(actual, expected, exact) for expected, exact in allowed), (
                f"{label}: {entity} is {actual!r} after reopening; allowed: {allowed!r};"
                f" acknowledged: {[attempt.step.name for attempt in entity_attempts if attempt.acked]}"
            )
        _verify_turn_sequence(label, db)
    finally:
        db.close()


def _verify_turn_sequence(label: str, db: Database) -> None:
    try:
        turns = db.list_turns("t1")
    except UnknownThreadError:
        return
    assert [turn.seq for turn in turns] == list(range(1, len(turns) + 1)), f"{label}: turn seqs {turns!r}"
    assert [turn.created_at for turn in turns] == sorted(turn.created_at for turn in turns), f"{label}: {turns!r}"


def _fresh_path(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder / "agenthost.db"


# --- the chaos tools themselves --------------------------------------------------------------------------------


def test_fault_plan_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match=r"nth 0 is invalid"):
        FaultPlan(op="write", nth=0)
    with pytest.raises(ValueError, match=r"op 'fsync' is invalid"):
        FaultPlan(op="fsync", nth=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"error 'eio' is invalid"):
        FaultPlan(op="read", nth=1, error="eio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"nth True is invalid"):
        FaultPlan(op="read", nth=True)


@pytest.mark.timeout(30)
def test_faulty_vfs_fails_exactly_the_nth_matching_call(tmp_path: Path) -> None:
    with FaultyVFS(None) as vfs:
        assert vfs.vfs_name in apsw.vfs_names()
        conn = apsw.Connection(str(tmp_path / "x.db"), vfs=vfs.vfs_name)
        conn.pragma("journal_mode", "wal")
        with conn:
            conn.execute("CREATE TABLE t (x)")
        vfs.plan = FaultPlan(op="write", nth=1, file_suffix="-journal")  # WAL mode: no journal writes
        with conn:
            conn.execute("INSERT INTO t VALUES (0)")
        assert not vfs.triggered and vfs.matching_calls == 0
        writes_so_far = vfs.calls["write"]
        vfs.plan = FaultPlan(op="write", nth=3, error="full", file_suffix="-wal")  # counts from here
        with conn:
            conn.execute("INSERT INTO t VALUES (1)")  # one WAL frame: header + page = matching calls 1 and 2
        assert not vfs.triggered and vfs.matching_calls == 2
        with pytest.raises(apsw.FullError) as caught, conn:
            conn.execute("INSERT INTO t VALUES (2)")
        injected = [str(error) for error in _exception_chain(caught.value) if "injected" in str(error)]
        assert len(injected) == 1 and re.fullmatch(
            r"database or disk is full \(injected: write call #3 on .*-wal'\)", injected[0]
        ), injected
        assert vfs.triggered and vfs.failures == 1
        with conn:  # transient: the next write goes through
            conn.execute("INSERT INTO t VALUES (3)")
        assert [row for row in conn.execute("SELECT x FROM t")] == [(0,), (1,), (3,)]
        assert vfs.calls["write"] - writes_so_far == vfs.matching_calls  # every write since went to the WAL
        conn.close()
    assert vfs.vfs_name not in apsw.vfs_names()


@pytest.mark.timeout(30)
def test_crash_vfs_drops_unsynced_writes_and_keeps_synced_ones(tmp_path: Path) -> None:
    for synchronous, survives in (("OFF", False), ("FULL", True)):
        path = tmp_path / f"{synchronous}.db"
        with CrashVFS() as vfs:
            conn = apsw.Connection(str(path), vfs=vfs.vfs_name)
            conn.pragma("journal_mode", "wal")
            conn.pragma("synchronous", synchronous)
            with conn:
                conn.execute("CREATE TABLE t (x)")
            with conn:
                conn.execute("INSERT INTO t VALUES ('kept?')")
            assert str(path) in vfs.tracked_paths
            vfs.crash()
            with pytest.raises(apsw.IOError) as caught, conn:
                conn.execute("INSERT INTO t VALUES ('after the crash')")
            assert any(isinstance(error, PowerCutError) for error in _exception_chain(caught.value))
            assert vfs.refusals >= 1
            with pytest.raises(apsw.CantOpenError):
                apsw.Connection(str(tmp_path / "other.db"), vfs=vfs.vfs_name)
            with pytest.raises(RuntimeError, match="already crashed"):
                vfs.crash()
            _close_connection_quietly(conn)
        reopened = apsw.Connection(str(path))
        tables = [name for (name,) in reopened.execute("SELECT name FROM sqlite_master")]
        rows = [row for row in reopened.execute("SELECT x FROM t")] if tables else []
        assert (rows == [("kept?",)]) is survives, f"synchronous={synchronous}: {tables!r} {rows!r}"
        reopened.close()


def _exception_chain(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _close_connection_quietly(conn: apsw.Connection) -> None:
    try:
        conn.close()
    except apsw.Error:
        pass


def test_failing_fs_rejects_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match=r"step 'rename' is invalid"):
        FailingFs(step="rename", nth=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"nth -1 is invalid"):
        FailingFs(step="write", nth=-1)
    with pytest.raises(ValueError, match=r"error 'full' is invalid"):
        FailingFs(step="write", nth=1, error="full")  # type: ignore[arg-type]


# --- sweeps ----------------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("error", ["ioerr", "full"])
@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
@pytest.mark.parametrize("op", ["write", "sync", "read"])
def test_fault_sweep_keeps_every_acknowledged_write(tmp_path: Path, op: str, persistent: bool, error: str) -> None:
    steps = _workload()
    for nth in range(1, SWEEP_CAP + 1):
        label = f"fault sweep op={op} persistent={persistent} error={error} N={nth}"
        print(label)
        path = _fresh_path(tmp_path, f"n{nth}")
        with FaultyVFS(FaultPlan(op=op, nth=nth, persistent=persistent, error=error)) as vfs:  # type: ignore[arg-type]
            faults = lambda: vfs.failures  # noqa: E731
            attempts, db = _run_workload(label, path, vfs.vfs_name, steps, faults, absorbed_ok=op == "read")
            _close_quietly(db)
            triggered = vfs.triggered
        _verify(label, path, attempts)
        shutil.rmtree(path.parent)
        if not triggered:
            print(f"{label}: the whole workload ran without reaching the fault; sweep done")
            assert all(attempt.acked for attempt in attempts), f"{label}: a step failed without a fault"
            return
    pytest.fail(f"fault sweep op={op} persistent={persistent} error={error}: reached the cap N={SWEEP_CAP}")


@pytest.mark.timeout(120)
def test_crash_after_each_acknowledged_write_keeps_it(tmp_path: Path) -> None:
    steps = _workload()
    for done in range(len(steps) + 1):
        label = f"crash sweep: power cut after {done} acknowledged steps ({steps[done - 1].name if done else 'open'})"
        print(label)
        path = _fresh_path(tmp_path, f"k{done}")
        with CrashVFS() as vfs:
            db = Database.open(path, vfs=vfs.vfs_name)
            attempts = [Attempt(step, acked=True, returned=step.call(db)) for step in steps[:done]]
            vfs.crash()
            _close_quietly(db)
        _verify(label, path, attempts)


@pytest.mark.timeout(300)
def test_crash_before_each_change_keeps_acknowledged_writes_atomic(tmp_path: Path) -> None:
    steps = _workload()
    for nth in range(1, CRASH_SWEEP_CAP + 1):
        label = f"crash sweep: power cut before change N={nth} (write, truncate or sync)"
        print(label)
        path = _fresh_path(tmp_path, f"n{nth}")
        with CrashVFS(crash_at=nth) as vfs:
            attempts, db = _run_workload(label, path, vfs.vfs_name, steps, lambda: vfs.refusals, absorbed_ok=False)
            _close_quietly(db)
            crashed = vfs.crashed
        _verify(label, path, attempts)
        shutil.rmtree(path.parent)
        if not crashed:
            print(f"{label}: the workload made {vfs.changes} changes; sweep done")
            return
    pytest.fail(f"crash sweep reached the cap N={CRASH_SWEEP_CAP}")


# --- disk full and close ---------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_disk_full_refuses_the_write_but_reads_still_work(tmp_path: Path) -> None:
    path = tmp_path / "agenthost.db"
    with FaultyVFS(None) as vfs:
        db = Database.open(path, vfs=vfs.vfs_name)
        db.ensure_project("p1", "Project One", 1.0)
        thread = db.create_thread("t1", "p1", "Disk full", 2.0)
        u1 = db.begin_turn("u1", "t1", "hello", 3.0)
        vfs.plan = FaultPlan(op="write", nth=1, persistent=True, error="full")
        with pytest.raises(StorageIOError) as caught:
            db.begin_turn("u2", "t1", "refused", 4.0)
        cause = caught.value.__cause__
        assert isinstance(cause, apsw.FullError), f"cause is {cause!r}"
        storage_wording = str(caught.value).replace(str(cause), "").lower()
        assert "full" in storage_wording and "disk" in storage_wording, f"message: {caught.value}"
        assert "'u2'" in str(caught.value)
        with pytest.raises(StorageIOError):
            db.finish_turn("u1", "completed", "refused too", None, 5.0)
        assert vfs.failures >= 2
        assert db.get_thread("t1") == thread
        assert db.list_turns("t1") == [u1]
        assert db.get_turn("u1") == u1
        vfs.plan = None  # space was freed: the same open Database writes again
        u2 = db.begin_turn("u2", "t1", "accepted", 6.0)
        assert db.list_turns("t1") == [u1, u2]
        db.close()
    reopened = Database.open(path)
    try:
        assert reopened.pragma("integrity_check") == "ok"
        assert reopened.list_turns("t1") == [u1, u2]
    finally:
        reopened.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpoint", "no-checkpoint"])
def test_close_under_io_faults_raises_storage_errors(tmp_path: Path, checkpoint: bool) -> None:
    path = tmp_path / "agenthost.db"
    with FaultyVFS(None) as vfs:
        db = Database.open(path, vfs=vfs.vfs_name)
        db.ensure_project("p1", "Project One", 1.0)
        vfs.plan = FaultPlan(op="sync", nth=1, persistent=True)
        try:
            db.close(checkpoint=checkpoint)
        except Exception as error:  # noqa: BLE001 - asserted just below
            raised: Exception | None = error
        else:
            raised = None
        assert vfs.triggered, "closing a database with WAL content syncs"
        assert raised is None or isinstance(raised, StorageIOError), f"close raised a raw {raised!r}"
    reopened = Database.open(path)
    try:
        assert [project.project_id for project in reopened.list_projects()] == ["p1"]
    finally:
        reopened.close()


@pytest.mark.timeout(60)
def test_failed_open_raises_only_storage_errors(tmp_path: Path) -> None:
    """A power cut before each change made while opening: open either works or raises a StorageError."""
    for nth in range(1, CRASH_SWEEP_CAP + 1):
        path = _fresh_path(tmp_path, f"n{nth}")
        with CrashVFS(crash_at=nth) as vfs:
            try:
                Database.open(path, vfs=vfs.vfs_name).close()
            except StorageError:
                pass
            except Exception as error:  # noqa: BLE001
                pytest.fail(f"Database.open with a power cut before change N={nth} raised a raw {error!r}")
            if not vfs.crashed:
                return
    pytest.fail(f"open never completed before the cap N={CRASH_SWEEP_CAP}")


# --- transcripts -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("error", ["eio", "enospc"])
@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
@pytest.mark.parametrize("step", FS_STEPS)
def test_transcript_replace_leaves_old_or_new_content(tmp_path: Path, step: str, persistent: bool, error: str) -> None:
    writes = 4
    expected_errno = errno.EIO if error == "eio" else errno.ENOSPC
    for nth in range(1, writes):
        label = f"transcript sweep step={step} persistent={persistent} error={error} N={nth}"
        print(label)
        root = StorageRoot(tmp_path / f"n{nth}")
        TranscriptStore(root).write("p1", "t1", "version 0\n")
        path = root.transcript_path("p1", "t1")
        fs = FailingFs(step=step, nth=nth, persistent=persistent, error=error)  # type: ignore[arg-type]
        store = TranscriptStore(root, fs=fs)
        current = "version 0\n"
        failed: list[int] = []
        for version in range(1, writes + 1):
            new = f"version {version}\n" + "body line\n" * (100 * version)
            try:
                store.write("p1", "t1", new)
            except Exception as caught:  # noqa: BLE001 - asserted just below
                assert isinstance(caught, StorageIOError), f"{label}: write {version} raised a raw {caught!r}"
                assert str(path) in str(caught), f"{label}: the error does not name the path: {caught}"
                assert isinstance(caught.__cause__, OSError) and caught.__cause__.errno == expected_errno
                failed.append(version)
                if step == "fsync_dir":  # the rename happened; only its durability is in doubt
                    current = new
            else:
                current = new
            assert store.read("p1", "t1") == current, f"{label}: after write {version} the transcript is torn"
            leftovers = sorted(entry.name for entry in path.parent.iterdir() if entry != path)
            assert leftovers == [], f"{label}: temp files left after write {version}: {leftovers}"
        assert failed == (list(range(nth, writes + 1)) if persistent else [nth]), f"{label}: failed writes {failed}"
