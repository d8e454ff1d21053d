"""Imports point down: codec -> sources -> client -> services -> cli.

The import graph is read with ``ast`` from src/pytaskstats (every import, lazy and
TYPE_CHECKING ones included: a dependency is a dependency), each module is placed
by :data:`pytaskstats.layers.MODULES`, and the test fails on an import that points
up a layer or closes a cycle between modules, naming the offending edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytaskstats.layers import LAYERS, layer_of

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "pytaskstats"

Edge = tuple[str, str]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package modules ``name`` imports (``from X import y``: X.y when it is a
    module, else X)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        yield from (t for t in targets if t.split(".")[0] == "pytaskstats" and t != name)


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports_of(name, path, known)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"place these in pytaskstats.layers.MODULES: {unplaced}"


def upward(edges: dict[str, set[str]]) -> list[str]:
    """The imports that point up a layer, as "importer (layer) -> target (layer)"."""
    out = []
    for importer, targets in sorted(edges.items()):
        mine = layer_of(importer)
        for target in sorted(targets):
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{importer} ({LAYERS[mine]}) -> {target} ({LAYERS[theirs]})")
    return out


def test_no_import_points_up_a_layer() -> None:
    found = upward(graph())
    assert not found, "imports pointing up a layer:\n" + "\n".join(found)


def test_the_upward_check_names_the_offending_edge() -> None:
    edges = {"pytaskstats.kernel": {"pytaskstats.daemon.protocol", "pytaskstats.netlink"},
             "pytaskstats.cli.get": {"pytaskstats.textfmt"}}
    assert upward(edges) == ["pytaskstats.kernel (sources) -> pytaskstats.daemon.protocol "
                             "(services)"]


def test_no_import_cycle() -> None:
    edges = graph()
    found = cycles(edges)
    report = ["cycle: " + ", ".join(c) + "\n  edges: " + ", ".join(
        f"{a} -> {b}" for a in c for b in sorted(edges[a]) if b in c) for c in found]
    assert not found, "\n".join(report)


@pytest.mark.parametrize(("edges", "expected"), [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]],
                                       expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_graph_sees_relative_lazy_and_upward_imports() -> None:
    """The reader finds what the checks rely on (a guard against a blind graph)."""
    g = graph()
    assert "pytaskstats.netlink" in g["pytaskstats.genetlink"]  # from . import netlink
    assert "pytaskstats.client" in g["pytaskstats"]  # lazy, inside __getattr__
    assert "pytaskstats.textfmt" in g["pytaskstats.cli.get"]  # from ..textfmt import
