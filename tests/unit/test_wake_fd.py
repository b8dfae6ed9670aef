"""The protocol thread's wake-up descriptor, and the one import the node package must not do."""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from ringwork.node.wake import Wake


def readable(wake: Wake) -> bool:
    return bool(select.select([wake.fileno()], [], [], 0)[0])


@pytest.fixture(params=["eventfd", "pipe"])
def wake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Wake:
    if request.param == "pipe":
        monkeypatch.delattr(os, "eventfd", raising=False)
    elif not hasattr(os, "eventfd"):
        pytest.skip("no eventfd on this OS")
    return Wake()


def test_set_makes_it_readable_until_cleared(wake: Wake) -> None:
    try:
        assert not readable(wake)
        for _ in range(3):
            wake.set()
        assert readable(wake)
        wake.clear()
        assert not readable(wake)
        wake.clear()  # nothing pending: still fine
        wake.set()
        assert readable(wake)
    finally:
        wake.close()


def test_set_after_close_writes_nothing(wake: Wake) -> None:
    """A referee call may finish after the node stopped; its fd number may be reused by then."""
    fd = wake.fileno()
    wake.close()
    r, w = os.pipe()  # likely to get the closed number back
    try:
        wake.set()
        wake.clear()
        wake.close()
        if fd in (r, w):
            assert not select.select([r], [], [], 0)[0]
    finally:
        os.close(r)
        os.close(w)


def test_a_full_pipe_is_still_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signals never block the thread that sends them, however many the loop has not read."""
    monkeypatch.delattr(os, "eventfd", raising=False)
    wake = Wake()
    try:
        for _ in range(100_000):  # far more than a pipe buffer holds
            wake.set()
        assert readable(wake)
        wake.clear()
        assert not readable(wake)
    finally:
        wake.close()


def test_importing_the_node_package_leaves_the_child_module_unimported() -> None:
    """A spawned node process runs ``python -m ringwork.node.child``; had the package imported
    that module first, runpy would run a second copy of it (and warn)."""
    code = "import sys, ringwork.node; sys.exit('ringwork.node.child' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
