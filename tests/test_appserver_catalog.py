"""The app-server catalog is codex 0.169.0's own method lists, every method has a fate, and docs/app-server.md is
what the catalog renders."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from codexkit import codex_binary

from agenthost._appserver_catalog import (
    CODEX_NOTIFICATIONS,
    CODEX_REQUESTS,
    CODEX_SERVER_REQUESTS,
    HANDLED,
    PASSED,
    refusal,
    render_markdown,
)

ROOT = Path(__file__).resolve().parent.parent


def _methods(schema: Path, union: str) -> list[str]:
    document = json.loads((schema / f"{union}.json").read_text())
    found: list[str] = []
    for variant in document.get("oneOf", document.get("anyOf", [])):
        method = variant.get("properties", {}).get("method", {})
        found += method.get("enum") or ([method["const"]] if "const" in method else [])
    return found


@pytest.mark.timeout(60)
@pytest.mark.skipif(codex_binary() is None, reason="codex 0.169.0 not installed (npm registry unreachable?)")
def test_the_lists_are_codexs_own(tmp_path: Path) -> None:
    subprocess.run(
        [str(codex_binary()), "app-server", "generate-json-schema", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=50,
    )
    assert list(CODEX_REQUESTS) == _methods(tmp_path, "ClientRequest")
    assert list(CODEX_NOTIFICATIONS) == _methods(tmp_path, "ServerNotification")
    assert list(CODEX_SERVER_REQUESTS) == _methods(tmp_path, "ServerRequest")


def test_every_codex_request_is_handled_passed_or_refused_with_a_reason() -> None:
    for method in CODEX_REQUESTS:
        fates = [method in HANDLED, method in PASSED, refusal(method) is not None]
        assert fates.count(True) == 1, method
    assert refusal("no/such/method") is None  # codex does not know it either: "unknown variant"
    assert set(HANDLED) <= set(CODEX_REQUESTS)


def test_the_docs_page_is_what_the_catalog_says() -> None:
    assert (ROOT / "docs" / "app-server.md").read_text() == render_markdown()
