"""Tests of the JSON-RPC codec (protocol._jsonrpc), the error classification (protocol._errors) and the fault knobs
(chaos._faults)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import msgspec
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from agenthost.protocol._errors import INVALID_REQUEST, ErrorKind, classify_error, is_no_rollout, is_thread_not_found
from agenthost.protocol._faults import FAULTS_ENV_VAR, RuntimeFaults, decode_faults, encode_faults, kill_process_group
from agenthost.protocol._jsonrpc import (
    ErrorResponse,
    LineBuffer,
    LineTooLongError,
    Notification,
    ProtocolError,
    Request,
    Response,
    RpcError,
    decode_line,
    decode_lines,
    encode_error,
    encode_notification,
    encode_request,
    encode_response,
)

PROPERTY_SEED = 20240611


# --- decode_line classification ------------------------------------------------------------------------------------
def test_request_keeps_int_and_str_ids() -> None:
    assert decode_line(b'{"id":7,"method":"thread/start","params":{"cwd":"/w"}}') == Request(
        id=7, method="thread/start", params={"cwd": "/w"}
    )
    assert decode_line(b'{"id":"7","method":"x"}') == Request(id="7", method="x", params=None)
    assert type(decode_line(b'{"id":"7","method":"x"}').id) is str  # type: ignore[union-attr]


def test_notification_ignores_jsonrpc_and_extra_fields() -> None:
    line = b'{"jsonrpc":"2.0","method":"item/agentMessage/delta","params":{"delta":"hi"},"emittedAtMs":1795481678350}'
    assert decode_line(line) == Notification(method="item/agentMessage/delta", params={"delta": "hi"})


def test_response_with_null_result_is_a_response() -> None:
    assert decode_line(b'{"id":3,"result":null}') == Response(id=3, result=None)
    assert decode_line(b'{"id":"a","result":{"turn":{"id":"t"}}}') == Response(id="a", result={"turn": {"id": "t"}})


def test_error_response_with_and_without_id() -> None:
    line = b'{"id":4,"error":{"code":-32600,"message":"thread not found: x","data":[1]}}'
    expected = RpcError(code=-32600, message="thread not found: x", data=[1])
    assert decode_line(line) == ErrorResponse(id=4, error=expected)
    assert decode_line(b'{"id":null,"error":{"code":1,"message":"m"}}') == ErrorResponse(
        id=None, error=RpcError(code=1, message="m")
    )
    assert decode_line(b'{"error":{"code":1,"message":"m"}}') == ErrorResponse(id=None, error=RpcError(1, "m"))


def test_crlf_and_missing_jsonrpc_are_tolerated() -> None:
    assert decode_line(b'{"id":1,"result":{}}\r\n') == Response(id=1, result={})


@pytest.mark.parametrize(
    ("line", "reason_part"),
    [
        (b"garbage", "malformed"),
        (b"[1,2,3]", "Expected `object`, got `array`"),
        (b'{"id":78}', "not a request"),
        (b'{"jsonrpc":"2.0","id":78}', "not a request"),
        (b'{"id":true,"result":1}', "got `bool`"),
        (b'{"id":1.5,"method":"m"}', "got `float`"),
        (b'{"id":null,"method":"m"}', "must not be null"),
        (b'{"result":1}', "without an id"),
        (b'{"id":1,"error":{"code":1}}', "missing required field `message`"),
        (b'{"id":1,"error":{"message":"m"}}', "missing required field `code`"),
        (b'{"id":1,"result":1,"error":{"code":1,"message":"m"}}', "both result and error"),
        (b'{"id":1,"method":5}', "Expected `str`"),
        (b"", "empty line"),
        (b"\xff\xfe", "malformed"),
        (b'{"id":1,"method":"m","params":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_bad_lines_are_returned_as_protocol_errors(line: bytes, reason_part: str) -> None:
    result = decode_line(line + b"\n")
    assert isinstance(result, ProtocolError)
    assert reason_part in result.reason
    assert result.line == line


def test_decode_lines_skips_empty_lines() -> None:
    chunk = b'{"id":1,"result":1}\n\n{"method":"n"}\r\n  \n'
    assert decode_lines(chunk) == [Response(id=1, result=1), Notification(method="n")]


def test_incoming_round_trips_through_msgspec_as_a_tagged_union() -> None:
    messages = (
        Request(id=1, method="m"),
        ProtocolError(line=b"x", reason="r"),
        ErrorResponse(id=None, error=RpcError(1, "m")),
    )
    encoded = msgspec.json.encode(messages)
    assert msgspec.json.decode(encoded, type=tuple[Request | ProtocolError | ErrorResponse, ...]) == messages


# --- encoders ------------------------------------------------------------------------------------------------------
def test_encoders_write_the_codex_dialect() -> None:
    assert encode_request(0, "item/x") == b'{"id":0,"method":"item/x"}\n'
    assert encode_request("r", "m", {"a": 1}) == b'{"id":"r","method":"m","params":{"a":1}}\n'
    assert encode_notification("initialized") == b'{"method":"initialized"}\n'
    assert encode_response(5, None) == b'{"id":5,"result":null}\n'
    assert encode_error(None, INVALID_REQUEST, "Not initialized") == (
        b'{"id":null,"error":{"code":-32600,"message":"Not initialized"}}\n'
    )
    assert encode_error("e", 1, "m", {"k": 2}) == b'{"id":"e","error":{"code":1,"message":"m","data":{"k":2}}}\n'


@pytest.mark.parametrize("bad_id", [True, 1.0, None, b"1"])
def test_encoders_reject_bad_ids(bad_id: object) -> None:
    with pytest.raises(TypeError, match="request id"):
        encode_request(bad_id, "m")  # type: ignore[arg-type]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
request_ids = st.integers(-(2**63), 2**63 - 1) | st.text()


@seed(PROPERTY_SEED)
@settings(max_examples=300, database=None, deadline=None)
@given(request_id=request_ids, method=st.text(min_size=1), params=json_values, result=json_values)
def test_encode_decode_round_trip(request_id: int | str, method: str, params: object, result: object) -> None:
    print(f"hypothesis seed {PROPERTY_SEED}")
    request = Request(id=request_id, method=method, params=params)
    assert decode_line(encode_request(request_id, method, params)) == request
    assert decode_line(encode_notification(method, params)) == Notification(method=method, params=params)
    assert decode_line(encode_response(request_id, result)) == Response(id=request_id, result=result)
    assert decode_line(encode_error(request_id, -1, method, params)) == ErrorResponse(
        id=request_id, error=RpcError(code=-1, message=method, data=params)
    )


# --- LineBuffer ----------------------------------------------------------------------------------------------------
def test_line_buffer_joins_partial_reads() -> None:
    buffer = LineBuffer()
    assert buffer.feed(b'{"id":1,') == []
    assert buffer.pending_bytes == 8
    assert buffer.feed(b'"result":1}\n{"met') == [b'{"id":1,"result":1}']
    assert buffer.feed(b'hod":"n"}\n\nabc') == [b'{"method":"n"}', b""]
    assert buffer.pending_bytes == 3
    assert buffer.flush() == b"abc"
    assert buffer.flush() == b""
    assert buffer.pending_bytes == 0


def test_line_buffer_splits_one_byte_at_a_time() -> None:
    stream = b"one\ntwo\r\nthree\n"
    buffer = LineBuffer()
    lines = [line for byte in stream for line in buffer.feed(bytes([byte]))]
    assert lines == [b"one", b"two\r", b"three"]


def test_line_buffer_too_long_complete_line_keeps_its_neighbours() -> None:
    buffer = LineBuffer(max_line_bytes=7)
    with pytest.raises(LineTooLongError) as caught:
        buffer.feed(b"ok\n12345678\nfine\npart")
    assert (caught.value.size, caught.value.limit) == (8, 7)
    assert buffer.pending_bytes == 4
    assert buffer.feed(b"ial\n") == [b"ok", b"fine", b"partial"]


def test_line_buffer_too_long_partial_line_is_dropped_up_to_its_newline() -> None:
    buffer = LineBuffer(max_line_bytes=5)
    assert buffer.feed(b"abc") == []
    with pytest.raises(LineTooLongError) as caught:
        buffer.feed(b"defg")
    assert caught.value.size == 7
    assert buffer.pending_bytes == 0
    assert buffer.feed(b"more of the dropped line") == []
    assert buffer.pending_bytes == 0
    assert buffer.feed(b"tail\nnext\n") == [b"next"]


def test_line_buffer_flush_after_dropped_line_returns_nothing() -> None:
    buffer = LineBuffer(max_line_bytes=3)
    with pytest.raises(LineTooLongError):
        buffer.feed(b"x\nlonger")
    assert buffer.feed(b"") == [b"x"]
    assert buffer.flush() == b""


def test_line_buffer_rejects_a_bad_limit() -> None:
    with pytest.raises(ValueError, match="max_line_bytes 0"):
        LineBuffer(max_line_bytes=0)


def test_line_buffer_takes_a_line_of_exactly_its_limit_even_when_it_comes_in_parts() -> None:
    buffer = LineBuffer(max_line_bytes=5)
    assert buffer.feed(b"abcde") == []  # a partial line at the limit is held, not dropped
    assert buffer.feed(b"\n") == [b"abcde"]
    smallest = LineBuffer(max_line_bytes=1)
    assert smallest.feed(b"x\n") == [b"x"]
    with pytest.raises(LineTooLongError):
        smallest.feed(b"xy")


def test_line_buffer_defaults_to_lines_of_16_mib() -> None:
    limit = 16 * 1024 * 1024
    buffer = LineBuffer()
    assert buffer.feed(b"x" * limit + b"\n") == [b"x" * limit]
    with pytest.raises(LineTooLongError) as caught:
        buffer.feed(b"x" * (limit + 1))
    assert (caught.value.size, caught.value.limit) == (limit + 1, limit)


def test_line_buffer_reads_on_once_a_dropped_line_ended() -> None:
    buffer = LineBuffer(max_line_bytes=3)
    with pytest.raises(LineTooLongError):
        buffer.feed(b"longer")
    assert buffer.feed(b"still\nok\n") == [b"ok"]
    assert buffer.feed(b"pa") == []  # a partial read after the dropped line's end is held again
    assert buffer.feed(b"r\n") == [b"par"]


def test_line_buffer_flush_ends_a_dropped_line() -> None:
    buffer = LineBuffer(max_line_bytes=3)
    with pytest.raises(LineTooLongError):
        buffer.feed(b"longer")
    assert buffer.flush() == b""
    assert buffer.feed(b"new\n") == [b"new"]  # after the reset, the first line is a line of its own


@pytest.mark.parametrize(
    "message",
    [
        RpcError(code=1, message="m"),
        Request(id=1, method="m", params=None),
        Notification(method="m", params=None),
        Response(id=1, result=None),
        ErrorResponse(id=1, error=RpcError(code=1, message="m")),
        ProtocolError(line=b"x", reason="r"),
    ],
    ids=lambda message: type(message).__name__,
)
def test_wire_messages_are_immutable_and_hashable(message: object) -> None:
    """Messages are shared between actors' threads: none can be changed after it is made."""
    field = type(message).__struct_fields__[0]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="immutable"):
        setattr(message, field, 2)
    assert hash(message) == hash(msgspec.structs.replace(message))  # type: ignore[type-var]


# --- error classification ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RpcError(-32600, "thread not found: 0199-abc"), ErrorKind.STALE_THREAD),
        (RpcError(-32600, "no rollout found for thread id 0199-abc"), ErrorKind.THREAD_GONE),
        (RpcError(-32000, "thread not found: 0199-abc"), ErrorKind.OTHER),
        (RpcError(-32600, "Thread not found: x"), ErrorKind.OTHER),
        (RpcError(-32600, "invalid session id: x"), ErrorKind.OTHER),
        (RpcError(-32600, "Not initialized"), ErrorKind.OTHER),
    ],
)
def test_classify_error(error: RpcError, kind: ErrorKind) -> None:
    assert classify_error(error) is kind
    assert is_thread_not_found(error) is (kind is ErrorKind.STALE_THREAD)
    assert is_no_rollout(error) is (kind is ErrorKind.THREAD_GONE)


# --- fault knobs ---------------------------------------------------------------------------------------------------
def test_faults_round_trip_compactly() -> None:
    faults = RuntimeFaults(crash_after_deltas=3, hang_on="initialize", garbage_before_turn=True, delta_delay_s=0.25)
    text = encode_faults(faults)
    assert " " not in text
    assert decode_faults(text) == faults
    assert encode_faults(RuntimeFaults()) == "{}"
    assert decode_faults("{}") == RuntimeFaults()
    assert FAULTS_ENV_VAR == "AGENTHOST_RUNTIME_FAULTS"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"crash_after_deltas": 0}, "crash_after_deltas"),
        ({"delta_delay_s": -0.1}, "delta_delay_s"),
        ({"delta_delay_s": float("inf")}, "delta_delay_s"),
        ({"hang_on": ""}, "hang_on"),
    ],
)
def test_faults_validate_at_construction(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RuntimeFaults(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"crash_after_delta":1}', "unknown field `crash_after_delta`"),
        ('{"crash_after_deltas":"3"}', "Expected `int | null`"),
        ('{"crash_after_deltas":-2}', "crash_after_deltas -2"),
        ('{"garbage_before_turn":1}', "Expected `bool`"),
        ("not json", "malformed"),
    ],
)
def test_decode_faults_is_strict(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="runtime faults") as caught:
        decode_faults(text)
    assert problem in str(caught.value)


@pytest.mark.timeout(20)
def test_kill_process_group_kills_the_group_and_ignores_a_gone_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        kill_process_group(child.pid)
        assert child.wait(timeout=10) == -signal.SIGKILL
        kill_process_group(child.pid)  # already reaped: ignored
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def test_kill_process_group_refuses_our_own_group() -> None:
    with pytest.raises(ValueError, match="own process group"):
        kill_process_group(os.getpid(), signal.SIGCONT)
