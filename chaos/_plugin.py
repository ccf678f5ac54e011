"""Chaos for a user's own suite: run a schedule against an embedded AgentHost, plus the host side of a campaign.

Contract:
- `run_schedule(host, schedule, *, history=None, fault_hook=None) -> list[Violation]` runs the schedule's workload
  and faults against an already started, in-process `AgentHost` (builtin runtime) and returns the invariant
  violations (storage, restarts, deadlines, approvals, pins, events recorded, liveness; not process leaks: the host
  keeps running and stays the caller's to shut down). Runtime faults apply (RuntimeStopsReading included); faults
  that need a process kill (HostKill9, StorageCrash) and storage faults (the host was not built on a
  fault-injecting VFS) are skipped and counted as skipped; so is ActorCrash unless the host was built with an
  `ArmableHook` as its `fault_hook` (pass it as `fault_hook=`; the `chaos_host` fixture's host has one and is found
  without it). Events are recorded through a listener, so recording works whatever logging the application
  configured.
- `ArmableHook` is a `fault_hook` for `AgentHost`: `arm(child, message)` makes the next handler call of actor
  `child` on a message of type `message` raise `agenthost.actors.InjectedFault` (once); `disarm()` returns how many
  armed crashes fired since the last disarm.
- `chaos_host` (pytest fixture, registered through the `pytest11` entry point, so installing agenthost is enough)
  yields a started builtin `AgentHost` on a temporary root with the campaign's fast recovery settings and an
  `ArmableHook`; shut down after the test.
- `EmbeddedHost` is the host side of the control protocol (used by `python -m agenthost.chaos._serve`): it owns or
  wraps an AgentHost, forwards the turn events of every send (ApprovalRequested, ApprovalResolved, ApprovalReset,
  TurnFinished) to `emit` stamped with time.monotonic(), and optionally stacks the storage fault seams (CrashVFS
  under FaultyVFS for the database, `ArmableFs` for transcripts), re-armed live by `storage_fault` (what: io, full,
  fs, slow, heal); `actor_crash` (what: arm with child and message, or disarm) arms its `ArmableHook`.
- `tee_events_to(emit, names)` subscribes to the structured events named `names` and forwards them to `emit`.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from agenthost.actors._events import HostEvent
from agenthost.chaos._history import History
from agenthost.chaos._schedule import Schedule
from agenthost.protocol._faults import RuntimeFaults

__all__ = ["ArmableFs", "ArmableHook", "EmbeddedHost", "chaos_host", "run_schedule", "tee_events_to"]

Emit = Callable[[dict[str, Any]], None]
_FORWARDED = ("ApprovalRequested", "ApprovalResolved", "ApprovalReset", "TurnFinished")


class ArmableHook:
    """An AgentHost `fault_hook` that crashes one actor on purpose when armed (see the module contract)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: tuple[str, str] | None = None
        self._fired = 0

    def arm(self, child: str, message: str) -> None:
        with self._lock:
            self._armed = (child, message)

    def disarm(self) -> int:
        """Disarm; the number of armed crashes that fired since the last disarm."""
        with self._lock:
            fired, self._armed, self._fired = self._fired, None, 0
            return fired

    def __call__(self, child: str, message: object) -> None:
        name = type(message).__name__
        with self._lock:
            if self._armed != (child, name):
                return
            self._armed = None
            self._fired += 1
        from agenthost.actors import InjectedFault

        raise InjectedFault(f"chaos: injected into {child} handling {name}")


_HOOKS: weakref.WeakKeyDictionary[Any, ArmableHook] = weakref.WeakKeyDictionary()  # chaos_host's host -> its hook


def tee_events_to(emit: Emit, names: tuple[str | type[HostEvent], ...]) -> Callable[[], None]:
    """Forward structured events named `names` to `emit` as `{"kind": "log", "t": ..., "event": name, **fields}`
    (plain JSON values); returns the function that stops forwarding."""
    from agenthost.actors import Event, subscribe

    def forward(event: Event) -> None:
        emit({"kind": "log", "t": event.t, **{k: _plain(v) for k, v in event.as_dict().items()}})

    return subscribe(forward, names)


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _fs_base() -> type:
    from agenthost.chaos._fsfaults import FailingFs

    return FailingFs


class ArmableFs(_fs_base()):  # type: ignore[misc]
    """A `FailingFs` that starts disarmed; `arm(step)` fails the next call of that step, `disarm()` heals."""

    _NEVER = 1 << 62

    def __init__(self) -> None:
        super().__init__(step="write", nth=self._NEVER)

    def arm(self, step: str, nth: int = 1, persistent: bool = False) -> None:
        self.step, self.persistent = step, persistent
        self.nth = self.calls[step] + nth

    def disarm(self) -> None:
        self.nth, self.persistent = self._NEVER, False


class EmbeddedHost:
    """Host side of one campaign host: an AgentHost plus the fault seams, driven by `handle(op, args)`."""

    def __init__(
        self,
        host: Any,
        emit: Emit,
        *,
        faulty: Any = None,
        crash: Any = None,
        fs: Any = None,
        mock: Any = None,
        hook: ArmableHook | None = None,
    ) -> None:
        self.host = host
        self._emit = emit
        self._faulty, self._crash, self._fs, self._mock = faulty, crash, fs, mock
        self._hook = hook
        self._closed = threading.Event()

    @classmethod
    def from_config(cls, config: dict[str, Any], emit: Emit) -> EmbeddedHost:
        from agenthost import AgentHost
        from agenthost.chaos._campaign_settings import CampaignSettings, campaign_host_config

        fields = {k: v for k, v in config.items() if k in CampaignSettings.__struct_fields__}
        settings = CampaignSettings(**fields)
        faulty = crash = fs = mock = None
        codex_config: tuple[str, ...] = ()
        if settings.runtime == "codex":
            from agenthost.protocol.mock_model import MockModelServer

            mock = MockModelServer()
            mock.start()
            codex_config = tuple(mock.codex_overrides())
        host_config = campaign_host_config(config["root"], int(config["workers"]), settings, codex_config)
        extra: dict[str, Any] = {}
        if settings.storage_faults:
            from agenthost.chaos._vfs import CrashVFS, FaultyVFS

            crash = CrashVFS()
            faulty = FaultyVFS(None, base=crash.vfs_name)
            fs = ArmableFs()
            extra = {"storage_vfs": faulty.vfs_name, "transcript_fs": fs}
        hook = ArmableHook()
        host = AgentHost(host_config, fault_hook=hook, **extra).start()
        return cls(host, emit, faulty=faulty, crash=crash, fs=fs, mock=mock, hook=hook)

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            raise ValueError(f"unknown control op {op!r}")
        return handler(**args)

    # --- ops ---
    def _op_create_thread(self, thread_id: str) -> str:
        created: str = self.host.create_thread(thread_id, thread_id=thread_id)
        return created

    def _op_send(self, thread_id: str, text: str) -> dict[str, Any]:
        handle = self.host.send(thread_id, text)
        threading.Thread(target=self._pump, args=(handle,), name=f"chaos-pump-{handle.turn_id}", daemon=True).start()
        return {"turn_id": handle.turn_id, "queued": handle.queued}

    def _pump(self, handle: Any) -> None:
        while not self._closed.is_set():
            try:
                event = handle.next_event(0.5)
            except TimeoutError:
                continue
            except RuntimeError:
                return
            name = type(event).__name__
            if name in _FORWARDED:
                self._emit({"kind": "turn", "t": time.monotonic(), "event": name, **msgspec.to_builtins(event)})
            if name == "TurnFinished":
                return

    def _op_answer(self, approval_id: str, decision: str) -> None:
        self.host.answer_approval(approval_id, decision)

    def _op_status(self) -> dict[str, Any]:
        status: dict[str, Any] = msgspec.to_builtins(self.host.status())
        return status

    def _op_set_faults(self, worker_id: int, faults: dict[str, Any] | None) -> None:
        self.host.set_worker_faults(worker_id, None if faults is None else RuntimeFaults(**faults))

    def _op_storage_fault(self, what: str, **spec: Any) -> str:
        if self._faulty is None:
            raise ValueError("this host was started without storage fault seams")
        from agenthost.chaos._vfs import FaultPlan

        if what == "io":
            self._faulty.plan = FaultPlan(op=spec["io_op"], nth=spec["nth"], persistent=spec["persistent"])
        elif what == "full":
            self._faulty.plan = FaultPlan(op="write", nth=1, persistent=True, error="full")
        elif what == "fs":
            self._fs.arm(spec["step"])
        elif what == "slow":
            self._faulty.slow_syncs(float(spec["delay_s"]), int(spec["syncs"]) or None)
        elif what == "heal":
            self._faulty.heal()
            self._fs.disarm()
        else:
            raise ValueError(f"storage fault {what!r} is unknown: expected io, full, fs, slow or heal")
        return what

    def _op_actor_crash(self, what: str, child: str = "", message: str = "") -> int:
        """Arm a crash of actor `child` at its next `message` (returns 0), or disarm (returns how many fired)."""
        if self._hook is None:
            raise ValueError("this host was started without an armable fault hook")
        if what == "arm":
            self._hook.arm(child, message)
            return 0
        if what == "disarm":
            return self._hook.disarm()
        raise ValueError(f"actor crash {what!r} is unknown: expected arm or disarm")

    def _op_power_cut(self) -> None:
        """Drop every unsynced database byte, then die like a machine losing power (never returns)."""
        if self._crash is None:
            raise ValueError("this host was started without storage fault seams")
        self._crash.crash()
        os.kill(os.getpid(), signal.SIGKILL)

    def _op_fd_count(self) -> int:
        return len(os.listdir("/proc/self/fd"))

    def _op_settle(self, timeout_s: float = 15.0) -> dict[str, Any]:
        """Wait (bounded) until the host runs and no worker is starting or restarting; return the status."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.host.status()
            settled = status.state in ("running", "failed") and all(
                w.state not in ("starting", "restarting") for w in status.workers
            )
            if (settled and not status.active_turns) or time.monotonic() >= deadline:
                plain: dict[str, Any] = msgspec.to_builtins(status)
                return plain
            time.sleep(0.02)

    def _op_shutdown(self) -> None:
        self._closed.set()
        try:
            self.host.shutdown(drain_timeout_s=2.0)
        finally:
            for seam in (self._faulty, self._crash):
                if seam is not None:
                    seam.unregister()
            if self._mock is not None:
                self._mock.stop()


class _InProcessDriver:
    """The campaign loop's driver for an embedded host: requests are direct calls."""

    def __init__(self, embedded: EmbeddedHost) -> None:
        self.embedded = embedded
        self.pid = os.getpid()

    def request(self, op: str, timeout_s: float = 30.0, **args: Any) -> Any:
        try:
            return self.embedded.handle(op, args)
        except Exception as exc:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc

    def kill(self) -> None:
        raise RuntimeError("an embedded host cannot be killed")

    def close(self, timeout_s: float = 30.0) -> None:
        self.request("shutdown")


def run_schedule(
    host: Any, schedule: Schedule, *, history: History | None = None, fault_hook: ArmableHook | None = None
) -> list[Any]:
    """Run `schedule` against the started in-process `host`; return the invariant violations."""
    from agenthost.chaos._campaign_loop import CampaignLoop
    from agenthost.chaos._campaign_run import run_loop
    from agenthost.chaos._campaign_settings import CampaignSettings
    from agenthost.chaos._host_process import RECORDED_EVENTS
    from agenthost.chaos._invariants import (
        check_approvals,
        check_deadlines,
        check_events_recorded,
        check_final_status,
        check_liveness,
        check_restarts,
        check_storage,
        liveness_bound_s,
        read_storage,
    )

    history = history if history is not None else History()
    hook = fault_hook if fault_hook is not None else _HOOKS.get(host)
    config = host.config
    settings = CampaignSettings(
        runtime=config.runtime,
        turn_timeout_s=config.turn_timeout_s,
        request_timeout_s=config.request_timeout_s,
        storage_faults=False,
    )
    holder: dict[str, Any] = {}

    def start(sink: Emit) -> _InProcessDriver:
        if "driver" in holder:
            raise RuntimeError("an embedded host cannot be replaced")
        holder["sink"] = sink
        driver = holder["driver"] = _InProcessDriver(EmbeddedHost(host, sink, hook=hook))
        return driver

    bound_s = liveness_bound_s(config.worker_policy, config.host_policy, config.turn_timeout_s)
    loop = CampaignLoop(
        schedule,
        settings,
        history,
        start,
        Path(config.storage_root),
        can_kill_host=False,
        can_crash_actors=hook is not None,
        liveness_bound_s=bound_s,
    )
    loop.start_host()
    untee = tee_events_to(lambda event: holder["sink"](event), RECORDED_EVENTS)  # noqa: PLW0108 - the sink is set later
    try:
        run_loop(loop, close=False)
    finally:
        untee()
        holder["driver"].embedded._closed.set()
    loop.pump(0.2)
    storage = read_storage(config.storage_root)
    return [
        *check_storage(history, storage),
        *check_restarts(history, config.worker_policy, config.host_policy),
        *check_deadlines(history, config.turn_timeout_s),
        *check_approvals(history, storage),
        *check_final_status(history),
        *check_events_recorded(history),
        *check_liveness(history),
    ]


def _chaos_host_fixture() -> Iterator[Any]:
    from agenthost import AgentHost
    from agenthost.chaos._campaign_settings import CampaignSettings, campaign_host_config

    with tempfile.TemporaryDirectory(prefix="chaos-host-") as folder:
        config = campaign_host_config(str(Path(folder) / "root"), 2, CampaignSettings(storage_faults=False))
        hook = ArmableHook()
        host = AgentHost(config, fault_hook=hook).start()
        _HOOKS[host] = hook
        try:
            yield host
        finally:
            host.shutdown(drain_timeout_s=2.0)


try:
    import pytest
except ImportError:  # pytest is a test dependency; without it there is no fixture to register
    pass
else:
    chaos_host = pytest.fixture(name="chaos_host")(_chaos_host_fixture)
