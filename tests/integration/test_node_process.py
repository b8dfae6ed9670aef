"""The node process from the worker's side: how it starts, what crosses the pipe.

The fork path (a worker that runs one thread, as `ringwork worker` does) is covered with real
processes in tests/acceptance/test_node_fate.py; a test process has threads of its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ringwork import App, Job
from ringwork.errors import DatabaseUnavailable, RingworkError
from ringwork.node_process import NodeProcess, _error, _Spawned, _stopped
from tests.support import running_worker, wait_for


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=8, cluster=cluster_name)
    app.configure(concurrency=4)
    yield app
    app.close()


def run_jobs(app: App) -> NodeProcess:
    ran: list[int] = []

    @app.task("t")
    def t(job: Job) -> None:
        ran.append(job.id)

    ids = app.enqueue_many([{"task": "t", "key": f"k{i}"} for i in range(20)])
    with running_worker(app) as worker:
        wait_for(lambda: sorted(ran) == sorted(ids), 30, message="jobs ran")
        node = worker.coordinator
        assert isinstance(node, NodeProcess)
        assert node.failure() is None
        # The view (metrics, status) comes over the pipe once a second.
        wait_for(lambda: node.view().get("role") == "leader", 5, message="the node's view")
    return node


def test_a_worker_in_a_threaded_program_spawns_its_node(app: App) -> None:
    """A fork would copy locks other threads hold: with a thread running, spawn instead."""
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        node = run_jobs(app)
    finally:
        release.set()
    assert isinstance(node._child, _Spawned)
    assert node._child.wait(10) == 0  # stopped cleanly through the pipe


def test_errors_cross_as_ringwork_classes_only() -> None:
    assert type(_error("DatabaseUnavailable", "down")) is DatabaseUnavailable
    assert type(_error("OSError", "x")) is RingworkError  # never a class outside the tree
    assert type(_error("__class__", "x")) is RingworkError


def test_stopped_reads_the_state_after_the_command_name() -> None:
    import os
    import signal
    import subprocess
    import sys

    # A command name with ") T" in it must not fool the parser (PR_SET_NAME is 15).
    code = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, b'x) T (y', 0, 0, 0); "
            "print('ready', flush=True); time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert not _stopped(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        wait_for(lambda: _stopped(child.pid), 5, message="stopped state")
        os.kill(child.pid, signal.SIGCONT)
        wait_for(lambda: not _stopped(child.pid), 5, message="running again")
    finally:
        child.kill()
        child.wait(5)
        if child.stdout is not None:
            child.stdout.close()
