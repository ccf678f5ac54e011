"""Storage faults seen through the whole host: clear errors, reads keep working, nothing acknowledged is lost."""

from __future__ import annotations

import pytest

from agenthost import AgentHost, HostConfig
from agenthost.actors import FakeClock
from agenthost.chaos import FaultPlan, FaultyVFS
from agenthost.storage import StorageFullError, parse_checkpoints

pytestmark = pytest.mark.timeout(60)


def test_disk_full_refuses_new_messages_clearly_and_keeps_serving_reads(tmp_path) -> None:
    with FaultyVFS(None) as vfs:
        config = HostConfig(storage_root=str(tmp_path / "root"), workers=1)
        with AgentHost(config, clock=FakeClock(), storage_vfs=vfs.vfs_name) as host:
            thread_id = host.create_thread("before the disk filled")
            assert host.send(thread_id, "kept").wait(20.0).status == "completed"
            vfs.plan = FaultPlan(op="write", nth=1, persistent=True, error="full")
            with pytest.raises(StorageFullError, match="disk is full"):
                host.send(thread_id, "refused")
            assert [t.user_text for t in host.turns(thread_id)] == ["kept"]  # reads still served
            assert parse_checkpoints(host.transcript(thread_id))[-1][1] == "completed"  # a turn's last marker
            vfs.plan = None  # space freed: writes work again without a restart
            assert host.send(thread_id, "after").wait(20.0).status == "completed"
