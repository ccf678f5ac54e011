"""Host start-up failures are clear errors that lose nothing."""

from __future__ import annotations

import pytest

from agenthost import AgentHost, HostConfig, HostStartError
from agenthost.actors import FakeClock
from agenthost.storage import StorageRoot

pytestmark = pytest.mark.timeout(30)


def test_corrupt_database_is_quarantined_and_the_host_starts_on_a_rebuilt_one(tmp_path) -> None:
    from agenthost.testing import capture_events

    root = StorageRoot(tmp_path / "root")
    config = HostConfig(storage_root=str(root.root), workers=1)
    with AgentHost(config, clock=FakeClock()) as host:
        thread_id = host.create_thread("survives corruption")
        assert host.send(thread_id, "remember me").wait(20.0).status == "completed"
    garbage = b"this is not a database" * 100
    root.db_path.write_bytes(garbage)
    with capture_events("storage.quarantined") as log, AgentHost(config, clock=FakeClock()) as host:
        assert [(t.user_text, t.status) for t in host.turns(thread_id)] == [("remember me", "completed")]
        assert host.send(thread_id, "and after").wait(20.0).status == "completed"
    event = log.events[0]
    assert event["rebuilt_threads"] == 1 and event["rebuilt_turns"] == 1
    quarantined = [p for p in (root.system_dir / "quarantine").rglob("agenthost.db")]
    assert [p.read_bytes() for p in quarantined] == [garbage]  # moved aside untouched, never deleted


def test_a_second_host_on_the_same_root_is_refused(tmp_path) -> None:
    config = HostConfig(storage_root=str(tmp_path / "root"), workers=1)
    with (
        AgentHost(config, clock=FakeClock()),
        pytest.raises(HostStartError, match="in use by another agenthost process"),
    ):
        AgentHost(config, clock=FakeClock()).start()


@pytest.mark.parametrize(
    ("field", "value"),
    [("workers", 0), ("workers", True), ("turn_timeout_s", 0.0), ("max_active_turns", -1)],
)
def test_config_errors_name_the_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"HostConfig\.{field} .* got {value!r}"):
        HostConfig(storage_root="/tmp/x", **{field: value})


def test_faults_for_a_worker_that_does_not_exist_are_refused() -> None:
    from agenthost.chaos import RuntimeFaults

    with pytest.raises(ValueError, match="worker 3"):
        HostConfig(storage_root="/tmp/x", workers=2, worker_faults={3: RuntimeFaults(crash_on_start=True)})
