"""What the drop-in app-server asks of agenthost, behind one interface: an embedded `AgentHost` (`--root`), or a
running `agenthost serve` through its control socket (`--connect`, agenthost._appserver_remote).

Contract: every method is safe to call from any thread and raises agenthost's own errors (`UnknownThreadError`,
`TurnNotActiveError`, `UnknownApprovalError`, `RuntimeCallError`, `NoHealthyWorkerError`, `HostUnavailableError`,
`HostClosedError`, `StorageError`). `send` delivers the turn's events, as plain dicts with "type" (see
agenthost._journal.event_payload), to `sink` from agenthost's threads; the sink must not block. Rows are
storage's `ThreadRow` / `TurnRow`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from agenthost._api import AgentHost
from agenthost._journal import event_payload
from agenthost.storage import ThreadRow, TurnRow

__all__ = ["Backend", "EmbeddedBackend", "Sink"]

Sink = Callable[[dict[str, Any]], None]


class Backend(Protocol):
    root: str

    def create_thread(self, thread_id: str, thread_settings: dict[str, Any]) -> ThreadRow: ...
    def thread(self, thread_id: str) -> ThreadRow: ...
    def threads(self) -> list[ThreadRow]: ...
    def turns(self, thread_id: str) -> list[TurnRow]: ...
    def update_thread(
        self,
        thread_id: str,
        *,
        title: str | None = None,
        thread_settings: dict[str, Any] | None = None,
        turn_settings: dict[str, Any] | None = None,
    ) -> ThreadRow: ...
    def active_turns(self) -> dict[str, str]: ...
    def send(self, thread_id: str, text: str, items: tuple[Any, ...], turn_id: str, sink: Sink) -> bool: ...
    def steer(self, turn_id: str, text: str, items: tuple[Any, ...]) -> None: ...
    def interrupt(self, turn_id: str) -> None: ...
    def answer_approval(self, approval_id: str, decision: Any) -> None: ...
    def runtime_call(self, method: str, params: Any) -> Any: ...
    def close(self) -> None: ...


class _DictSink:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def put(self, event: Any) -> None:
        self._sink(event_payload(event))


class EmbeddedBackend:
    """An `AgentHost` this process owns (started by the caller, shut down by `close`)."""

    def __init__(self, host: AgentHost) -> None:
        self._host = host
        self.root = str(host.root.root)

    def create_thread(self, thread_id: str, thread_settings: dict[str, Any]) -> ThreadRow:
        self._host.create_thread(thread_id=thread_id)
        return self._host.update_thread(thread_id, thread_settings=thread_settings)

    def thread(self, thread_id: str) -> ThreadRow:
        return self._host.thread(thread_id)

    def threads(self) -> list[ThreadRow]:
        return self._host.threads()

    def turns(self, thread_id: str) -> list[TurnRow]:
        return self._host.turns(thread_id)

    def update_thread(
        self,
        thread_id: str,
        *,
        title: str | None = None,
        thread_settings: dict[str, Any] | None = None,
        turn_settings: dict[str, Any] | None = None,
    ) -> ThreadRow:
        return self._host.update_thread(
            thread_id, title=title, thread_settings=thread_settings, turn_settings=turn_settings
        )

    def active_turns(self) -> dict[str, str]:
        return {turn.thread_id: turn.turn_id for turn in self._host.status().active_turns}

    def send(self, thread_id: str, text: str, items: tuple[Any, ...], turn_id: str, sink: Sink) -> bool:
        accepted = self._host.submit(thread_id, text, _DictSink(sink), input=items, turn_id=turn_id, passthrough=True)
        return accepted.queued

    def steer(self, turn_id: str, text: str, items: tuple[Any, ...]) -> None:
        self._host.steer(turn_id, text, input=items)

    def interrupt(self, turn_id: str) -> None:
        self._host.interrupt(turn_id)

    def answer_approval(self, approval_id: str, decision: Any) -> None:
        self._host.answer_approval(approval_id, decision)

    def runtime_call(self, method: str, params: Any) -> Any:
        return self._host.runtime_call(method, params)

    def close(self) -> None:
        self._host.shutdown(drain_timeout_s=0.0)
