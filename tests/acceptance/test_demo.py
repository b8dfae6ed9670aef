"""``ringwork demo`` is the README's first command: it must run clean on a fresh machine."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_clean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run([sys.executable, "-m", "ringwork.cli", "demo", "--jobs", "1500"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clean: every job succeeded, none lost" in result.stdout
    assert "killed worker" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not list(tmp_path.iterdir())  # nothing left behind in the working directory
