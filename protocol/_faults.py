"""Fault knobs for the reference runtime, and the process-group kill used to stop runtimes hard.

Contract:
- `RuntimeFaults` is validated at construction (and when decoded): crash_after_deltas >= 1 or None; hang_on a
  non-empty method name or None; delta_delay_s a finite number of seconds >= 0. A bad value raises ValueError naming
  the field and the value. All defaults mean "no fault". `eof_mid_line` and `stop_self` fire once per loaded
  value (a process that re-reads an unchanged faults file does not fire them again).
- `encode_faults` writes compact JSON with defaults omitted (`{}` for no faults); `decode_faults` is strict (unknown
  fields, wrong types, bad values) and raises ValueError naming the problem. The runtime reads the JSON from
  `--faults` or, when that flag is absent, from the environment variable FAULTS_ENV_VAR; a `--faults-file` that
  exists overrides both and is re-read live whenever its mtime or size changes.
- `kill_process_group(pid, sig)` signals the process group of `pid` (start runtimes with start_new_session=True so
  the group is theirs). A process that is already gone is not an error. It refuses (ValueError) to signal the
  caller's own process group.
"""

from __future__ import annotations

import math
import os
import signal

import msgspec

__all__ = ["FAULTS_ENV_VAR", "RuntimeFaults", "decode_faults", "encode_faults", "kill_process_group"]

FAULTS_ENV_VAR = "AGENTHOST_RUNTIME_FAULTS"


class RuntimeFaults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    crash_after_deltas: int | None = None  # SIGKILL itself after writing this many agentMessage deltas (process-wide)
    hang_on: str | None = None  # a method name; requests with it are never answered (e.g. "initialize")
    garbage_before_turn: bool = False  # write a non-JSON line to stdout before each turn's first notification
    delta_delay_s: float = 0.0  # sleep between deltas (slow stream), seconds
    crash_on_start: bool = False  # exit(3) before reading stdin
    eof_mid_line: bool = False  # at the next turn start or delta: write half a JSON line, flush, exit 0 (once)
    stop_self: bool = False  # at the next turn start or delta: SIGSTOP itself (once; someone else sends SIGCONT)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first field with a bad value."""
        crash_after = self.crash_after_deltas
        if crash_after is not None and (type(crash_after) is not int or crash_after < 1):
            raise ValueError(f"crash_after_deltas {crash_after!r} is invalid: must be an int >= 1 or None")
        if self.hang_on is not None and (not isinstance(self.hang_on, str) or not self.hang_on):
            raise ValueError(f"hang_on {self.hang_on!r} is invalid: must be a non-empty method name or None")
        delay = self.delta_delay_s
        if type(delay) not in (int, float) or not math.isfinite(delay) or delay < 0:
            raise ValueError(f"delta_delay_s {delay!r} is invalid: must be a finite number of seconds >= 0")
        for name in ("garbage_before_turn", "crash_on_start", "eof_mid_line", "stop_self"):
            if type(getattr(self, name)) is not bool:
                raise ValueError(f"{name} {getattr(self, name)!r} is invalid: must be a bool")


_faults_decoder = msgspec.json.Decoder(RuntimeFaults)


def encode_faults(faults: RuntimeFaults) -> str:
    """Compact JSON for a command-line argument or environment variable."""
    return msgspec.json.encode(faults).decode()


def decode_faults(text: str) -> RuntimeFaults:
    """Strict decode of `encode_faults` output; ValueError names the problem."""
    try:
        return _faults_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise ValueError(f"runtime faults {text!r} are invalid: {exc}") from None


def kill_process_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """os.killpg(os.getpgid(pid), sig); a vanished process is ignored; never signals our own group."""
    try:
        group = os.getpgid(pid)
        if group == os.getpgrp():
            raise ValueError(f"pid {pid} is in our own process group {group}; start it with start_new_session=True")
        os.killpg(group, sig)
    except ProcessLookupError:
        pass
