"""Host start-up failures are clear errors that lose nothing."""

from __future__ import annotations

import pytest

from actors import AgentHost, FakeClock, HostConfig, HostStartError
from storage import StorageRoot

pytestmark = pytest.mark.timeout(30)


def test_corrupt_database_fails_start_with_the_cause_and_keeps_the_file(tmp_path) -> None:
    root = StorageRoot(tmp_path / "root")
    root.ensure()
    garbage = b"this is not a database" * 100
    root.db_path.write_bytes(garbage)
    with pytest.raises(HostStartError, match="could not start") as failure:
        AgentHost(HostConfig(storage_root=str(root.root), workers=1), clock=FakeClock()).start()
    assert "StorageCorruptError" in str(failure.value) and str(root.db_path) in str(failure.value)
    assert root.db_path.read_bytes() == garbage  # nothing overwritten


@pytest.mark.parametrize(
    ("field", "value"),
    [("workers", 0), ("workers", True), ("turn_timeout_s", 0.0), ("max_active_turns", -1)],
)
def test_config_errors_name_the_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"HostConfig\.{field} .* got {value!r}"):
        HostConfig(storage_root="/tmp/x", **{field: value})


def test_faults_for_a_worker_that_does_not_exist_are_refused() -> None:
    from chaos import RuntimeFaults

    with pytest.raises(ValueError, match="worker 3"):
        HostConfig(storage_root="/tmp/x", workers=2, worker_faults={3: RuntimeFaults(crash_on_start=True)})
