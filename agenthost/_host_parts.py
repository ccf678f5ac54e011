"""What `AgentHost` starts its actors with: the `HostParts` a `HostConfig` makes, and the limits of its life.

Contract:
- `host_parts(config, root, ...)` builds the spec factory of `config.runtime` ("codex": `codex_bin` with
  `codex_config`, and the rollout import before a resume; otherwise the built-in runtime with the host's live
  `faults` and `deltas_per_reply`), the coordinator's settings and a fresh `TurnRegistry`; everything else is
  passed through as given.
- `clear_live_faults(root, workers)` deletes the live fault files of workers 1..`workers`: a new host never
  inherits a previous one's test knobs.
- `shutdown_bound_s(config)`: how long a stop may take at most, 4 x (`shutdown_timeout_s` + 25 s) + 10 s.
"""

from __future__ import annotations

from collections.abc import Callable

from agenthost._config import HostConfig
from agenthost.actors._children import HostParts
from agenthost.actors._clock import Clock
from agenthost.actors._placement import ProcessHost
from agenthost.actors._refs import FaultHook
from agenthost.actors._runtimes import CodexRolloutSync, builtin_spec_factory, codex_spec_factory, faults_file_path
from agenthost.actors._turns import CoordinatorSettings, TurnRegistry
from agenthost.protocol._faults import RuntimeFaults
from agenthost.storage import AtomicFs, StorageRoot

__all__ = ["clear_live_faults", "host_parts", "shutdown_bound_s"]


def host_parts(
    config: HostConfig,
    root: StorageRoot,
    *,
    clock: Clock,
    wall: Callable[[], float],
    faults: dict[int, RuntimeFaults],
    storage_vfs: str | None,
    transcript_fs: AtomicFs | None,
    fault_hook: FaultHook | None,
    process_host: ProcessHost,
) -> HostParts:
    prepare_resume = None
    if config.runtime == "codex":
        assert config.codex_bin is not None
        prepare_resume = CodexRolloutSync(root).prepare_resume
        spec_factory = codex_spec_factory(
            root,
            codex_bin=config.codex_bin,
            config_overrides=config.codex_config,
            startup_timeout_s=config.startup_timeout_s,
        )
    else:
        spec_factory = builtin_spec_factory(
            root,
            faults=faults,
            deltas_per_reply=config.deltas_per_reply,
            startup_timeout_s=config.startup_timeout_s,
        )
    settings = CoordinatorSettings(
        request_timeout_s=config.request_timeout_s,
        turn_timeout_s=config.turn_timeout_s,
        max_active_turns=config.max_active_turns,
        ask_timeout_s=config.ask_timeout_s,
    )
    return HostParts(
        root=root,
        clock=clock,
        wall=wall,
        worker_count=config.workers,
        spec_factory=spec_factory,
        worker_policy=config.worker_policy,
        worker_restart=config.worker_restart,
        watch=config.worker_watch,
        settings=settings,
        checkpoint_interval_s=config.checkpoint_interval_s,
        registry=TurnRegistry(),
        storage_vfs=storage_vfs,
        transcript_fs=transcript_fs,
        prepare_resume=prepare_resume,
        fault_hook=fault_hook,
        process_host=process_host,
    )


def clear_live_faults(root: StorageRoot, workers: int) -> None:
    """Live fault files are test knobs of one host's life: a new host never inherits them."""
    for worker_id in range(1, workers + 1):
        faults_file_path(root, worker_id).unlink(missing_ok=True)


def shutdown_bound_s(config: HostConfig) -> float:
    """How long the host's own stop may take at most: four children, each bounded by its shutdown timeout plus
    the host's grace; past it the caller goes on (the host's threads are daemons)."""
    return 4 * (config.shutdown_timeout_s + 25.0) + 10.0
