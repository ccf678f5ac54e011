"""A runtime's stdin (actors._pipes.StdinOutbox) on a real OS pipe: written at once when nothing waits, in order
by its thread when the pipe is full, refused when the runtime stopped reading, False once the pipe is broken."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from agenthost.actors._pipes import HOLD_MAX_BYTES, OutboxFull, StdinOutbox

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


def _counting_writes(monkeypatch: pytest.MonkeyPatch, fd: int) -> list[bytes]:
    """Every os.write to `fd` from now on."""
    writes: list[bytes] = []
    real_write = os.write

    def write(target: int, data: bytes | memoryview) -> int:
        if target == fd:
            writes.append(bytes(data))
        return real_write(target, data)

    monkeypatch.setattr(os, "write", write)
    return writes


def test_held_puts_reach_the_pipe_as_one_write_at_the_release(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls that arrive together wake the runtime once; held bytes count as queued, not as waiting for it."""
    read_fd, write_fd = pipe
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), 40, "test-stdin")
    writes = _counting_writes(monkeypatch, write_fd)
    lines = [b'{"id":%d,"method":"turn/start"}\n' % index for index in range(3)]  # 31 bytes each
    for line in lines:
        assert outbox.put(line, hold=True)  # past the 40-byte limit together: held bytes do not wait for the runtime
    assert writes == [] and (outbox.queued, outbox.written, outbox.pending) == (93, 0, 93)
    assert outbox.release()
    assert writes == [b"".join(lines)] and outbox.pending == 0
    assert _read_exactly(read_fd, 93) == b"".join(lines)
    assert outbox.release() and writes == [b"".join(lines)]  # nothing held: nothing written


def test_a_plain_put_takes_what_is_held_first_and_a_close_keeps_it(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), CHUNK, "test-stdin")
    assert outbox.put(b"held\n", hold=True)
    assert outbox.put(b"plain\n")
    assert _read_exactly(read_fd, 11) == b"held\nplain\n"
    assert outbox.put(b"held at close\n", hold=True)
    outbox.close()
    outbox._thread.join(5.0)
    assert _read_exactly(read_fd, 100) == b"held at close\n"


def test_held_bytes_are_written_without_a_release_once_a_write_chunk_is_held(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_fd, write_fd = pipe
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), 10 * CHUNK, "test-stdin")
    writes = _counting_writes(monkeypatch, write_fd)
    piece = b"x" * 1024
    for _ in range(HOLD_MAX_BYTES // len(piece) - 1):
        assert outbox.put(piece, hold=True)
    assert writes == []
    assert outbox.put(piece, hold=True)  # the last KiB: HOLD_MAX_BYTES held
    assert len(writes) == 1 and outbox.pending == 0
    assert len(_read_exactly(read_fd, HOLD_MAX_BYTES)) == HOLD_MAX_BYTES


def test_a_broken_pipe_drops_what_is_held_and_refuses_the_release(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    outbox = StdinOutbox(os.fdopen(write_fd, "wb", buffering=0), CHUNK, "test-stdin")
    os.close(read_fd)
    assert outbox.put(b"held\n", hold=True)
    assert outbox.release() is False
    assert outbox.broken and outbox.pending == 0 and outbox.release() is False
