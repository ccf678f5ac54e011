"""Runtime adapters: command lines, the codex binary checks, per-worker CODEX_HOME."""

from __future__ import annotations

import os
import stat

import pytest

from agenthost import HostConfig
from agenthost.actors._runtimes import CodexBinaryError, check_codex_binary, codex_spec_factory, find_native_codex
from agenthost.storage import StorageRoot


def _executable(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_node_launcher_is_refused_with_the_reason(tmp_path) -> None:
    launcher = _executable(tmp_path / "codex.js", b"#!/usr/bin/env node\nrequire('x')\n")
    with pytest.raises(CodexBinaryError, match="node launcher"):
        check_codex_binary(str(launcher))


def test_missing_and_non_executable_binaries_are_named(tmp_path) -> None:
    with pytest.raises(CodexBinaryError, match="does not exist"):
        check_codex_binary(str(tmp_path / "nope"))
    plain = tmp_path / "plain"
    plain.write_bytes(b"\x7fELF")
    with pytest.raises(CodexBinaryError, match="not executable"):
        check_codex_binary(str(plain))


def test_native_binary_is_found_in_an_npm_folder_and_specs_use_it(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("RUST_LOG", raising=False)
    native = _executable(tmp_path / "npm/node_modules/@openai/codex-linux-x64/vendor/x86_64/bin/codex", b"\x7fELF")
    assert find_native_codex(tmp_path / "npm") == native
    assert find_native_codex(tmp_path / "empty") is None
    root = StorageRoot(tmp_path / "root")
    root.ensure()
    factory = codex_spec_factory(root, codex_bin=str(native), config_overrides=('model="m"',), startup_timeout_s=7)
    one, two = factory(1, 1), factory(2, 5)
    assert one.argv == (str(native), "app-server", "-c", 'model="m"')
    assert one.env == {"CODEX_HOME": str(root.system_dir / "codex-home" / "worker-1"), "RUST_LOG": "warn"}
    monkeypatch.setenv("RUST_LOG", "debug")  # the operator's choice wins: it reaches codex through the environment
    assert (
        "RUST_LOG"
        not in codex_spec_factory(root, codex_bin=str(native), config_overrides=(), startup_timeout_s=7)(1, 1).env
    )
    assert two.env["CODEX_HOME"].endswith("worker-2") and os.path.isdir(two.env["CODEX_HOME"])
    assert "account/rateLimits/updated" in one.opt_out_notifications and one.startup_timeout_s == 7


def test_bad_override_and_missing_binary_config_are_refused(tmp_path) -> None:
    native = _executable(tmp_path / "codex", b"\x7fELF")
    with pytest.raises(ValueError, match="'no-equals'"):
        codex_spec_factory(
            StorageRoot(tmp_path / "r"), codex_bin=str(native), config_overrides=("no-equals",), startup_timeout_s=1
        )
    with pytest.raises(ValueError, match="codex_bin is required"):
        HostConfig(storage_root=str(tmp_path), runtime="codex")


def test_rollout_sync_copies_the_newest_rollout_into_the_target_home_only(tmp_path) -> None:
    from agenthost.actors._runtimes import CodexRolloutSync

    root = StorageRoot(tmp_path / "root")
    thread = "01a211f9-ffa7-7f21-90ba-733f150c6a8c"
    day = "sessions/2026/11/25"
    source = root.system_dir / "codex-home/worker-1" / day / f"rollout-2026-11-25T09-12-06-{thread}.jsonl"
    source.parent.mkdir(parents=True)
    source.write_text('{"turn": 1}\n{"turn": 2}\n')
    sync = CodexRolloutSync(root)
    assert sync.prepare_resume(thread, 2) is True
    copied = root.system_dir / "codex-home/worker-2" / day / source.name
    assert copied.read_text() == source.read_text()
    assert sync.prepare_resume(thread, 2) is False  # already as new
    assert sync.prepare_resume(thread, 1) is False  # the newest copy is already there
    assert sync.prepare_resume("../../etc/passwd", 2) is False  # never globbed with a non-UUID id
    assert sync.prepare_resume("01a211f9-ffa7-7f21-90ba-000000000000", 2) is False  # nothing to copy
