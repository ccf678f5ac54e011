"""The head's side of a runtime placed in a Ray actor: a `RuntimeHandle` (actors._placement) over Ray calls.

Contract:
- Placement: the pump thread first waits (up to the spec's `startup_timeout_s`) until Ray placed the actor and its
  creation spawned the runtime (`where`, event "placement.runtime_placed"); until then `pid` is 0. An actor that is
  not placed in time, or whose creation failed, ends the output with a cause naming it.
- Output comes back in batches: one pump thread per runtime long-polls the actor (numbered `read`s, at most
  `READ_WAIT_S` per call, up to `READ_MAX_BYTES` a batch; never one call per line; `READS_IN_FLIGHT` of them
  outstanding, so output that arrives while the head handles a batch leaves at once; a read that Ray reports
  unavailable is asked again by its number and answered with the same batch), decodes the lines with the same codec as a
  local reader (`LineBuffer`, `decode_line`, a line over 16 MiB dropped and logged), puts them in the worker's
  `StdoutInbox` and tells the worker `StdoutReady` only when no signal is pending. Error lines from the runtime's
  stderr come with the batches and go to `on_error_line`. At EOF, or when the actor is gone, the worker is told
  `StdoutClosed`.
- Input goes out in order: `RemoteOutbox` has the local outbox's semantics (`put` never blocks; `OutboxFull` past
  the limit when bytes already wait; `queued`/`written` byte counters; `read_up_to`), and one writer thread sends
  what waits as numbered `write` calls, one at a time, each acknowledged once the runtime's pipe took it. A write
  that never returns (the runtime stopped reading) leaves `written` behind, so the worker's watch sees it.
- Failures are causes, never retries: the actor dying (`ActorDiedError`, its node dying included) or not answering
  within `READ_WAIT_S + lost_after_s` ("lost": the head kills it) ends the output with `exit_cause()` naming the
  actor, its node and what Ray said. The pool then decides exactly as for a local crash.
- Ray calls use three concurrency groups of the actor: "in" (stdin, in order), "out" (the long poll) and "ctl"
  (signals, wait, info), so a runtime that stopped reading never blocks a kill. Every call the head makes is
  awaited with a deadline; the actor is released (`ray.kill`) once its runtime was reaped, stopped or killed.
"""

from __future__ import annotations

import collections
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka
import ray

from agenthost.actors._log import get_logger
from agenthost.actors._pipes import OutboxFull, StdoutInbox, exit_reason
from agenthost.actors._ray_runtime import OutputBatch, RuntimeStarted
from agenthost.protocol._jsonrpc import LineBuffer, LineTooLongError, decode_line
from agenthost.protocol._messages import StdoutClosed, StdoutReady

__all__ = ["READS_IN_FLIGHT", "READ_MAX_BYTES", "READ_WAIT_S", "RayRuntime", "RemoteOutbox", "describe_death"]

_log = get_logger("agenthost.placement")
READ_WAIT_S = 0.5  # one long poll waits at most this long for output
READ_MAX_BYTES = 4 * 1024 * 1024  # one batch carries at most this much stdout
READS_IN_FLIGHT = 2  # the next read already waits at the actor while the head handles a batch
_WRITE_BATCH = 1024 * 1024  # one stdin call carries at most this much (more waiting goes in the next)
_CTL_TIMEOUT_S = 5.0  # a control call (signal, info) that takes longer is given up on
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_death(error: BaseException) -> str:
    """What Ray said about a dead actor, on one line, without its id table (for a failed creation: its exception)."""
    text = _ANSI.sub("", str(error))
    if getattr(error, "actor_init_failed", False):
        last = [line.strip() for line in text.splitlines() if line.strip()][-1:]
        return f"its creation failed: {last[0] if last else type(error).__name__}"[:400]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("\t")]
    lines = [line for line in lines if not line.startswith("The actor died unexpectedly before finishing")]
    return " ".join(lines)[:400] or type(error).__name__


class RemoteOutbox:
    """A runtime's stdin on another node, as the worker actor sees it (see the module contract)."""

    def __init__(self, send: Callable[[int, bytes], bool], finish: Callable[[], None], limit: int, name: str) -> None:
        self._send = send
        self._finish = finish
        self._limit = limit
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.written = 0
        self.broken = False
        self._closing = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return self.queued - self.written

    def put(self, data: bytes, *, hold: bool = False) -> bool:
        """As `StdinOutbox.put`; `hold` changes nothing here: every chunk goes through the sending thread anyway."""
        with self._cond:
            if self.broken or self._closing:
                return False
            waiting = self.queued - self.written
            if waiting and waiting + len(data) > self._limit:
                raise OutboxFull(f"{waiting} bytes already wait for the runtime's stdin (limit {self._limit})")
            self._chunks.append(data)
            self.queued += len(data)
            self._cond.notify_all()
            return True

    def release(self) -> bool:
        """Nothing is ever held here (see `put`); False once broken or closing."""
        with self._cond:
            return not (self.broken or self._closing)

    def read_up_to(self, offset: int, grace_s: float = 0.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.written >= offset, timeout=grace_s)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Wait until the writer thread finished (everything written and stdin closed, or the pipe broke)."""
        return self._done.wait(timeout_s)

    def _take(self) -> bytes | None:
        with self._cond:
            while not self._chunks and not self._closing:
                self._cond.wait()
            if not self._chunks:
                return None
            parts = [self._chunks.popleft()]
            size = len(parts[0])
            while self._chunks and size + len(self._chunks[0]) <= _WRITE_BATCH:
                size += len(self._chunks[0])
                parts.append(self._chunks.popleft())
            return b"".join(parts)

    def _run(self) -> None:
        seq = 0
        try:
            while (data := self._take()) is not None:
                try:
                    ok = self._send(seq, data)
                except Exception:  # noqa: BLE001 - the actor is gone: the pipe is broken, the pump reports why
                    ok = False
                seq += 1
                with self._cond:
                    if not ok:
                        self.broken = True
                        self.written = self.queued
                        self._chunks.clear()
                        self._cond.notify_all()
                        return
                    self.written += len(data)
                    self._cond.notify_all()
            try:
                self._finish()
            except Exception:  # noqa: BLE001 - closing the stdin of a dead actor: nothing left to close
                pass
        finally:
            self._done.set()


class RayRuntime:
    """A runtime process inside a Ray actor, driven from the head (see the module contract)."""

    def __init__(
        self,
        actor: Any,
        *,
        label: str,
        worker_id: int,
        generation: int,
        placement_timeout_s: float,
        resources: str,
        outbox_limit_bytes: int,
        inbox: StdoutInbox,
        actor_ref: Any,
        on_error_line: Callable[[str], None],
        lost_after_s: float,
        on_release: Callable[[RayRuntime], None],
    ) -> None:
        self.actor = actor
        self.label = label  # "<namespace>/worker-<id>", then "... on <node ip>" once placed
        self.where: RuntimeStarted | None = None  # set once the actor is placed and its runtime spawned
        self._worker = (worker_id, generation)
        self._placement_timeout_s = placement_timeout_s
        self._resources = resources
        self._inbox = inbox
        self._actor_ref = actor_ref
        self._on_error_line = on_error_line
        self._lost_after_s = lost_after_s
        self._on_release = on_release
        self._cause: str | None = None
        self._released = threading.Event()
        self.outbox = RemoteOutbox(self._send, self._finish, outbox_limit_bytes, f"{label}-stdin")
        threading.Thread(target=self._pump, name=f"{label}-stdout", daemon=True).start()

    @property
    def pid(self) -> int:
        """The runtime's pid on its node; 0 until the actor is placed."""
        return 0 if self.where is None else self.where.pid

    # --- the calls ---------------------------------------------------------------------------------------------
    def _call(self, group: str, method: str, *args: Any, timeout_s: float | None) -> Any:
        ref = getattr(self.actor, method).options(concurrency_group=group).remote(*args)
        return ray.get(ref, timeout=timeout_s)

    def _send(self, seq: int, data: bytes) -> bool:
        return bool(self._call("in", "write", seq, data, timeout_s=None))

    def _finish(self) -> None:
        self._call("in", "close_stdin", timeout_s=_CTL_TIMEOUT_S)

    def _place(self) -> bool:
        """Wait (bounded) until Ray placed the actor and its creation spawned the runtime; False with a cause if not."""
        try:
            where: RuntimeStarted = self._call("ctl", "info", timeout_s=self._placement_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self._cause = (
                f"Ray actor {self.label} was not placed within {self._placement_timeout_s:g} s (it asks for "
                f"{self._resources}; does a node have that free?)"
            )
        except ray.exceptions.RayError as exc:
            self._cause = f"Ray actor {self.label} could not start the runtime: {describe_death(exc)}"
        else:
            self.where = where
            self.label = f"{self.label} on {where.node_ip}"
            worker_id, generation = self._worker
            _log.info(
                "placement.runtime_placed",
                worker=worker_id,
                generation=generation,
                pid=where.pid,
                node_ip=where.node_ip,
                node_id=where.node_id,
            )
            return True
        _log.warning("placement.not_placed", actor=self.label, cause=self._cause)
        self.release()
        return False

    def _pump(self) -> None:
        lines = LineBuffer()
        try:
            if self._place():
                self._pump_batches(lines)
            self._actor_ref.tell(StdoutClosed(remainder=lines.flush()))
        except pykka.ActorDeadError:
            pass

    def _submit_read(self, seq: int) -> Any:
        return self.actor.read.options(concurrency_group="out").remote(seq, READ_WAIT_S, READ_MAX_BYTES)

    def _pump_batches(self, lines: LineBuffer) -> None:
        """Batches in order, with the next read always waiting at the actor (`READS_IN_FLIGHT`)."""
        in_flight = collections.deque(self._submit_read(seq) for seq in range(READS_IN_FLIGHT))
        seq = 0
        try:
            while (batch := self._read(seq, in_flight[0])) is not None:
                in_flight.popleft()
                in_flight.append(self._submit_read(seq + READS_IN_FLIGHT))
                seq += 1
                for line in batch.error_lines:
                    self._on_error_line(line)
                if batch.stdout:
                    try:
                        complete = lines.feed(batch.stdout)
                    except LineTooLongError as exc:
                        _log.warning("worker.line_too_long", error=str(exc))
                        complete = lines.feed(b"")
                    if complete and self._inbox.put([decode_line(line) for line in complete if line]):
                        self._actor_ref.tell(StdoutReady())
                if batch.eof:
                    return
        finally:
            self._settle(in_flight)

    def _settle(self, refs: collections.deque[Any]) -> None:
        """Collect the reads still in flight (answered at once after EOF, failed once the actor is gone), so none is
        left for Ray to report as an unhandled error."""
        for ref in refs:
            try:
                ray.get(ref, timeout=_CTL_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - the stream is over: whatever they say changes nothing
                pass

    def _read(self, seq: int, ref: Any) -> OutputBatch | None:
        """Read `seq`; None once the actor died or was lost (the cause is kept for `exit_cause`)."""
        unavailable_since: float | None = None
        while not self._released.is_set():
            try:
                batch: OutputBatch = ray.get(ref, timeout=READ_WAIT_S + self._lost_after_s)
                return batch
            except ray.exceptions.GetTimeoutError:
                self._lose(f"did not answer within {READ_WAIT_S + self._lost_after_s:g} s")
            except ray.exceptions.ActorUnavailableError as exc:  # maybe a network blip: lost after the bound
                now = time.monotonic()
                unavailable_since = unavailable_since or now
                if now - unavailable_since < self._lost_after_s:
                    time.sleep(0.1)
                    ref = self._submit_read(seq)  # the actor answers a read asked again with the same batch
                    continue
                self._lose(f"unreachable for {self._lost_after_s:g} s: {describe_death(exc)}")
            except ray.exceptions.RayError as exc:
                self._died(describe_death(exc))
            return None
        return None

    def _died(self, what: str) -> None:
        if self._cause is None:
            self._cause = f"Ray actor {self.label} died: {what}"
            _log.warning("placement.actor_died", actor=self.label, cause=self._cause)

    def _lose(self, what: str) -> None:
        if self._cause is None:
            self._cause = f"Ray actor {self.label} lost: {what}"
            _log.warning("placement.actor_lost", actor=self.label, cause=self._cause)
        self.release()

    # --- RuntimeHandle -----------------------------------------------------------------------------------------
    def running(self) -> bool:
        return self._cause is None and not self._released.is_set()

    def signal_group(self, sig: int) -> None:
        if self._released.is_set() or self._cause is not None:
            return
        try:
            self._call("ctl", "signal_group", sig, timeout_s=_CTL_TIMEOUT_S)
        except ray.exceptions.RayError:
            pass  # the actor is gone, and its runtime with it (PR_SET_PDEATHSIG) or soon reported by the pump

    def reap(self, grace_s: float) -> int | None:
        if self._cause is not None:  # the actor died or was lost: there is nobody left to ask
            self.release()
            return None
        try:
            returncode: int | None = self._call("ctl", "wait", grace_s, timeout_s=grace_s + _CTL_TIMEOUT_S)
        except ray.exceptions.RayError as exc:
            self._died(describe_death(exc))
            returncode = None
        self.release()
        return returncode

    def close_stdin(self) -> None:
        self.outbox.close()

    def stop(self, timeout_s: float) -> tuple[int | None, str]:
        started = time.monotonic()
        self.outbox.close()
        self.outbox.drain(timeout_s)
        left = max(0.0, timeout_s - (time.monotonic() - started))
        returncode: int | None = None
        how = f"killed after {timeout_s:g} s"
        if self._cause is not None:  # the actor died or was lost: its runtime went with it
            self.release()
            return None, self._cause
        try:
            exited: bool = self._call("ctl", "exited_within", left, timeout_s=left + _CTL_TIMEOUT_S)
            returncode = self._call("ctl", "wait", 0.0, timeout_s=_CTL_TIMEOUT_S)
            if exited:
                how = "stdin closed"
        except ray.exceptions.RayError as exc:
            self._died(describe_death(exc))
            how = self._cause or how
        self.release()
        return returncode, how

    def kill_and_wait(self) -> None:
        self.signal_group(signal.SIGKILL)
        if not self._released.is_set() and self._cause is None:
            try:
                self._call("ctl", "wait", 1.0, timeout_s=1.0 + _CTL_TIMEOUT_S)
            except ray.exceptions.RayError:
                pass
        self.outbox.close()
        self.release()

    def exit_cause(self, returncode: int | None) -> str:
        return self._cause if self._cause is not None else exit_reason(returncode)

    def release(self) -> None:
        """Nothing is left for the actor to host: kill it (no restart), once."""
        if self._released.is_set():
            return
        self._released.set()
        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead or unknown to Ray: nothing to release
            pass
        self._on_release(self)
