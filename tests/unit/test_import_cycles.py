"""No import cycle anywhere in the package: each module can be read, and changed, on its own.

Every ``import`` counts -- inside functions and under ``TYPE_CHECKING`` too: a cycle hidden from
the interpreter by a late import is still two modules that cannot be understood apart. The graph
is built from the source, so it follows whatever layout the package has today.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ringwork

PACKAGE = Path(ringwork.__file__).parent


def module_names(package: Path) -> dict[str, Path]:
    """Every module under ``package`` by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, or the nearest enclosing module we have."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports, wherever in its source the import is."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from a.b import c`` imports module a.b.c when there is one, else a.b itself.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target == "ringwork" or target.startswith("ringwork."):
                known = _known(target, modules)
                if known is not None and known != module:
                    found.add(known)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(package)
    return {name: imports_of(name, path, modules) for name, path in sorted(modules.items())}


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], set[str]]]:
    """Each strongly connected component of more than one module, with one cycle through it
    (``[a, b, ..., a]``) to show how it closes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm; the package is small enough to recurse
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [(_cycle_in(graph, component), component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first back to it)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"not a cycle: {sorted(component)}")


def test_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(
        f"{' -> '.join(cycle)}  (all of: {', '.join(sorted(component))})"
        for cycle, component in cycles
    )


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A cycle through a function-level import, ``TYPE_CHECKING``, ``from pkg import module``
    and a relative import is found; a plain name imported from a module is not a module."""
    pkg = tmp_path / "ringwork"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from ringwork.sub import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\n"
    )
    (pkg / "sub" / "c.py").write_text("import ringwork.a\nfrom ringwork.sub.b import NAME\n")
    graph = import_graph(pkg)
    assert graph["ringwork.a"] == {"ringwork.sub.b"}
    assert graph["ringwork.sub.b"] == {"ringwork.sub.c"}
    assert graph["ringwork.sub.c"] == {"ringwork.a", "ringwork.sub.b"}
    cycles = find_cycles(graph)
    assert len(cycles) == 1
    cycle, component = cycles[0]
    assert cycle == ["ringwork.a", "ringwork.sub.b", "ringwork.sub.c", "ringwork.a"]
    assert component == {"ringwork.a", "ringwork.sub.b", "ringwork.sub.c"}
