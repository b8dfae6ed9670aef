"""``ringwork run --metrics-port BASE``: worker N serves ``/metrics`` on BASE + N, each its own
node (real processes; SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from tests.acceptance.cluster import APP_SPEC, ROOT, Cluster
from tests.metrics_support import scrape, value
from tests.support import wait_for

pytestmark = pytest.mark.slow


def _free_pair() -> int:
    """A port P with P and P + 1 both free on loopback now."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        with contextlib.ExitStack() as stack:
            try:
                for port in (base, base + 1):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise AssertionError("no two consecutive free ports")


def _owned(port: int) -> float | None:
    try:
        got = scrape(port)
    except (urllib.error.URLError, ConnectionError, OSError):
        return None
    return value(got["ringwork_partitions_owned"], "ringwork_partitions_owned")


def test_each_child_serves_metrics_on_base_plus_its_index(
    db_url: str, cluster_name: str, tmp_path: Path
) -> None:
    cluster = Cluster(db_url, cluster_name, tmp_path)
    base = _free_pair()
    env = {**os.environ, "RINGWORK_DATABASE_URL": db_url, "RINGWORK_CLUSTER": cluster_name,
           "RINGWORK_LOG_LEVEL": "WARNING"}
    log = tmp_path / "run.log"
    try:
        with open(log, "wb") as out:
            run = subprocess.Popen(
                [sys.executable, "-m", "ringwork.cli", "run", APP_SPEC, "--processes", "2",
                 "--metrics-port", str(base)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Both serve, and between them own every partition once (64 in the test app).
            wait_for(lambda: (_owned(base) or 0) + (_owned(base + 1) or 0) == 64
                     and _owned(base) and _owned(base + 1), 60, 0.2,
                     f"metrics on {base} and {base + 1}")
            # Two nodes, one leading (the node's view reaches the worker once a second).
            wait_for(lambda: sorted(scrape(p)["ringwork_is_leader"][0].value
                                    for p in (base, base + 1)) == [0.0, 1.0], 30, 0.2,
                     "one leader among the two")
            os.killpg(run.pid, signal.SIGTERM)
            assert run.wait(30) == 0, log.read_text()
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(10)
            for node in cluster.app.store.list_nodes():  # each child has its own session
                pid = int(node.node_id.split("-")[-2])
                with contextlib.suppress(OSError):
                    if b"ringwork.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)
    finally:
        cluster.close()
