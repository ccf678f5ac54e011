"""Fault schedules as data: the faults, when they fire, and the workload they fire into, all from one seed.

Contract:
- A `Schedule` is a msgspec frozen Struct: `seed`, the workload `ops` (one `WorkOp` per op index: which thread,
  what text, how a `RUN:` approval is answered) and the fault `events` (`FaultEvent(at, target, fault)`, sorted by
  `at`, the op index before which the fault is injected). Faults are a tagged union (`"kind"` tag = the class name).
- `generate_schedule(seed, faults, kinds=FAULT_KINDS, ...)` draws EVERY choice from one `random.Random(seed)`:
  the same arguments give an identical schedule (and identical JSON). There are `ops_per_fault` ops per fault
  (default 2, at least 1 op); the kinds are dealt round-robin from a seeded shuffle, so a campaign of
  `len(kinds)` faults or more injects every kind at least once. Targets: "worker:<n>" (1..workers) for runtime
  faults (and an ActorCrash of a worker actor), "host" for HostKill9, ApprovalNeverAnswered and an ActorCrash of
  one of the host's children, "storage" for storage faults (SlowDisk included).
- Limits: `faults` >= 0, `workers` >= 1, `threads` >= 1, `kinds` non-empty and known; a bad value raises
  ValueError naming it. Fault fields are bounded by construction (CrashOnStart.restarts 1..3 stays below any
  attempt cap >= 4; hangs and slow streams last 1..3 ops; RuntimeStopsReading sends 512..1024 KiB, several times a
  pipe's 64 KiB; SlowDisk delays 1 or 2 syncs by 2.0..3.0 s, past the campaign's 1.5 s ask deadline; ActorCrash
  names a (child, message type) pair from ACTOR_CRASH_POINTS, message types that flow in every campaign).
- `encode_schedule` / `decode_schedule` round-trip through JSON; `Schedule.prefix(n)` keeps the first n events
  (the ops are kept: a reproducer replays the same workload).
"""

from __future__ import annotations

import random
from typing import Literal

import msgspec

__all__ = [
    "ACTOR_CRASH_POINTS",
    "FAULT_KINDS",
    "STORAGE_FAULT_KINDS",
    "ActorCrash",
    "ApprovalNeverAnswered",
    "CrashOnStart",
    "DiskFull",
    "EofMidLine",
    "Fault",
    "FaultEvent",
    "HostKill9",
    "RuntimeStopsReading",
    "Schedule",
    "SlowDisk",
    "SlowStream",
    "StdoutGarbage",
    "StorageCrash",
    "StorageIOError",
    "TranscriptStepFailure",
    "WorkOp",
    "WorkerHang",
    "WorkerKill9",
    "decode_schedule",
    "encode_schedule",
    "generate_schedule",
]


class _Fault(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    pass


class WorkerKill9(_Fault, frozen=True):
    """SIGKILL the worker's runtime process group."""


class WorkerHang(_Fault, frozen=True):
    """The runtime SIGSTOPs itself at its next turn start or delta (live `stop_self`); SIGCONT after N ops."""

    resume_after_ops: int = 1


class StdoutGarbage(_Fault, frozen=True):
    """A non-JSON stdout line before each turn, for `ops` ops."""

    ops: int = 1


class EofMidLine(_Fault, frozen=True):
    """At its next turn start or delta the runtime writes half a JSON line and exits 0."""


class SlowStream(_Fault, frozen=True):
    """`delay_s` between deltas, for `ops` ops."""

    delay_s: float = 0.02
    ops: int = 1


class CrashOnStart(_Fault, frozen=True):
    """The worker is killed and its next `restarts` starts exit at once (then the knob is cleared)."""

    restarts: int = 1


class ApprovalNeverAnswered(_Fault, frozen=True):
    """The next `RUN:` approval is never answered (the turn must end at its deadline)."""


class StorageIOError(_Fault, frozen=True):
    """The `nth` SQLite `op` call fails with SQLITE_IOERR (every later one too while `persistent`, for `ops` ops)."""

    op: Literal["read", "write", "sync"] = "write"
    nth: int = 1
    persistent: bool = False
    ops: int = 1


class DiskFull(_Fault, frozen=True):
    """Every SQLite write fails with SQLITE_FULL for `ops` ops."""

    ops: int = 1


class StorageCrash(_Fault, frozen=True):
    """Power cut: unsynced database bytes are dropped and the host process dies; a new one starts on the root."""


class TranscriptStepFailure(_Fault, frozen=True):
    """The next transcript atomic replace fails at `step` (write, fsync_file, replace, fsync_dir)."""

    step: Literal["write", "fsync_file", "replace", "fsync_dir"] = "replace"


class HostKill9(_Fault, frozen=True):
    """SIGKILL the whole host process, then start a new host process on the same storage root."""


class RuntimeStopsReading(_Fault, frozen=True):
    """SIGSTOP the worker's runtime process group, then send `size_kib` KiB of text on a campaign thread pinned to
    that worker: the request cannot fit in the stdin pipe, so at the call's deadline the worker reports `stalled`
    and the pool kills and restarts it. No heal of its own: after `ops` ops the group gets SIGCONT (harmless if it
    was killed)."""

    size_kib: int = 512
    ops: int = 2


class ActorCrash(_Fault, frozen=True):
    """`InjectedFault` raised in the actor `child` ("persistence", "mapping", "turns", "pool" or "worker-N") before it
    handles its next message of type `message` (AgentHost's `fault_hook`); disarmed after `ops` ops if it never
    fired. The supervisors decide by their policies; a caller of the crashed child gets HostUnavailableError."""

    child: str = "turns"
    message: str = "SendMessage"
    ops: int = 2


class SlowDisk(_Fault, frozen=True):
    """Each of the next `syncs` SQLite syncs (0: every sync) sleeps `delay_s` before reaching the disk, longer than
    the host's ask deadline: the actor waiting on the persistence actor times out and crashes. Healed after `ops`
    ops."""

    delay_s: float = 2.0
    syncs: int = 1
    ops: int = 1


Fault = (
    WorkerKill9
    | WorkerHang
    | StdoutGarbage
    | EofMidLine
    | SlowStream
    | CrashOnStart
    | ApprovalNeverAnswered
    | StorageIOError
    | DiskFull
    | StorageCrash
    | TranscriptStepFailure
    | HostKill9
    | RuntimeStopsReading
    | ActorCrash
    | SlowDisk
)

FAULT_KINDS: tuple[str, ...] = (
    "WorkerKill9",
    "WorkerHang",
    "StdoutGarbage",
    "EofMidLine",
    "SlowStream",
    "CrashOnStart",
    "ApprovalNeverAnswered",
    "StorageIOError",
    "DiskFull",
    "StorageCrash",
    "TranscriptStepFailure",
    "HostKill9",
    "RuntimeStopsReading",
    "ActorCrash",
    "SlowDisk",
)
STORAGE_FAULT_KINDS: frozenset[str] = frozenset(
    {"StorageIOError", "DiskFull", "StorageCrash", "TranscriptStepFailure", "SlowDisk"}
)
_WORKER_FAULT_KINDS = frozenset(
    {"WorkerKill9", "WorkerHang", "StdoutGarbage", "EofMidLine", "SlowStream", "CrashOnStart", "RuntimeStopsReading"}
)
# (child, message type) where an ActorCrash fires: message types every campaign sends ("worker" = the target's
# worker actor, "worker-N"). A status read asks the pool (GetPoolStatus) and every send goes through the others.
ACTOR_CRASH_POINTS: tuple[tuple[str, str], ...] = (
    ("persistence", "BeginTurn"),
    ("persistence", "CompleteTurn"),
    ("mapping", "ResolveThreads"),
    ("turns", "SendMessage"),
    ("turns", "RuntimeOutput"),
    ("pool", "GetPoolStatus"),
    ("worker", "RuntimeCall"),
)
_APPROVAL_ANSWERS: tuple[str, ...] = ("accept", "accept", "decline", "cancel")
_FS_STEPS: tuple[str, ...] = ("write", "fsync_file", "replace", "fsync_dir")


class FaultEvent(msgspec.Struct, frozen=True, kw_only=True):
    at: int  # op index: injected right before op `at` runs
    target: str  # "worker:1" | "host" | "storage"
    fault: Fault


class WorkOp(msgspec.Struct, frozen=True, kw_only=True):
    thread: int  # index into the campaign's threads (0-based)
    text: str
    answer: str | None = None  # for a RUN: message: accept | decline | cancel


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    seed: int
    workers: int
    threads: int
    ops: tuple[WorkOp, ...]
    events: tuple[FaultEvent, ...]

    def prefix(self, count: int) -> Schedule:
        """The same workload with only the first `count` fault events."""
        return msgspec.structs.replace(self, events=self.events[:count])

    def without(self, index: int) -> Schedule:
        """The same workload without fault event number `index`."""
        return msgspec.structs.replace(self, events=self.events[:index] + self.events[index + 1 :])

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.events:
            name = type(event.fault).__name__
            counts[name] = counts.get(name, 0) + 1
        return counts


def generate_schedule(
    seed: int,
    faults: int,
    kinds: tuple[str, ...] | list[str] = FAULT_KINDS,
    *,
    workers: int = 2,
    threads: int = 4,
    ops_per_fault: int = 2,
    run_ratio: float = 0.25,
) -> Schedule:
    """A deterministic schedule: every choice comes from `random.Random(seed)` in a fixed order."""
    _check_arguments(faults, kinds, workers, threads, ops_per_fault)
    rng = random.Random(seed)
    op_count = max(1, faults * ops_per_fault)
    ops = tuple(_work_op(rng, index, threads, run_ratio) for index in range(op_count))
    deck = list(kinds)
    rng.shuffle(deck)
    events = []
    for number in range(faults):
        kind = deck[number % len(deck)]
        at = min(op_count - 1, number * ops_per_fault + rng.randrange(ops_per_fault))
        target, fault = _target(rng, kind, workers), _fault(rng, kind)
        if isinstance(fault, ActorCrash) and fault.child == "worker":
            target = f"worker:{rng.randrange(1, workers + 1)}"
            fault = msgspec.structs.replace(fault, child=f"worker-{target.split(':')[1]}")
        events.append(FaultEvent(at=at, target=target, fault=fault))
    return Schedule(seed=seed, workers=workers, threads=threads, ops=ops, events=tuple(events))


def _check_arguments(
    faults: int, kinds: tuple[str, ...] | list[str], workers: int, threads: int, ops_per_fault: int
) -> None:
    if isinstance(faults, bool) or not isinstance(faults, int) or faults < 0:
        raise ValueError(f"faults {faults!r} is invalid: must be an int >= 0")
    if not kinds:
        raise ValueError("kinds () is invalid: name at least one fault kind")
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"fault kind {unknown[0]!r} is unknown: expected one of {FAULT_KINDS}")
    for name, value in (("workers", workers), ("threads", threads), ("ops_per_fault", ops_per_fault)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} {value!r} is invalid: must be an int >= 1")


def _work_op(rng: random.Random, index: int, threads: int, run_ratio: float) -> WorkOp:
    thread = rng.randrange(threads)
    if rng.random() < run_ratio:
        return WorkOp(thread=thread, text=f"op {index}: RUN: make step-{index}", answer=rng.choice(_APPROVAL_ANSWERS))
    return WorkOp(thread=thread, text=f"op {index}: hello {rng.randrange(10**6)}")


def _target(rng: random.Random, kind: str, workers: int) -> str:
    if kind in _WORKER_FAULT_KINDS:
        return f"worker:{rng.randrange(1, workers + 1)}"
    return "storage" if kind in STORAGE_FAULT_KINDS else "host"


def _fault(rng: random.Random, kind: str) -> Fault:
    if kind == "WorkerHang":
        return WorkerHang(resume_after_ops=rng.randint(1, 3))
    if kind == "StdoutGarbage":
        return StdoutGarbage(ops=rng.randint(1, 3))
    if kind == "SlowStream":
        return SlowStream(delay_s=rng.choice((0.005, 0.01, 0.02, 0.05)), ops=rng.randint(1, 3))
    if kind == "CrashOnStart":
        return CrashOnStart(restarts=rng.randint(1, 3))
    if kind == "StorageIOError":
        return StorageIOError(
            op=rng.choice(("read", "write", "sync")),
            nth=rng.randint(1, 5),
            persistent=rng.random() < 0.3,
            ops=rng.randint(1, 2),
        )
    if kind == "DiskFull":
        return DiskFull(ops=rng.randint(1, 2))
    if kind == "TranscriptStepFailure":
        return TranscriptStepFailure(step=rng.choice(_FS_STEPS))  # type: ignore[arg-type]
    if kind == "RuntimeStopsReading":
        return RuntimeStopsReading(size_kib=rng.choice((512, 768, 1024)), ops=rng.randint(1, 2))
    if kind == "ActorCrash":
        child, message = rng.choice(ACTOR_CRASH_POINTS)
        return ActorCrash(child=child, message=message, ops=rng.randint(1, 2))
    if kind == "SlowDisk":
        return SlowDisk(delay_s=rng.choice((2.0, 2.5, 3.0)), syncs=rng.randint(1, 2), ops=rng.randint(1, 2))
    simple: dict[str, type[_Fault]] = {
        "WorkerKill9": WorkerKill9,
        "EofMidLine": EofMidLine,
        "ApprovalNeverAnswered": ApprovalNeverAnswered,
        "StorageCrash": StorageCrash,
        "HostKill9": HostKill9,
    }
    return simple[kind]()  # type: ignore[return-value]


_decoder = msgspec.json.Decoder(Schedule)


def encode_schedule(schedule: Schedule) -> bytes:
    return msgspec.json.encode(schedule)


def decode_schedule(data: bytes | str) -> Schedule:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"schedule JSON is invalid: {exc}") from None
