"""The layering of the package: protocol -> storage -> actors -> application -> chaos, no upward import, no cycle.

Read from the source with `ast` (no import runs): every `import`/`from ... import` of an agenthost module, at any
depth of a module (inside functions too: a deferred import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# folder in the repository -> (installed package name, layer rank); rank 3 is the application layer itself
FOLDERS = {
    "protocol": ("agenthost.protocol", 0),
    "storage": ("agenthost.storage", 1),
    "actors": ("agenthost.actors", 2),
    "agenthost": ("agenthost", 3),
    "chaos": ("agenthost.chaos", 4),
}
LAYER_NAMES = {rank: package for package, rank in FOLDERS.values()}
TEST_TOOLS = ("agenthost.testing", "agenthost.chaos")


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for folder, (package, _) in FOLDERS.items():
        for path in sorted((REPO / folder).glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def _layer(module: str) -> int:
    for package, rank in sorted(FOLDERS.values(), key=lambda item: -len(item[0])):
        if module == package or module.startswith(package + "."):
            return rank
    raise AssertionError(f"{module} is in no layer")


def _imports(module: str, path: Path) -> set[str]:
    """Absolute names of the agenthost modules `module` imports."""
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "agenthost")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] == "agenthost":
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES)
    return {name for name in found if name != module}


MODULES = _modules()
GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_source_folder_is_mapped_and_parsed() -> None:
    assert {
        "agenthost",
        "agenthost.protocol._jsonrpc",
        "agenthost.storage._database",
        "agenthost.actors._pool",
        "agenthost.chaos._campaign",
    } <= set(MODULES)
    assert GRAPH["agenthost.actors._pool"] >= {"agenthost.actors._worker", "agenthost.protocol._messages"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    own = _layer(module)
    upward = sorted(name for name in GRAPH[module] if _layer(name) > own)
    assert not upward, f"{module} (layer {LAYER_NAMES[own]}) imports the higher layer(s) {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith(TEST_TOOLS)))
def test_production_never_imports_test_tools(module: str) -> None:
    tools = sorted(name for name in GRAPH[module] if name.startswith(TEST_TOOLS))
    assert not tools, f"{module} imports the test tools {tools}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (a list of nodes, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_subpackages() -> None:
    packages: dict[str, set[str]] = {}
    for module, names in GRAPH.items():
        own = LAYER_NAMES[_layer(module)]
        packages.setdefault(own, set()).update(LAYER_NAMES[_layer(n)] for n in names if _layer(n) != _layer(module))
    assert _cycle(packages) is None
