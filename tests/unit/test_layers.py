"""Layers point one way: nothing below imports anything above (STYLE.md, habit 1)."""

import ast
from pathlib import Path

import ringwork

PACKAGE = Path(ringwork.__file__).parent

# Lower number = lower layer. A module may import only modules of its own layer or below.
LAYERS = {
    "ringwork.partitioner": 0, "ringwork.errors": 0, "ringwork.job": 0, "ringwork.log": 0,
    "ringwork.settings": 0, "ringwork.addresses": 0, "ringwork.periodic": 0,
    "ringwork.tasks": 0, "ringwork.retry": 0, "ringwork.tracing": 0,
    "ringwork.protocol": 1, "ringwork.store": 1,
    "ringwork.wakeup": 2, "ringwork.app": 3, "ringwork.client": 3, "ringwork.client_async": 3,
    "ringwork.coordinator": 4, "ringwork.node": 4,
    "ringwork.worker": 5, "ringwork.metrics": 5, "ringwork.console": 5, "ringwork.status": 5,
    "ringwork.inline": 5,
    "ringwork.demo": 6, "ringwork.demo_app": 6, "ringwork.dashboard": 6, "ringwork.cli": 7,
}


#: The only imports allowed to point up, each lazy (inside a function) and for a reason:
#: ``App.testing()`` is the user's door to the inline runner, which runs jobs as a worker does.
#: ``App.dashboard()`` is the user's door to the web dashboard (which imports Starlette lazily).
UPWARD_DOORS = {("ringwork.app", "ringwork.inline"), ("ringwork.app", "ringwork.dashboard")}


def layer_of(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best[0])
        ):
            best = (prefix, layer)
    return None if best is None else best[1]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("ringwork")}


def test_layers_point_down() -> None:
    problems = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        mine = layer_of(module)
        if mine is None or module == "ringwork":
            continue
        for imported in imports_of(path):
            theirs = layer_of(imported)
            if (module, imported) in UPWARD_DOORS:
                continue
            if theirs is not None and theirs > mine:
                problems.append(f"{module} (layer {mine}) imports {imported} (layer {theirs})")
    assert not problems, "\n".join(problems)


def test_protocol_core_does_no_io() -> None:
    """The sans-IO core imports no sockets, clocks or database drivers."""
    forbidden = {"zmq", "socket", "time", "sqlalchemy", "psycopg", "threading", "asyncio"}
    for path in (PACKAGE / "protocol").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not (set(names) & forbidden), f"{path.name} imports {names}"


def test_only_modules_under_node_import_zmq() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "node":
            continue
        assert "import zmq" not in path.read_text(), path


def test_public_exports() -> None:
    assert set(ringwork.__all__) >= {"App", "Job", "RingworkError", "JobState"}
    for name in ringwork.__all__:
        assert hasattr(ringwork, name)


def test_the_installed_package_never_imports_the_tests() -> None:
    """The simulator lives in tests/sim (our tool, not the user's namespace): ringwork runs
    without the repository's tests."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "tests" or n.startswith("tests.") for n in names), path


def test_test_modules_have_unique_names() -> None:
    """pytest imports test files by basename (rootdir mode): two of one name in different
    folders stop the whole collection, which a targeted run never shows."""
    names = [p.name for p in Path(__file__).parents[1].rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
