"""The two halves of a Ray-placed runtime without a cluster: the dumb process host that runs inside the Ray actor
(actors._ray_runtime.RuntimeHost, which never imports ray) and the head's stdin outbox (actors._ray_handle)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from raykit import ray_or_skip, wait_gone

from agenthost.actors._pipes import OutboxFull, WorkerSpec
from agenthost.actors._ray_runtime import OutputBatch, RuntimeHost

pytestmark = pytest.mark.timeout(60)
ECHO = (sys.executable, "-c", "import sys\nfor line in sys.stdin: sys.stdout.write(line.upper()); sys.stdout.flush()")


class _Reader:
    """Numbered reads of a RuntimeHost, as the head makes them."""

    def __init__(self, host: RuntimeHost) -> None:
        self.host, self.seq = host, 0

    def read(self) -> OutputBatch:
        batch = self.host.read(self.seq, 0.5, 1 << 20)
        self.seq += 1
        return batch

    def until(self, expected: bytes, timeout_s: float = 10.0) -> bytes:
        got = b""
        deadline = time.monotonic() + timeout_s
        while not got.endswith(expected):
            assert time.monotonic() < deadline, f"got {got!r}, waiting for {expected!r}"
            got += self.read().stdout
        return got


def test_input_goes_in_order_and_output_comes_back_in_batches(tmp_path: Path) -> None:
    host = RuntimeHost(WorkerSpec(worker_id=1, generation=1, argv=ECHO, stderr_path=str(tmp_path / "logs" / "w.log")))
    started = host.start()
    assert started.pid > 0 and started.hostname
    for seq in range(50):
        assert host.write(seq, f"line {seq}\n".encode())
    with pytest.raises(ValueError, match="stdin write 7 arrived out of order \\(expected 50\\)"):
        host.write(7, b"late\n")
    reader = _Reader(host)
    out = reader.until(b"LINE 49\n")
    assert out == b"".join(f"LINE {n}\n".encode() for n in range(50))  # a few batches, nothing lost or reordered
    host.close_stdin()
    deadline = time.monotonic() + 10
    while not reader.read().eof:
        assert time.monotonic() < deadline
    assert host.wait(5.0) == 0
    assert (tmp_path / "logs").is_dir()  # the stderr log's folder is created on the node


def test_error_lines_come_with_the_batches_and_a_kill_reaches_the_group() -> None:
    code = "import sys, time\nprint('ERROR: model unreachable', file=sys.stderr, flush=True)\ntime.sleep(300)"
    host = RuntimeHost(
        WorkerSpec(worker_id=1, generation=1, argv=(sys.executable, "-c", code), stderr_path="/dev/null")
    )
    pid = host.start().pid
    deadline = time.monotonic() + 10
    reader = _Reader(host)
    while not (batch := reader.read()).error_lines:
        assert time.monotonic() < deadline
    assert batch.error_lines == ("ERROR: model unreachable",)
    assert not host.exited_within(0.1)
    host.signal_group(signal.SIGKILL)
    assert host.wait(5.0) == -signal.SIGKILL
    assert wait_gone(pid)


def test_a_lingering_runtime_is_killed_by_wait_and_a_bad_command_fails_to_spawn() -> None:
    host = RuntimeHost(WorkerSpec(worker_id=1, generation=1, argv=("sleep", "300")))
    host.start()
    assert host.wait(0.2) == -signal.SIGKILL
    with pytest.raises(OSError):
        RuntimeHost(WorkerSpec(worker_id=1, generation=1, argv=("/nonexistent/runtime",))).start()


def test_remote_outbox_keeps_order_counts_bytes_and_refuses_past_its_limit() -> None:
    ray_or_skip()
    from agenthost.actors._ray_handle import RemoteOutbox

    sent: list[tuple[int, bytes]] = []
    gate = threading.Event()
    finished = threading.Event()

    def send(seq: int, data: bytes) -> bool:
        gate.wait(10)
        sent.append((seq, data))
        return True

    outbox = RemoteOutbox(send, finished.set, limit=10, name="test-stdin")
    assert outbox.put(b"abcdef")
    time.sleep(0.05)  # the writer took it and waits in send
    assert outbox.put(b"ghij")  # waiting: 6 + 4 <= 10
    with pytest.raises(OutboxFull):
        outbox.put(b"klm")  # 10 waiting, 3 more would pass the limit
    assert not outbox.read_up_to(6, 0.05)  # the runtime has not read the first write yet
    gate.set()
    assert outbox.read_up_to(10, 5.0) and outbox.pending == 0
    outbox.close()
    assert outbox.drain(5.0) and finished.is_set()
    assert [seq for seq, _ in sent] == list(range(len(sent)))
    assert b"".join(data for _, data in sent) == b"abcdefghij"
    assert not outbox.put(b"after close")


def test_remote_outbox_is_broken_when_the_actor_is_gone() -> None:
    ray_or_skip()
    from agenthost.actors._ray_handle import RemoteOutbox

    def send(seq: int, data: bytes) -> bool:
        raise RuntimeError("actor died")

    outbox = RemoteOutbox(send, lambda: None, limit=100, name="test-stdin")
    assert outbox.put(b"request\n")
    assert outbox.drain(5.0)
    assert outbox.broken and outbox.pending == 0 and not outbox.put(b"more\n")


def test_reads_are_served_in_their_order_and_a_read_asked_again_gets_the_same_batch() -> None:
    host = RuntimeHost(WorkerSpec(worker_id=1, generation=1, argv=ECHO), spawn=True)
    later: list[OutputBatch] = []
    second = threading.Thread(target=lambda: later.append(host.read(1, 5.0, 1 << 20)))
    second.start()  # read 1 waits for read 0, as when the head keeps two in flight
    assert host.write(0, b"first\n")
    first = host.read(0, 5.0, 1 << 20)
    assert first.stdout == b"FIRST\n"
    assert host.write(1, b"second\n")
    second.join(10)
    assert [batch.stdout for batch in later] == [b"SECOND\n"]
    assert host.read(0, 0.1, 1 << 20) == first  # its answer was lost on the way: the same batch again
    host.close_stdin()
    assert host.wait(5.0) == 0
