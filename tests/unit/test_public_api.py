"""The curated public surface of ``import ringwork`` (as trio checks its exports).

Adding a name here is a decision about the public API, not a side effect of an import.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import ringwork
from ringwork import errors

PACKAGE = Path(ringwork.__file__).parent
ROOT = PACKAGE.parent

PUBLIC = {
    "App", "Task", "Job", "JobRecord", "JobState", "NewJob", "Retry", "Settings",
    "partition_for",
    "__version__",
    "RingworkError", "ConfigurationError", "UnknownTaskError", "PayloadError",
    "DatabaseError", "DatabaseUnavailable", "DatabaseURLError", "SchemaError",
    "PartitionCountMismatch", "JobNotFound", "InvalidJobState",
    "AttemptRecord", "ResultError", "WaitTimeout", "StoredPayloadError", "TaskHandle",
}


def test_the_export_list_is_exactly_the_public_names() -> None:
    assert set(ringwork.__all__) == PUBLIC
    assert len(ringwork.__all__) == len(PUBLIC)  # no name listed twice


def test_every_export_is_importable_from_the_top() -> None:
    namespace: dict[str, object] = {}
    exec("from ringwork import *", namespace)
    module = importlib.import_module("ringwork")
    for name in PUBLIC:
        assert getattr(module, name) is namespace[name], name


def test_exported_errors_are_the_error_tree() -> None:
    for name in PUBLIC:
        value = getattr(ringwork, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert value is getattr(errors, name)
            assert issubclass(value, ringwork.RingworkError)


def test_version_is_the_projects() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert match and ringwork.__version__ == match.group(1)


def test_the_package_never_imports_the_repositorys_example_app() -> None:
    """``workers/`` is the example to copy and is not installed: the package must not need it."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n == "workers" or n.startswith("workers.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
        if re.search(r"[\"']workers\.\w+:\w+[\"']", path.read_text()):
            offenders.append(f"{path.relative_to(ROOT)} (spawns a workers.* app)")
    assert not offenders, offenders
