"""``ringwork worker --grace N``: a stop is bounded by the grace, however long handlers run."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.acceptance.cluster import Cluster
from tests.support import wait_for

pytestmark = pytest.mark.slow

GRACE = 2.0
#: What a stop may take past the grace: the pump notices it, the node leaves, the process ends.
BOUND = 8.0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_grace_bounds_the_stop_of_a_worker_with_long_sync_handlers(
    db_url: str, cluster_name: str, tmp_path: Path
) -> None:
    """Bug 5: with ``--grace 30`` a stop took 51-61 s: the exit waited for the handler threads.
    The worker exits 0 within the grace plus a small bound. What still runs at the grace end is
    written back ``queued`` by the stopping worker, its attempt counted and its error saying it
    was abandoned; the partitions' next owner runs the jobs again."""
    cluster = Cluster(db_url, cluster_name, tmp_path)
    try:
        (proc,) = cluster.start(1, "--grace", str(GRACE), "--concurrency", "4")
        cluster.wait_balanced([proc])
        ids = cluster.enqueue(3, keys=3, ms=60_000)
        wait_for(lambda: len(cluster.events().starts) == 3, 30, 0.05, "three long jobs running")
        sent = time.monotonic()
        cluster.signal(proc, signal.SIGTERM)
        try:
            code = proc.popen.wait(GRACE + BOUND + 20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running\n{cluster.logs()}") from None
        took = time.monotonic() - sent
        assert took < GRACE + BOUND, f"stop took {took:.1f} s\n{cluster.logs()}"
        assert code == 0, cluster.logs()
        assert "event=grace_expired" in proc.log.read_text()
        # No other node took them: the stopping worker wrote them back itself, attempt kept.
        records = [cluster.app.get_job(i) for i in ids]
        assert all(r is not None and r.state == "queued" for r in records), records
        assert [r.attempts for r in records if r] == [1, 1, 1]
        assert all(r is not None and "abandoned at shutdown after the grace period"
                   in (r.last_error or "") for r in records), records
        # The next owner of the partitions runs them again.
        (second,) = cluster.start(1)
        wait_for(lambda: all(len(cluster.events().starts[i]) == 2 for i in ids), 30, 0.1,
                 "the abandoned jobs started again by the next owner")
        assert {cluster.events().starts[i][1][0] for i in ids} == {second.worker_pid}
        assert [r.attempts for i in ids if (r := cluster.app.get_job(i))] == [2, 2, 2]
    finally:
        cluster.close()
