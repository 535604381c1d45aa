"""The package's import graph, read with ``ast``: no cycles, no private names across modules.

Every import counts: module level, inside functions, and under ``TYPE_CHECKING``. A
submodule's import of its own package's ``__init__`` (a facade) does not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "uvq_int8"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for one import statement."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package.pop()
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    out = []
    for alias in node.names:
        full = f"{base}.{alias.name}"
        out.append((full, None) if full in MODULES else (base, alias.name))
    return out


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target, _ in _targets(module, node):
                    found = _known(target)
                    if found and found != module and not module.startswith(found + "."):
                        graph[module].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def private_uses() -> list[str]:
    """``from m import _x`` and ``m._x`` where ``m`` is another module of the package."""
    uses = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in MODULES:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                for (target, name), alias in zip(_targets(module, node), node.names):
                    if name is None:
                        aliases[alias.asname or alias.name] = target
                    elif (name.startswith("_") and not name.startswith("__")
                          and _known(target) not in (None, module)):
                        uses.append(f"{module}: from {target} import {name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != module
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                uses.append(f"{module}: {aliases[node.value.id]}.{node.attr}")
    return uses


def test_the_graph_reader_sees_a_cycle_and_a_private_name():
    # The checks below can fail: a made-up graph with a cycle is found, and the package
    # has the imports the reader must see (function-level ones included).
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph = import_graph()
    assert "uvq_int8.runtime" in graph["uvq_int8.cli.score_cmd"]
    assert "uvq_int8.cli.batch_cmd" in graph["uvq_int8.cli.main"]  # inside a function
    assert len(MODULES) > 60


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_no_private_name_crosses_a_module_boundary():
    assert private_uses() == []
