"""A node that cannot talk to its peers says so: an error in its log, ``not joined`` in status.

Real worker processes: a leader and a member with the cluster's CURVE key, one with another
key and one with none. The outsiders must log ``event=join_failed`` with the reason they can see
within a few session timeouts, and ``status`` must tell them apart from healthy followers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringwork.console import status_view
from ringwork.node.joinwatch import ALARM_AFTER
from tests.acceptance.cluster import Cluster, Proc
from tests.acceptance.test_cli import ringwork
from tests.support import wait_for

SESSION = 2.0
#: The error is due ALARM_AFTER session timeouts after the node started trying; the slack
#: covers process start-up (imports, migrations) on a loaded machine.
BOUND = ALARM_AFTER * SESSION + 15.0


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, cluster_name, tmp_path, session_timeout=SESSION)
    yield c
    c.close()


def keyfile(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    assert ringwork("keys", "-o", str(path)).returncode == 0
    return str(path)


def join_errors(proc: Proc) -> list[str]:
    return [line for line in proc.log.read_text().splitlines() if "event=join_failed" in line]


def role_of(cluster: Cluster, proc: Proc) -> str | None:
    node = cluster.node_of(proc)
    return None if node is None else str(node["role"])


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_node_with_a_wrong_or_no_key_says_it_cannot_join(
    cluster: Cluster, tmp_path: Path
) -> None:
    good, other = keyfile(tmp_path, "cluster.key"), keyfile(tmp_path, "other.key")
    [leader] = cluster.start(1, "--curve-key-file", good)
    cluster.wait_balanced([leader], timeout=60)
    [member] = cluster.start(1, "--curve-key-file", good)
    started = time.monotonic()
    [wrong] = cluster.start(1, "--curve-key-file", other)
    [keyless] = cluster.start(1)
    leader_endpoint = cluster.node_of(leader)["endpoint"]  # type: ignore[index]

    for proc, cause in [(wrong, "CURVE handshake failed"), (keyless, "security mismatch")]:
        lines = wait_for(lambda p=proc: join_errors(p), BOUND - (time.monotonic() - started),
                         0.1, f"join_failed in {proc.log.name}")
        assert " ERROR " in lines[0], lines[0]
        assert cause in lines[0] and leader_endpoint in lines[0], lines[0]
    print(f"join_failed logged {time.monotonic() - started:.1f}s after the outsiders started")

    doc = cluster.wait_balanced([leader, member], timeout=30, extra_live=[wrong, keyless])
    roles = {name: role_of(cluster, p) for name, p in
             [("leader", leader), ("member", member), ("wrong", wrong), ("keyless", keyless)]}
    assert roles == {"leader": "leader", "member": "follower", "wrong": "not joined",
                     "keyless": "not joined"}, (roles, doc)
    status_view(cluster.status())  # the table renders the new role
    # The error repeats while it lasts (ALARM_EVERY session timeouts), it is not a one-off.
    wait_for(lambda: len(join_errors(wrong)) >= 2, 40, 0.2, "a repeated join_failed")
    assert join_errors(leader) == [] and join_errors(member) == []
    assert all(p.popen.poll() is None for p in cluster.procs)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_answer_from_the_leader(cluster: Cluster) -> None:
    """A leader that is alive in the registry but whose ROUTER never answers (stopped with
    SIGSTOP): a newcomer says it gets no answer from that endpoint."""
    import signal

    [leader] = cluster.start(1)
    doc = cluster.wait_balanced([leader], timeout=60)
    endpoint = doc["nodes"][0]["endpoint"]
    _freeze_outside_a_write(cluster, leader)
    try:
        # Keep the stopped leader's registry row fresh, so the newcomer keeps trying to join it.
        node_id = doc["nodes"][0]["id"]
        [newcomer] = cluster.start(1)
        deadline = time.monotonic() + BOUND
        while not join_errors(newcomer) and time.monotonic() < deadline:
            cluster.app.store.touch_node(node_id)
            time.sleep(0.2)
        lines = join_errors(newcomer)
        assert lines, cluster.logs()
        assert re.search(rf"no answer from the leader at {re.escape(endpoint)}", lines[0]), lines
    finally:
        cluster.signal(leader, signal.SIGCONT)


def _freeze_outside_a_write(cluster: Cluster, proc: Proc, tries: int = 10) -> None:
    """SIGSTOP ``proc`` at a moment it holds no SQLite write transaction: frozen inside one (a
    registry touch, the leader's sweep) it would lock every writer out, the newcomer's
    registration and this test's touches included, and the story could not be told."""
    import signal
    import sqlite3

    path = cluster.db_url.removeprefix("sqlite:///")

    def write_lock_free(within: float) -> bool:
        conn = sqlite3.connect(path, timeout=within)  # BEGIN IMMEDIATE waits up to ``within``
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.rollback()
            return True
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            return False
        finally:
            conn.close()

    for _ in range(tries):
        cluster.signal(proc, signal.SIGSTOP)
        if write_lock_free(1.0):
            return
        cluster.signal(proc, signal.SIGCONT)  # frozen mid-write: let it finish, then again
        assert write_lock_free(10.0), "the leader kept the write lock while running"
    raise AssertionError(f"could not freeze the leader outside a write in {tries} tries")

