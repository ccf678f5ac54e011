"""`HostConfig`: everything a host needs, validated at construction and when decoded (errors name the field and
the bad value). All times are in seconds.

Defaults: 2 workers on the built-in runtime; `WORKER_POLICY` (1, 2, 4, ... 30 s, 8 attempts) for workers and
`HOST_POLICY` (1, 2, 4, 8 s, then failed) for the host's children; `WORKER_WATCH` for when the pool stops trusting
a worker; startup 10 s per runtime, 30 s per runtime call, 600 s per turn, 5 s to stop a runtime, 30 s to drain
open turns at shutdown, a checkpoint every 5 s, at most 8 turns running at once, at most `boot_timeout_s` (300 s)
for the host's own start (opening, repairing or rebuilding a large database included).

Placement: runtimes run as local child processes unless `placement="ray"`, which needs `ray_address` and puts each
worker's runtime in a Ray actor that reserves `resources` (actors._placement); each rule is one validator below.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from agenthost.actors._checks import PolicyError, above, at_least, instance
from agenthost.actors._placement import RayResources
from agenthost.actors._recovery import (
    HOST_POLICY,
    WORKER_POLICY,
    WORKER_WATCH,
    RecoveryPolicy,
    RestartType,
    WorkerWatch,
)
from agenthost.actors._upkeep import CHECKPOINT_INTERVAL_S
from agenthost.protocol._faults import RuntimeFaults

__all__ = ["HostConfig"]

_COUNTS = ("workers", "deltas_per_reply", "max_active_turns")
_DURATIONS = (
    "startup_timeout_s",
    "request_timeout_s",
    "turn_timeout_s",
    "shutdown_timeout_s",
    "drain_timeout_s",
    "checkpoint_interval_s",
    "boot_timeout_s",
)


class HostConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a host needs; all times in seconds (see the module contract)."""

    storage_root: str
    workers: int = 2
    runtime: Literal["builtin", "codex"] = "builtin"
    codex_bin: str | None = None  # the native codex binary (runtime "codex")
    codex_config: tuple[str, ...] = ()  # extra `-c key=value` overrides for codex app-server
    worker_faults: dict[int, RuntimeFaults] = {}
    worker_policy: RecoveryPolicy = WORKER_POLICY
    worker_restart: RestartType = "permanent"
    worker_watch: WorkerWatch = WORKER_WATCH
    host_policy: RecoveryPolicy = HOST_POLICY
    host_strategy: Literal["rest_for_one", "one_for_all"] = "rest_for_one"
    deltas_per_reply: int = 4
    startup_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    turn_timeout_s: float = 600.0
    shutdown_timeout_s: float = 5.0
    drain_timeout_s: float = 30.0
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S
    boot_timeout_s: float = 300.0
    ask_timeout_s: float = 30.0  # how long an actor waits for another's reply (a slow disk past it is a crash)
    max_active_turns: int = 8
    rng_seed: int = 0
    placement: Literal["local", "ray"] = "local"  # where runtimes run: child processes, or Ray actors on a cluster
    ray_address: str | None = None  # placement "ray": "auto", "HOST:PORT" (the head's GCS) or "ray://HOST:PORT"
    resources: RayResources = RayResources()  # placement "ray": what each worker's Ray actor reserves

    def __post_init__(self) -> None:
        for name in _COUNTS:
            at_least(f"HostConfig.{name}", getattr(self, name), 1, whole=True)
        for name in _DURATIONS:
            above(f"HostConfig.{name}", getattr(self, name), 0)
        if self.runtime == "codex" and not self.codex_bin:
            raise PolicyError("HostConfig.codex_bin is required when runtime is 'codex', got None")
        if self.runtime == "codex" and self.worker_faults:
            raise PolicyError("HostConfig.worker_faults are knobs of the built-in runtime; runtime is 'codex'")
        for worker_id in self.worker_faults:
            if not 1 <= worker_id <= self.workers:
                raise PolicyError(f"HostConfig.worker_faults names worker {worker_id!r}; workers are 1..{self.workers}")
        instance("HostConfig.resources", self.resources, RayResources)
        _check_ray_address_given(self)
        _check_ray_address_only_for_ray(self)
        _check_ray_address_form(self.ray_address)
        _check_resources_only_for_ray(self)


def _check_ray_address_given(config: HostConfig) -> None:
    if config.placement == "ray" and not config.ray_address:
        raise PolicyError(f"HostConfig.ray_address is required when placement is 'ray', got {config.ray_address!r}")


def _check_ray_address_only_for_ray(config: HostConfig) -> None:
    if config.placement == "local" and config.ray_address is not None:
        raise PolicyError(
            f"HostConfig.ray_address {config.ray_address!r} is only used with placement 'ray'; placement is 'local'"
        )


def _check_ray_address_form(address: str | None) -> None:
    """The address is "auto", "HOST:PORT" or "ray://HOST:PORT", the port a number in 1..65535."""
    if address is None or address == "auto":
        return
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or any(c.isspace() for c in host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise PolicyError(f"HostConfig.ray_address must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT', got {address!r}")


def _check_resources_only_for_ray(config: HostConfig) -> None:
    if config.placement == "local" and config.resources != RayResources():
        raise PolicyError(
            f"HostConfig.resources {msgspec.structs.asdict(config.resources)!r} are only used with placement 'ray'; "
            "placement is 'local'"
        )
