"""A runtime's stdin (actors._pipes.StdinOutbox) on a real OS pipe: written at once when nothing waits, in order
by its thread when the pipe is full, refused when the runtime stopped reading, False once the pipe is broken."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from agenthost.actors._pipes import OutboxFull, StdinOutbox

pytestmark = pytest.mark.timeout(30)

CHUNK = 100_000  # bigger than a Linux pipe's default 64 KiB: such a put can only be written in part at once


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


def _read_exactly(fd: int, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        piece = os.read(fd, count - len(data))
        if not piece:
            break
        data += piece
    return bytes(data)


def test_a_put_when_nothing_waits_is_in_the_pipe_when_it_returns(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread hand-off on the turn path: with the writer thread doing nothing, the bytes still get there."""
    read_fd, write_fd = pipe
    monkeypatch.setattr(StdinOutbox, "_run", lambda self: None)
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), 1 << 20, "test-stdin")
    assert outbox.put(b'{"id":1,"method":"turn/start"}\n')
    assert (outbox.queued, outbox.written, outbox.pending) == (31, 31, 0)
    os.set_blocking(read_fd, False)
    assert os.read(read_fd, 100) == b'{"id":1,"method":"turn/start"}\n'


def test_what_the_pipe_does_not_take_is_written_in_order_by_the_thread(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), 10 * CHUNK, "test-stdin")
    chunks = [bytes([ord("a") + index]) * CHUNK for index in range(3)]
    for chunk in chunks:  # nobody reads yet: the first fills the pipe, the rest waits behind it
        assert outbox.put(chunk)
    assert 0 < outbox.pending < 3 * CHUNK
    received = _read_exactly(read_fd, 3 * CHUNK)
    assert received == b"".join(chunks)
    assert outbox.read_up_to(outbox.queued, grace_s=5.0)
    assert outbox.pending == 0
    assert outbox.put(b"after\n")  # nothing waits again: straight into the pipe
    assert outbox.pending == 0 and os.read(read_fd, 100) == b"after\n"


def test_a_runtime_that_stopped_reading_is_refused_past_the_limit(pipe: tuple[int, int]) -> None:
    _, write_fd = pipe
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), CHUNK, "test-stdin")
    assert outbox.put(b"x" * CHUNK)  # the pipe takes 64 KiB; the rest waits
    waiting = outbox.pending
    assert 0 < waiting < CHUNK
    with pytest.raises(OutboxFull, match=f"{waiting} bytes already wait"):
        outbox.put(b"y" * CHUNK)
    assert outbox.pending == waiting


def test_a_broken_pipe_makes_that_put_and_every_later_one_false(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), CHUNK, "test-stdin")
    os.close(read_fd)  # the runtime exited
    assert outbox.put(b"lost\n") is False
    assert outbox.broken and outbox.pending == 0
    assert outbox.put(b"also lost\n") is False


def test_the_writer_thread_is_not_woken_by_writes_it_did_not_ask_for(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress wakes `read_up_to` waiters only; the writer waits for chunks, and direct puts leave it asleep."""
    read_fd, write_fd = pipe
    wakes: list[str] = []
    real_wait = threading.Condition.wait

    def counting_wait(self: threading.Condition, timeout: float | None = None) -> bool:
        woken = real_wait(self, timeout)
        if threading.current_thread().name == "test-stdin":
            wakes.append("woken")
        return woken

    monkeypatch.setattr(threading.Condition, "wait", counting_wait)
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), CHUNK, "test-stdin")
    for index in range(50):
        assert outbox.put(b"%d\n" % index)
    assert _read_exactly(read_fd, sum(len(b"%d\n" % index) for index in range(50))).startswith(b"0\n1\n")
    outbox.close()
    writer = outbox._thread  # the thread the outbox owns
    writer.join(5.0)
    assert not writer.is_alive()
    assert wakes == ["woken"]  # once: by close()
