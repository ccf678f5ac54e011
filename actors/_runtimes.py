"""Runtime adapters: how a pool turns (worker id, generation) into the command line of one runtime process.

Contract:
- `builtin` runs the reference runtime with the current interpreter (`python -m agenthost.protocol.reference_runtime`).
  All workers of a host share one state folder, `system/runtime-state/`, so a thread pinned to another worker
  after a crash can be resumed there with its history.
- Each worker's stderr is appended to `system/logs/worker-<id>.log`.
- `codex` runs the native `codex app-server` binary (never the npm node launcher, which orphans the native child
  on kill) with `-c key=value` overrides and a persistent `CODEX_HOME` per worker; noisy notifications are opted
  out of at `initialize`. Codex logs at `RUST_LOG=warn` (`CODEX_LOG_FILTER`) unless RUST_LOG is set: its default
  (errors only) hides why a model connection is being retried, which a failed turn's error should name.
  `CodexRolloutSync` copies a thread's rollout between the workers' homes before a resume, so a thread that fails
  over to another worker keeps its history in the model's context.
- Fault knobs (chaos.RuntimeFaults) are passed per worker id on the command line; a worker without an entry runs
  without faults. Knobs are read again at every restart, so a test can change them between generations. Every
  builtin runtime also gets `--faults-file <root>/system/faults/worker-<id>.json` (`faults_file_path`): while that
  file exists it overrides the command-line knobs and the runtime re-reads it live.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agenthost.actors._pipes import WorkerSpec
from agenthost.protocol._faults import RuntimeFaults, encode_faults
from agenthost.storage import StorageRoot, atomic_write, private_mkdir

__all__ = [
    "CODEX_CACHE",
    "CODEX_OPT_OUT",
    "CodexBinaryError",
    "CodexRolloutSync",
    "builtin_spec_factory",
    "check_codex_binary",
    "codex_spec_factory",
    "default_codex_bin",
    "faults_file_path",
    "find_native_codex",
]


def faults_file_path(root: StorageRoot, worker_id: int) -> Path:
    """The live faults file of builtin worker `worker_id`: `<root>/system/faults/worker-<id>.json`."""
    return root.system_dir / "faults" / f"worker-{worker_id}.json"


def builtin_spec_factory(
    root: StorageRoot,
    *,
    faults: Mapping[int, RuntimeFaults],
    deltas_per_reply: int,
    startup_timeout_s: float,
) -> Callable[[int, int], WorkerSpec]:
    logs = root.system_dir / "logs"
    private_mkdir(logs)

    def spec(worker_id: int, generation: int) -> WorkerSpec:
        argv = [
            sys.executable,
            "-m",
            "agenthost.protocol.reference_runtime",
            "--state-dir",
            str(root.runtime_state_dir),
            "--deltas-per-reply",
            str(deltas_per_reply),
            "--faults-file",
            str(faults_file_path(root, worker_id)),
        ]
        worker_faults = faults.get(worker_id)
        if worker_faults is not None:
            argv += ["--faults", encode_faults(worker_faults)]
        return WorkerSpec(
            worker_id=worker_id,
            generation=generation,
            argv=tuple(argv),
            stderr_path=str(logs / f"worker-{worker_id}.log"),
            startup_timeout_s=startup_timeout_s,
        )

    return spec


# --- codex app-server ------------------------------------------------------------------------------------------
CODEX_LOG_FILTER = "warn"  # RUST_LOG for codex workers when the environment sets none

CODEX_OPT_OUT = (
    "account/rateLimits/updated",
    "thread/tokenUsage/updated",
    "remoteControl/status/changed",
    "configWarning",
    "warning",
)


class CodexBinaryError(ValueError):
    """The codex binary is missing, not executable, or the node launcher instead of the native binary."""


def check_codex_binary(path: str) -> Path:
    """The native `codex` binary, checked: exists, executable, not the npm node launcher (which orphans the
    native child when it is killed, so the host would never see EOF)."""
    binary = Path(path).expanduser().resolve()
    if not binary.is_file():
        raise CodexBinaryError(f"codex binary {path!r} does not exist")
    if not os.access(binary, os.X_OK):
        raise CodexBinaryError(f"codex binary {path!r} is not executable")
    with binary.open("rb") as head:
        first = head.read(256)
    if first.startswith(b"#!") and b"node" in first.split(b"\n", 1)[0]:
        raise CodexBinaryError(
            f"{path!r} is the npm node launcher; pass the native binary (find_native_codex() locates it under "
            "node_modules/@openai/codex-<platform>/vendor/<target>/bin/codex)"
        )
    return binary


CODEX_CACHE = Path(os.environ.get("AGENTHOST_CODEX_CACHE", Path.home() / ".cache" / "agenthost")) / "codex-0.169.0"


def default_codex_bin() -> Path | None:
    """`AGENTHOST_CODEX_BIN`, else the native binary `.ci/install-codex` put under CODEX_CACHE, else None."""
    explicit = os.environ.get("AGENTHOST_CODEX_BIN")
    return Path(explicit) if explicit else find_native_codex(CODEX_CACHE)


def find_native_codex(npm_prefix: str | os.PathLike[str]) -> Path | None:
    """The native codex binary inside an npm install folder (`npm install @openai/codex` ran there), or None."""
    vendor = Path(npm_prefix) / "node_modules" / "@openai"
    for candidate in sorted(vendor.glob("codex-*/vendor/*/bin/codex")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def codex_spec_factory(
    root: StorageRoot,
    *,
    codex_bin: str,
    config_overrides: Sequence[str],
    startup_timeout_s: float,
) -> Callable[[int, int], WorkerSpec]:
    """`codex app-server` per worker: native binary, own process group, persistent CODEX_HOME per worker under
    `system/codex-home/worker-<id>/` (kept across restarts, so `thread/resume` finds the rollouts)."""
    binary = check_codex_binary(codex_bin)
    logs = root.system_dir / "logs"
    private_mkdir(logs)
    overrides = [item for override in config_overrides for item in ("-c", _checked_override(override))]
    log_filter = {} if "RUST_LOG" in os.environ else {"RUST_LOG": CODEX_LOG_FILTER}

    def spec(worker_id: int, generation: int) -> WorkerSpec:
        home = root.system_dir / "codex-home" / f"worker-{worker_id}"
        private_mkdir(home)
        return WorkerSpec(
            worker_id=worker_id,
            generation=generation,
            argv=(str(binary), "app-server", *overrides),
            env={"CODEX_HOME": str(home), **log_filter},
            stderr_path=str(logs / f"worker-{worker_id}.log"),
            startup_timeout_s=startup_timeout_s,
            opt_out_notifications=CODEX_OPT_OUT,
        )

    return spec


def _checked_override(override: str) -> str:
    key, sep, _ = override.partition("=")
    if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
        raise ValueError(f"codex config override must look like key=value, got {override!r}")
    return override


_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class CodexRolloutSync:
    """Keeps a codex thread resumable on whichever worker it is pinned to.

    Each codex worker has its own CODEX_HOME, and `thread/resume` finds a thread only through the rollout file
    (`sessions/YYYY/MM/DD/rollout-<ts>-<thread id>.jsonl`) in its own home. Before the host resumes a thread on a
    worker, `prepare_resume` copies the newest copy of that thread's rollout (by size, then mtime) from any
    worker's home into the target home when the target has none or an older one: atomic (temp file, fsync,
    rename), never touching the source. The thread id must be a UUID before it is used in a path.
    """

    def __init__(self, root: StorageRoot) -> None:
        self._homes = root.system_dir / "codex-home"

    def prepare_resume(self, runtime_thread_id: str, worker_id: int) -> bool:
        if not _UUID_RE.match(runtime_thread_id):
            return False
        copies = sorted(
            self._homes.glob(f"worker-*/sessions/*/*/*/rollout-*-{runtime_thread_id}.jsonl"),
            key=lambda path: (path.stat().st_size, path.stat().st_mtime),
        )
        if not copies:
            return False
        target_home = self._homes / f"worker-{worker_id}"
        newest = copies[-1]
        if newest.is_relative_to(target_home):
            return False
        target = target_home / newest.relative_to(newest.parents[4])
        if target.exists() and target.stat().st_size >= newest.stat().st_size:
            return False
        private_mkdir(target.parent)
        atomic_write(target, newest.read_bytes())
        return True
