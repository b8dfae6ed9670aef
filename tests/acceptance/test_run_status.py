"""``ringwork run`` (a supervised local cluster, restarting a worker that dies) and ``ringwork
status`` as users run them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.cluster import APP_SPEC, ROOT, Cluster
from tests.support import wait_for

pytestmark = pytest.mark.slow


def status_cli(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RINGWORK_DATABASE_URL": cluster.db_url, "RINGWORK_CLUSTER": cluster.name}
    return subprocess.run([sys.executable, "-m", "ringwork.cli", "status", APP_SPEC, *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_run_supervises_a_local_cluster_and_status_shows_it(
    db_url: str, cluster_name: str, tmp_path: Path
) -> None:
    cluster = Cluster(db_url, cluster_name, tmp_path)
    try:
        nobody = status_cli(cluster)
        assert nobody.returncode == 0 and "no node is alive" in nobody.stdout
        env = {**os.environ, "RINGWORK_DATABASE_URL": db_url, "RINGWORK_CLUSTER": cluster_name,
               "RINGWORK_LOG_LEVEL": "WARNING"}
        log = tmp_path / "run.log"
        with open(log, "wb") as out:
            run = subprocess.Popen(
                [sys.executable, "-m", "ringwork.cli", "run", APP_SPEC, "--processes", "2"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            doc = wait_for(lambda: _balanced_status(cluster, 2), 30, 0.2, "2 nodes via `run`")
            assert doc["cluster"] == cluster_name and isinstance(doc["term"], int)
            roles = sorted(n["role"] for n in doc["nodes"])
            assert roles == ["follower", "leader"]
            assert doc["leader"] in {n["id"] for n in doc["nodes"]}
            assert all(n["endpoint"].startswith("tcp://127.0.0.1:") for n in doc["nodes"])
            assert set(doc["jobs"]) >= {"queued", "running", "succeeded", "dead", "cancelled"}
            # A child killed outright is reported and restarted: a new process joins.
            child = next(n for n in doc["nodes"] if n["role"] == "follower")
            pid = int(child["id"].split("-")[-2])
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: f"worker {pid} (slot" in log.read_text(), 15, 0.1, "death reported")
            assert "killed by SIGKILL" in log.read_text() and "restarting it in" in log.read_text()

            def rejoined() -> dict | None:  # type: ignore[type-arg]
                doc = _balanced_status(cluster, 2)
                live = [n for n in doc["nodes"] if n["role"] != "stale"] if doc else []
                pids = {int(n["id"].split("-")[-2]) for n in live}
                return doc if doc and pid not in pids else None

            wait_for(rejoined, 45, 0.2, "a restarted worker in the killed one's place")
            assert "restarted slot" in log.read_text()
            os.killpg(run.pid, signal.SIGTERM)
            assert run.wait(30) == 0, log.read_text()  # every worker stopped cleanly
            assert "restarted slot" in log.read_text()
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait(10)
            _kill_registered_workers(cluster)  # each child has its own session: kill by PID
    finally:
        cluster.close()


def _kill_registered_workers(cluster: Cluster) -> None:
    for node in cluster.app.store.list_nodes():
        pid = int(node.node_id.split("-")[-2])
        with contextlib.suppress(OSError):  # gone already, or the pid is no longer a worker
            if b"ringwork.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


def _balanced_status(cluster: Cluster, n: int) -> dict | None:  # type: ignore[type-arg]
    result = status_cli(cluster, "--json")
    if result.returncode != 0:
        return None
    doc = json.loads(result.stdout)
    live = [node for node in doc["nodes"] if node["role"] != "stale"]
    owned = sorted(p for node in live for p in node["partitions"])
    return doc if len(live) == n and owned == list(range(64)) else None
