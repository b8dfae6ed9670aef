"""The node process from the worker's side: how it starts, what crosses the pipe.

The fork path (a worker that runs one thread, as `ringwork worker` does) is covered with real
processes in tests/acceptance/test_node_fate.py; a test process has threads of its own."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest

from ringwork import App, Job
from ringwork.errors import DatabaseUnavailable, RingworkError
from ringwork.node.child import _stopped
from ringwork.node.process import NodeProcess, _error
from ringwork.node.spawn import _Spawned
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


# A worker (one thread, so its node process is forked) that forks a child of its own, as a
# handler's multiprocessing pool does: that child holds the worker's end of the pipe.
_FORKING_WORKER = """
import os, sys, time
from ringwork import App
from ringwork.worker import cluster_node
app = App(database_url=sys.argv[1], partitions=8, cluster=sys.argv[2])
node = cluster_node(app)
node.start(lambda kind, parts: None, None)
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
print(type(node._child).__name__, node._child.pid, pid, flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_node_process_exits_when_its_worker_dies_though_a_fork_holds_the_pipe(
    db_url: str, cluster_name: str
) -> None:
    """The pipe never closes while the worker's own child holds its end: the node process
    must notice that it was reparented, or a dead worker's partitions stay held for good."""
    import os
    import signal
    import subprocess
    import sys

    worker = subprocess.Popen([sys.executable, "-c", _FORKING_WORKER, db_url, cluster_name],
                              stdout=subprocess.PIPE)
    pids: list[int] = []
    try:
        assert worker.stdout is not None
        method, node_pid, forked_pid = worker.stdout.readline().split()
        pids = [int(node_pid), int(forked_pid)]
        assert method == b"_Forked"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)

        def gone(pid: int) -> bool:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
            except FileNotFoundError:
                return True

        wait_for(lambda: gone(pids[0]), 15, 0.05, "node process exited after its worker")
    finally:
        worker.kill()
        worker.wait(5)
        if worker.stdout is not None:
            worker.stdout.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_deeply_nested_payload_crosses_from_the_node_process(app: App) -> None:
    """The claim decodes payloads in the node process; one the JSON decoder takes must also
    cross the pipe (the pickler needs about twice the frames), or the worker waits forever."""
    import json

    depth = 950
    got: list[int] = []

    @app.task("deep")
    def deep(job: Job) -> None:
        n, value = 0, job.payload
        while isinstance(value, list) and value:
            n, value = n + 1, value[0]
        got.append(n)

    payload = json.loads("[" * depth + "]" * depth)
    app.enqueue("deep", "k", payload)
    with running_worker(app):
        wait_for(lambda: got, 30, message="the deep job ran")
    assert got == [depth - 1]


def test_a_snapshot_taken_before_a_revocation_is_never_sent_after_it() -> None:
    """The child's main thread pushes snapshots while the node thread pushes events with
    theirs; the parent keeps the last one it receives, so they must arrive in the order they
    were taken, or a revoked partition becomes claimable again after the worker confirmed it."""
    from multiprocessing import Pipe

    from ringwork.node.child import _Child

    revoked = threading.Event()
    held = {0: 1, 1: 1}

    class Node:
        def __init__(self) -> None:
            self.calls = 0

        def claimable_snapshot(self) -> tuple[dict[int, int], float]:
            self.calls += 1
            taken = dict(held)
            if self.calls == 1:  # the main thread's: the node thread revokes meanwhile
                revoker.start()
                revoked.wait(0.5)
            return taken, 100.0

    def revoke() -> None:
        held.pop(1)
        child._on_partitions("revoked", frozenset({1}))
        revoked.set()

    ours, theirs = Pipe()
    child = object.__new__(_Child)
    child.node = Node()  # type: ignore[assignment]
    child.conn, child.orphaned, child.revoking = theirs, False, set()
    child._lock = threading.RLock()  # as _Child.__init__ makes it
    child._last_snapshot = None
    revoker = threading.Thread(target=revoke)
    child._push_snapshot()
    revoker.join(5)
    last = None
    while ours.poll(0.2):
        message = ours.recv()
        last = message[1] if message[0] == "claimable" else message[3]
    assert last == {0: 1}, "a stale snapshot arrived after the revocation"


def test_a_failure_while_applying_a_message_answers_every_caller(app: App) -> None:
    """If the reader thread cannot apply a message (here the listener raises), the node is as
    good as gone: failure() says so and a job write fails at once instead of waiting forever."""
    from ringwork.worker import cluster_node

    node = cluster_node(app)
    assert isinstance(node, NodeProcess)

    def listener(kind: str, partitions: frozenset[int]) -> None:
        if kind == "assigned":
            raise RuntimeError("listener bug")

    try:
        node.start(listener, None)
        wait_for(lambda: node.failure() is not None, 30, message="the reader's failure")
        assert "listener bug" in (node.failure() or "")
        assert node.claimable() == {}
        with pytest.raises(DatabaseUnavailable):
            node.call("release_unknown", node.node_id, [])
    finally:
        node.stop()
    assert node._child is not None and node._child.wait(1) is not None  # stop still reached it
