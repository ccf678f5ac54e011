"""A campaign's settings and the small, fast host configuration it runs the host with.

Contract:
- `CampaignSettings` (frozen): runtime "builtin" (default) or "codex" (`codex_bin`), `max_inflight` 4 open turns
  at most before the next send, turn timeout 2 s, request timeout 1 s, ask timeout 1.5 s (an actor's deadline on
  another's reply: a SlowDisk sync of 2..3 s makes the asking actor time out and crash), `drain_timeout_s` 30 s
  for the open turns after the last op, `storage_faults` (stack FaultyVFS/CrashVFS/ArmableFs in the host; the
  storage fault kinds need it).
- `campaign_host_config(root, workers, settings, codex_config=())` is the `HostConfig` of a campaign host, small
  so 1000 faults take minutes: worker backoff 0.01 s doubling to 0.08 s, 8 attempts, intensity 50 restarts / 1 s,
  stable after 0.3 s; host backoff the same, 4 attempts, 20 restarts / 1 s; start-up timeout 5 s (10 s for codex);
  request timeout from the settings (10 s for codex); shutdown and drain 1 s and 2 s; checkpoint every 0.5 s; 8
  active turns at most; 6 deltas per reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from agenthost import HostConfig

__all__ = ["CampaignSettings", "campaign_host_config"]


class CampaignSettings(msgspec.Struct, frozen=True, kw_only=True):
    runtime: str = "builtin"  # builtin | codex
    codex_bin: str | None = None
    max_inflight: int = 4
    turn_timeout_s: float = 2.0
    request_timeout_s: float = 1.0
    ask_timeout_s: float = 1.5  # an actor's deadline on another's reply: a slower sync (SlowDisk) is a crash
    drain_timeout_s: float = 30.0
    storage_faults: bool = True  # stack FaultyVFS/CrashVFS/ArmableFs in the host (needed by storage fault kinds)


def campaign_host_config(
    root: str, workers: int, settings: CampaignSettings, codex_config: tuple[str, ...] = ()
) -> HostConfig:
    from agenthost import HostConfig
    from agenthost.actors import Backoff, Intensity, RecoveryPolicy

    fast = Backoff(initial_s=0.01, multiplier=2.0, max_s=0.08)
    return HostConfig(
        storage_root=root,
        workers=workers,
        runtime=settings.runtime,  # type: ignore[arg-type]
        codex_bin=settings.codex_bin,
        codex_config=codex_config,
        worker_policy=RecoveryPolicy(
            backoff=fast, max_attempts=8, intensity=Intensity(max_restarts=50, period_s=1.0), stable_after_s=0.3
        ),
        host_policy=RecoveryPolicy(
            backoff=fast, max_attempts=4, intensity=Intensity(max_restarts=20, period_s=1.0), stable_after_s=0.3
        ),
        startup_timeout_s=10.0 if settings.runtime == "codex" else 5.0,
        request_timeout_s=settings.request_timeout_s if settings.runtime == "builtin" else 10.0,
        turn_timeout_s=settings.turn_timeout_s,
        shutdown_timeout_s=1.0,
        drain_timeout_s=2.0,
        checkpoint_interval_s=0.5,
        ask_timeout_s=settings.ask_timeout_s,
        max_active_turns=8,
        deltas_per_reply=6,
    )
