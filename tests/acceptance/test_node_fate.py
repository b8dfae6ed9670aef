"""The node process follows its worker's fate, and the worker follows its node's.

Signals here go to one PID, not the process group: the worker alone, or its node process alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.cluster import Cluster, Proc
from tests.support import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, cluster_name, tmp_path)
    yield c
    for pid in c.node_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    c.close()


def node_pid(cluster: Cluster, proc: Proc) -> int:
    found = wait_for(lambda: re.search(r"event=node_process_started .*pid=(\d+) method=(\w+)",
                                       proc.log.read_text()), 30, 0.05, "node process pid")
    assert found.group(2) == "fork"  # `ringwork worker` runs one thread when it starts it
    pid = int(found.group(1))
    cluster.node_pids.append(pid)
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's reaper) counts as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


Cluster.node_pids = []  # type: ignore[attr-defined]


def test_worker_killed_alone_its_node_hands_over_at_once(cluster: Cluster) -> None:
    cluster.node_pids = []  # type: ignore[attr-defined]
    procs = cluster.start(3)
    cluster.wait_balanced(procs)
    ids = cluster.enqueue(600, keys=100, ms=5)
    target = procs[-1]
    child = node_pid(cluster, target)
    os.kill(target.pid, signal.SIGKILL)  # the worker only: its node process sees the pipe close
    killed = time.monotonic()
    target.popen.wait(10)
    cluster.wait_balanced(procs[:-1], timeout=30)
    handover = time.monotonic() - killed
    wait_for(lambda: not alive(child), 15, 0.05, "node process exited after its worker")
    cluster.wait_done(ids)
    print(f"worker kill -9 alone: survivors balanced after {handover:.2f} s")
    # Far sooner than the session timeout: the node gave its partitions back instead of
    # falling silent (a timeout-driven takeover takes session_timeout plus a rebalance).
    assert handover < cluster.session_timeout, cluster.logs()
    assert "event=worker_process_gone" in target.log.read_text()


def test_node_process_killed_the_worker_exits_non_zero(cluster: Cluster) -> None:
    cluster.node_pids = []  # type: ignore[attr-defined]
    procs = cluster.start(2)
    cluster.wait_balanced(procs)
    target = procs[-1]
    os.kill(node_pid(cluster, target), signal.SIGKILL)
    code = target.popen.wait(30)
    log = target.log.read_text()
    assert code == 70, log
    assert "event=node_failed" in log
    assert "Traceback" not in log
    cluster.wait_balanced(procs[:-1], timeout=30)


def test_worker_stopped_alone_is_a_paused_member(cluster: Cluster) -> None:
    """SIGSTOP to the worker: its node freezes too, so the survivors take its partitions and a
    resumed worker rejoins, as when the node was a thread of the worker."""
    cluster.node_pids = []  # type: ignore[attr-defined]
    procs = cluster.start(3)
    cluster.wait_balanced(procs)
    ids = cluster.enqueue(600, keys=100, ms=5)
    target = procs[-1]
    node_pid(cluster, target)
    os.kill(target.pid, signal.SIGSTOP)
    try:
        cluster.wait_balanced(procs[:-1], timeout=30)
    finally:
        os.kill(target.pid, signal.SIGCONT)
    cluster.wait_balanced(procs, timeout=30)
    cluster.wait_done(ids)
    log = target.log.read_text()
    assert "event=node_frozen" in log and "event=node_thawed" in log
