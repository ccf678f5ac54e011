"""The embedding API under a drop-in app-server: a thread's settings reach the runtime and survive a restart, the
runtime's notifications pass through with agenthost's ids, refused options are dropped once, steering, and
requests that belong to no turn."""

from __future__ import annotations

import json

import pytest

from agenthost import AgentHost, RuntimeCallError
from agenthost.protocol import OptionsDropped, RuntimeNotice, TurnFinished
from agenthost.storage import ThreadSettings

pytestmark = pytest.mark.timeout(60)
WAIT_S = 20.0


def _runtime_thread_record(host: AgentHost, thread_id: str) -> dict:
    """What the built-in runtime itself stored for the thread (its runtime thread id is internal)."""
    folder = host.root.system_dir / "runtime-state" / "threads"
    records = [json.loads(path.read_text().splitlines()[0]) for path in folder.glob("*.jsonl")]  # its header
    assert len(records) == 1, records
    return records[0]


def test_settings_reach_the_runtime_and_are_kept_across_a_restart(make_host, tmp_path) -> None:
    host = make_host(workers=1)
    thread_id = host.create_thread("settings", thread_id="01a22731-7179-7490-a4c3-6e34fdf060a3")
    host.update_thread(thread_id, thread_settings={"cwd": str(tmp_path), "approvalPolicy": "never"})
    assert host.send(thread_id, "hello").wait(WAIT_S).status == "completed"
    record = _runtime_thread_record(host, thread_id)
    assert (record["cwd"], record["approvalPolicy"]) == (str(tmp_path), "never")
    host.shutdown()
    again = make_host(workers=1)
    assert again.thread(thread_id).thread_settings() == ThreadSettings(
        thread={"cwd": str(tmp_path), "approvalPolicy": "never"}
    )
    assert again.send(thread_id, "still there?").wait(WAIT_S).status == "completed"


def test_passthrough_turns_get_the_runtime_notifications_with_agenthost_ids(make_host) -> None:
    host = make_host(workers=1)
    thread_id = host.create_thread("pass")
    handle = host.send(thread_id, "stream it", turn_id="01a22731-718a-7cd1-ab10-fed99eeabe0d", passthrough=True)
    events = list(handle.events(WAIT_S))
    assert handle.turn_id == "01a22731-718a-7cd1-ab10-fed99eeabe0d"
    notices = [e for e in events if isinstance(e, RuntimeNotice)]
    methods = [n.method for n in notices]
    assert methods[0] == "turn/started" and methods[-1] == "turn/completed" and "item/agentMessage/delta" in methods
    for notice in notices:
        assert notice.params["threadId"] == thread_id
        assert notice.params.get("turnId", notice.params.get("turn", {}).get("id")) == handle.turn_id
    text = "".join(n.params["delta"] for n in notices if n.method == "item/agentMessage/delta")
    assert text == "Reference reply to: stream it" == events[-1].text
    assert isinstance(events[-1], TurnFinished)


def test_a_model_the_runtime_refuses_is_dropped_once_and_forgotten(make_host) -> None:
    host = make_host(workers=1)
    thread_id = host.create_thread("options")
    host.update_thread(thread_id, turn_settings={"model": "gpt-none", "effort": "high"})
    events = list(host.send(thread_id, "try a model").events(WAIT_S))
    dropped = [e for e in events if isinstance(e, OptionsDropped)]
    assert [(d.options, d.reason) for d in dropped] == [
        (("effort", "model"), "model not found: gpt-none (this runtime serves `reference`)")
    ]
    assert events[-1].status == "completed"
    assert host.thread(thread_id).thread_settings().turn == {}
    assert "runtime options refused" in host.transcript(thread_id)
    plain = list(host.send(thread_id, "again").events(WAIT_S))
    assert not [e for e in plain if isinstance(e, OptionsDropped)] and plain[-1].status == "completed"


def test_a_request_that_belongs_to_no_turn_goes_to_a_runtime(make_host) -> None:
    host = make_host(workers=2)
    models = host.runtime_call("model/list", {})
    assert [m["id"] for m in models["data"]] == ["reference"]
    assert host.runtime_call("account/read", {})["account"] is None
    with pytest.raises(RuntimeCallError, match="unknown variant `no/such`") as refused:
        host.runtime_call("no/such", {})
    assert refused.value.error.code == -32600


def test_a_new_runtime_thread_starts_in_its_projects_folder(make_host) -> None:
    """thread/start gets the thread's project folder as its cwd (the project as its begin answered it, or as the
    storage says when the coordinator no longer remembers that begin)."""
    host = make_host(workers=1)
    thread_id = host.create_thread("in alpha", project_id="alpha", thread_id="01a22731-7179-7490-a4c3-6e34fdf060a4")
    assert host.send(thread_id, "hello").wait(WAIT_S).status == "completed"
    assert _runtime_thread_record(host, thread_id)["cwd"] == str(host.root.project_dir("alpha"))
