"""Migrations work from a built wheel, not only from the checkout.

``migrations/`` sits at the top of the checkout and ships in the wheel as the package
``ringwork.migrations`` (pyproject's package-dir). This builds a wheel, unpacks it, and runs the
upgrade in a subprocess whose only copy of ringwork is the unpacked wheel (cwd elsewhere, so the
checkout is not importable).

The wheel is built from a copy of the working tree: building in place would leave ``build/``
behind, whose stale contents setuptools can carry into later wheels. Building offline
(``--no-build-isolation``) needs pyproject's build requirements in this interpreter
(``setuptools>=68`` and ``wheel``); when they are missing, pip fetches them into an isolated
build environment instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import pytest

from ringwork.store.migrate import head
from ringwork.store.schema import VERSION_TABLE
from ringwork.store.schema import metadata as schema_metadata

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: Not part of a build; everything else in the working tree is copied.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", ".hypothesis", ".mypy_cache", ".pytest_cache", ".ruff_cache", "build",
    "dist", "__pycache__", "*.pyc", "*.egg-info", "*.db", "*.db-*",
)

PROBE = """
import json, sys
import sqlalchemy as sa
import ringwork
import ringwork.store.migrate as m
revision = m.upgrade("sqlite:///x.db")
engine = sa.create_engine("sqlite:///x.db")
tables = sa.inspect(engine).get_table_names()
engine.dispose()
print(json.dumps({"ringwork": ringwork.__file__, "migrations": str(m.migrations_dir()),
                  "revision": revision, "tables": tables, "current": m.current("sqlite:///x.db")}))
"""


def _version(dist: str) -> tuple[int, ...] | None:
    try:
        text = importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def _offline_build_possible() -> bool:
    """pyproject's [build-system] requires: setuptools>=68 and wheel (built in from 70.1)."""
    setuptools = _version("setuptools")
    if setuptools is None or setuptools < (68,):
        return False
    return setuptools >= (70, 1) or _version("wheel") is not None


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    out = tmp_path / "wheelhouse"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
               "-w", str(out), str(source)]
    offline = _offline_build_possible()
    if offline:
        command.insert(4, "--no-build-isolation")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        fetching = not offline and "build dependencies" in output
        if fetching and os.environ.get("CI", "").strip().lower() != "true":
            pytest.skip("cannot fetch the build requirements (setuptools>=68, wheel) and they "
                        f"are not installed here:\n{output[-2000:]}")
        raise AssertionError(f"wheel build failed ({'offline' if offline else 'isolated'}):\n"
                             f"{output[-4000:]}")
    wheels = list(out.glob("ringwork-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_migrations_run_from_the_built_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        site = tmp_path / "site"
        zf.extractall(site)
    assert "ringwork/migrations/env.py" in names
    assert "ringwork/migrations/script.py.mako" in names
    shipped = {n.rsplit("/", 1)[1] for n in names
               if re.fullmatch(r"ringwork/migrations/versions/\d{4}_\w+\.py", n)}
    assert any(n.startswith("0001_") for n in shipped), sorted(names)
    # Every revision in the checkout ships (a forgotten one would leave installs behind head).
    in_checkout = {p.name for p in (ROOT / "migrations" / "versions").glob("[0-9]*_*.py")}
    assert in_checkout <= shipped, in_checkout - shipped

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGWORK_")}
    env["PYTHONPATH"] = str(site)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    # The code and the migrations came from the unpacked wheel, not from the checkout.
    assert Path(result["ringwork"]).resolve().is_relative_to(site.resolve()), result
    assert Path(result["migrations"]).resolve() == (site / "ringwork" / "migrations").resolve()
    assert result["revision"] == head() == result["current"]
    expected = set(schema_metadata.tables) | {VERSION_TABLE}
    assert expected <= set(result["tables"]), result["tables"]
    assert (elsewhere / "x.db").exists()


def test_the_wheel_ships_only_ringwork_and_its_demo_runs_from_it(tmp_path: Path) -> None:
    """Issue 10, bug 4: the wheel installed a top-level ``workers`` package (the repository's
    example app, which the demo imported), colliding with a user's own ``workers/``. Only
    ``ringwork`` is installed now, and ``ringwork demo`` runs from the installed wheel alone."""
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        site = tmp_path / "site"
        zf.extractall(site)
    top_level = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(
        (".dist-info", ".data"))}
    assert top_level == {"ringwork"}, sorted(top_level)
    assert "ringwork/cli/__main__.py" in names  # `python -m ringwork.cli`, as the demo spawns

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A user's own top-level `workers` package (with an `example` module of its own, first on
    # the path): the installed ringwork must neither shadow it nor need the repository's.
    user = tmp_path / "user"
    (user / "workers").mkdir(parents=True)
    (user / "workers" / "__init__.py").write_text("")
    (user / "workers" / "example.py").write_text("raise ImportError('the user\\'s own module')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGWORK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(user), str(site)])
    done = subprocess.run(
        [sys.executable, "-m", "ringwork.cli", "demo", "--jobs", "200", "--processes", "2"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean: every job succeeded, none lost" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert not list(elsewhere.iterdir())  # nothing left behind in the working directory
