"""docs/runtime-contract.md stays true: every test it cites exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _test_names(path: Path) -> set[str]:
    """Test functions, and tests bound to a name (e.g. `test_x = Machine.TestCase` of hypothesis.stateful)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return {name for name in functions | assigned if name.startswith("test_")}


def test_every_cited_test_exists() -> None:
    contract = (ROOT / "docs" / "runtime-contract.md").read_text(encoding="utf-8")
    citations = re.findall(r"`(test_\w+\.py)::(test_\w+)`", contract)
    assert len(citations) >= 30
    missing = [f"{file}::{name}" for file, name in citations if name not in _test_names(ROOT / "tests" / file)]
    assert missing == []


def test_every_invariant_row_cites_a_proof() -> None:
    rows = [
        line
        for line in (ROOT / "docs" / "runtime-contract.md").read_text().splitlines()
        if re.match(r"\| [A-Z]\d+ \|", line)
    ]
    assert rows
    assert [row.split("|")[1].strip() for row in rows if "test_" not in row and "by construction" not in row] == []


def test_every_invariant_row_has_its_own_id() -> None:
    contract = (ROOT / "docs" / "runtime-contract.md").read_text(encoding="utf-8")
    ids = re.findall(r"^\| ([A-Z]\d+) \|", contract, flags=re.MULTILINE)
    assert len(ids) > 100
    assert sorted({i for i in ids if ids.count(i) > 1}) == []
