"""Issue 10, figure 5: host start-up time on a root that already holds many threads.

Build (untimed, reported separately as `build_seconds`), through `agenthost.storage` only, on a fresh root:
- `Database.open` + `ensure_project("default")`, then ONE transaction on the Database's connection that inserts
  `threads` rows of each kind with `executemany`: a `ThreadRow` per thread, one completed `TurnRow` (seq 1, worker
  1 or 2) per thread and one `MappingRow` per thread (thread -> worker 1 or 2, a fresh runtime thread uuid). The
  column lists are the row structs' fields, the storage's own row <-> table convention.
- Each thread's transcript, rendered from exactly those rows by `render_transcript` (so it is consistent and
  clean), written to `TranscriptStore.path` with plain writes and one `os.sync()` at the end (not an atomic
  replace per file: the build is not what is measured).
- `Database.mark_transcripts_synced(every thread)`: the rows' triggers marked every thread as changed; the
  transcripts now hold every change, so a start checks none of them (`check_storage(full=False)` reads only marked
  threads). The build is checked: no thread is left marked and a sample of transcripts (first, middle, last)
  agrees with the database (`sync_transcript(repair=False)`); otherwise it raises.
No runtime state is written: the mappings name runtime threads the built-in runtime does not have (no turn is sent
to them, so nothing resumes them).

Timed (`time.perf_counter()`): `AgentHost(HostConfig(workers=2)).start()` (it returns once every child started
and every worker left "starting") -> `ready_s`; then the first `create_thread` -> `first_thread_s` (from the
same start). The same two times on an empty fresh root (`empty_*`) show what start-up costs with no threads at all
(mostly spawning the runtime processes). Issue 10 target: ready <= 1 s with 100,000 threads, judged on
`first_thread_s`.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import apsw
import msgspec

from agenthost import AgentHost, HostConfig
from agenthost.storage import (
    Database,
    MappingRow,
    StorageRoot,
    ThreadRow,
    TranscriptStore,
    TurnRow,
    render_transcript,
    sync_transcript,
)

__all__ = ["READY_TARGET_S", "StartUp", "build_root", "insert_rows", "measure", "measure_start"]

READY_TARGET_S = 1.0
PROJECT = "default"
USER_TEXT = "bench question"
ASSISTANT_TEXT = "Reference reply to: bench question"


class StartUp(msgspec.Struct, frozen=True, kw_only=True):
    threads: int
    build_seconds: float  # the root's build, untimed part of the figure
    db_bytes: int
    ready_s: float  # start() returned
    first_thread_s: float  # start() + the first create_thread, from the same start
    empty_ready_s: float
    empty_first_thread_s: float


def insert_rows(conn: apsw.Connection, table: str, row_type: type[msgspec.Struct], rows: list[msgspec.Struct]) -> None:
    """INSERT `rows` into `table` (the caller holds the transaction); the columns are the row struct's fields."""
    names = row_type.__struct_fields__  # the storage's own row <-> column convention
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
    conn.executemany(sql, [msgspec.structs.astuple(row) for row in rows])


def build_root(path: Path, threads: int) -> None:
    """A root with `threads` threads, one completed turn and one mapping each, clean transcripts (see above)."""
    root = StorageRoot(path)
    root.ensure()
    now = time.time()
    db = Database.open(root.db_path)
    try:
        db.ensure_project(PROJECT, PROJECT, now)
        thread_rows: list[ThreadRow] = []
        turn_rows: list[TurnRow] = []
        mappings: list[MappingRow] = []
        for index in range(threads):
            thread_id, at, worker = f"st-{index:06d}", now + index * 1e-3, 1 + index % 2
            thread_rows.append(ThreadRow(thread_id=thread_id, project_id=PROJECT, title=thread_id, created_at=at))
            turn_rows.append(
                TurnRow(
                    turn_id=f"st-turn-{index:06d}",
                    thread_id=thread_id,
                    seq=1,
                    user_text=USER_TEXT,
                    assistant_text=ASSISTANT_TEXT,
                    status="completed",
                    error=None,
                    worker_id=worker,
                    created_at=at,
                    finished_at=at + 5e-4,
                )
            )
            mappings.append(
                MappingRow(thread_id=thread_id, worker_id=worker, runtime_thread_id=str(uuid.uuid4()), updated_at=at)
            )
        conn = db._conn
        with conn:
            insert_rows(conn, "threads", ThreadRow, list(thread_rows))
            insert_rows(conn, "turns", TurnRow, list(turn_rows))
            insert_rows(conn, "runtime_thread_mappings", MappingRow, list(mappings))
        store = TranscriptStore(root)
        folder_made = False
        for thread, turn in zip(thread_rows, turn_rows, strict=True):
            target = store.path(PROJECT, thread.thread_id)
            if not folder_made:
                target.parent.mkdir(parents=True, exist_ok=True)
                folder_made = True
            target.write_text(render_transcript(thread, [turn], []), encoding="utf-8")
        os.sync()
        db.mark_transcripts_synced([thread.thread_id for thread in thread_rows])
        _check_built(db, store, thread_rows)
    finally:
        db.close()


def _check_built(db: Database, store: TranscriptStore, threads: list[ThreadRow]) -> None:
    marked = db.dirty_transcripts()
    if marked:
        raise RuntimeError(f"start-up root: {len(marked)} threads still marked as changed, e.g. {marked[0].thread_id}")
    for thread in (threads[0], threads[len(threads) // 2], threads[-1]) if threads else ():
        check = sync_transcript(db, store, thread.thread_id, repair=False)
        if check.problem is not None:
            raise RuntimeError(f"start-up root: transcript of {thread.thread_id} is not clean: {check.problem}")


def measure_start(path: Path) -> tuple[float, float]:
    """(start() returned, first create_thread returned), seconds from the start, on the root at `path`."""
    host = AgentHost(HostConfig(storage_root=str(path), workers=2))
    started = time.perf_counter()
    try:
        host.start()
        ready = time.perf_counter() - started
        host.create_thread("bench first thread")
        first = time.perf_counter() - started
    finally:
        host.shutdown()
    return ready, first


def measure(threads: int, work_dir: Path) -> StartUp:
    root = work_dir / "startup-root"
    started = time.perf_counter()
    build_root(root, threads)
    build_seconds = time.perf_counter() - started
    db_bytes = _size(StorageRoot(root).db_path)
    empty_ready, empty_first = measure_start(work_dir / "empty-root")
    ready, first = measure_start(root)
    return StartUp(
        threads=threads,
        build_seconds=build_seconds,
        db_bytes=db_bytes,
        ready_s=ready,
        first_thread_s=first,
        empty_ready_s=empty_ready,
        empty_first_thread_s=empty_first,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
