"""A commit lets the host's other threads run (contract row D30); a write nests in a transaction its caller opened.

The persistence actor shares one Python process (one GIL) with every other actor. apsw's `with connection` block
holds the GIL through its COMMIT, fsync included: during a 90 ms commit another thread made 1 step against ~1,100
when the commit is an `execute("COMMIT")`. The storage issues its transaction statements through `execute`."""

from __future__ import annotations

import threading
import time

import pytest

from agenthost.storage import Database

pytestmark = pytest.mark.timeout(120)

BIG_TEXT = "x" * 16384  # x 3,000 turns: ~50 MB for the commit to write


def test_a_commit_lets_other_threads_run(tmp_path) -> None:
    db = Database.open(tmp_path / "db.sqlite")
    steps: list[float] = []
    stop = threading.Event()

    def other_thread() -> None:
        while not stop.is_set():
            steps.append(time.perf_counter())
            time.sleep(0)

    try:
        db.ensure_project("p", "p", 1.0)
        db.create_thread("t", "p", "t", 1.0)
        spinner = threading.Thread(target=other_thread, daemon=True)
        spinner.start()
        with db.batch("a big commit"):
            for index in range(3000):
                db.begin_turn(f"u{index}", "t", BIG_TEXT, 2.0)
            committing = time.perf_counter()
        committed = time.perf_counter()
        stop.set()
        spinner.join(10)
        during = [t for t in steps if committing < t < committed]
        print(f"commit {1e3 * (committed - committing):.0f} ms, other thread steps meanwhile {len(during)}")
        assert len(during) >= 5, f"{len(during)} steps of another thread during a {committed - committing:.3f} s commit"
        assert len(db.list_turns("t")) == 3000
    finally:
        stop.set()
        db.close()


def test_a_write_inside_a_transaction_the_caller_opened_is_a_savepoint_of_it(tmp_path) -> None:
    """The bench's hand-written loop opens its own transaction on the connection around storage writes: they nest
    in it as savepoints (committed or rolled back with it), as they did under apsw's own block."""
    db = Database.open(tmp_path / "db.sqlite")
    try:
        db.ensure_project("p", "p", 1.0)
        db.create_thread("t", "p", "t", 1.0)
        with pytest.raises(RuntimeError), db._conn:  # the caller's own transaction
            db.begin_turn("u1", "t", "one", 2.0)
            raise RuntimeError("the caller gives up: its transaction rolls back")
        assert db.list_turns("t") == []
        with db._conn:
            db.begin_turn("u2", "t", "two", 2.0)
            db.begin_turn("u3", "t", "three", 2.0)
        assert [turn.turn_id for turn in db.list_turns("t")] == ["u2", "u3"]
    finally:
        db.close()
