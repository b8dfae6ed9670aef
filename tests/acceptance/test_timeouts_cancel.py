"""Per-task timeouts and cancelling running jobs, with real worker processes (issue 11, 2-3).

One worker per test, on SQLite and PostgreSQL. What ran is judged from the handlers' own event
files; what was written, from the database; the CLI is run as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringwork import App
from tests.acceptance.cluster import ROOT, Cluster
from tests.acceptance.timecancel_app import TIMEOUT, build
from tests.support import wait_for

pytestmark = pytest.mark.slow

SPEC = "tests.acceptance.timecancel_app:app"
#: How long a cancel may take to end a running job here: the worker checks every 0.5 s; the
#: rest is a busy 2-core machine's slack.
CANCEL_BOUND = 5.0


def start(db_url: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          *extra: str) -> Cluster:
    cluster = Cluster(db_url, name, tmp_path, app_spec=SPEC, app_build=build)
    procs = cluster.start(1, *extra)
    cluster.wait_balanced(procs)
    return cluster


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RINGWORK_DATABASE_URL": cluster.db_url,
           "RINGWORK_CLUSTER": cluster.name, "RINGWORK_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "ringwork.cli", "jobs", SPEC, *args],
                          capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


def states(cluster: Cluster, ids: list[int]) -> list[str]:
    return [r.state if (r := cluster.app.get_job(i)) else "?" for i in ids]


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql",
                                                           marks=pytest.mark.postgres)],
                         indirect=True)
def test_timeouts_retry_then_dead_late_results_are_dropped_and_retry_all_requeues(
    db_url: str, cluster_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = start(db_url, cluster_name, tmp_path, monkeypatch, "--concurrency", "4")
    try:
        slow = cluster.app.enqueue_many([{"task": "tc_async_slow", "key": f"a{i}"}
                                         for i in range(2)])
        [late] = cluster.app.enqueue_many([{"task": "tc_sync_slow", "key": "s"}])
        # async: cancelled at 1 s, retried, cancelled again, dead (max_attempts=2).
        wait_for(lambda: states(cluster, slow) == ["dead", "dead"], 30, 0.1,
                 "async jobs dead after two timeouts")
        for job_id in slow:
            rec = cluster.app.get_job(job_id)
            assert rec is not None and rec.attempts == 2
            assert f"timed out after {TIMEOUT:g} s" in (rec.last_error or ""), rec.last_error
            assert len(cluster.events().starts[job_id]) == 2
            assert not cluster.events().ends.get(job_id)  # cancelled: never reached its end
        # sync: dead at its deadline while its thread runs on; its late success is not written.
        wait_for(lambda: states(cluster, [late]) == ["dead"], 15, 0.05, "sync job timed out")
        wait_for(lambda: (tmp_path / f"late-{late}-1").exists(), 15, 0.05, "its late return")
        log = cluster.procs[0].log
        wait_for(lambda: "event=late_result_discarded" in log.read_text(), 10, 0.05,
                 "the late result discarded")
        time.sleep(1.0)  # rounds run meanwhile; none may complete it
        rec = cluster.app.get_job(late)
        assert rec is not None and rec.state == "dead" and rec.attempts == 1, rec
        assert "timed out after" in (rec.last_error or "")
        # Bulk retry of the dead async jobs: each runs (and times out) again.
        done = cli(cluster, "retry", "--all", "--state", "dead", "--task", "tc_async_slow")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "queued 2 dead jobs again (task tc_async_slow)"
        wait_for(lambda: all(len(cluster.events().starts[i]) == 3 for i in slow), 20, 0.1,
                 "retried jobs started again")
        assert states(cluster, [late]) == ["dead"]  # another task's dead job: untouched
    finally:
        cluster.close()


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql",
                                                           marks=pytest.mark.postgres)],
                         indirect=True)
def test_cancel_ends_running_async_and_polling_sync_jobs_and_cancel_task_ends_them_all(
    db_url: str, cluster_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = start(db_url, cluster_name, tmp_path, monkeypatch, "--concurrency", "4")
    try:
        [a] = cluster.app.enqueue_many([{"task": "tc_async_wait", "key": "a"}])
        [s] = cluster.app.enqueue_many([{"task": "tc_sync_poll", "key": "s"}])
        wait_for(lambda: states(cluster, [a, s]) == ["running", "running"]
                 and len(cluster.events().starts) == 2, 20, 0.05, "both running")
        asked = time.monotonic()
        assert cluster.app.cancel(a) == "requested"
        done = cli(cluster, "cancel", str(s))
        assert done.returncode == 0, done.stderr
        assert "cancel requested" in done.stdout
        wait_for(lambda: states(cluster, [a, s]) == ["cancelled", "cancelled"], CANCEL_BOUND,
                 0.02, "both cancelled")
        took = time.monotonic() - asked
        events = cluster.events()
        assert not events.ends.get(a)  # the async handler was cancelled
        assert len(events.ends[s]) == 1  # the sync one saw cancel_requested and returned
        for job_id in (a, s):
            rec = cluster.app.get_job(job_id)
            assert rec is not None and rec.attempts == 1 and rec.finished_at is not None
        # Finished now: a second cancel is a clear one-line error.
        again = cli(cluster, "cancel", str(a))
        assert again.returncode != 0 and again.stderr.strip() == (
            f"Error: job {a} is cancelled; only a queued or running job can be cancelled")
        # Bulk: 4 running (concurrency 4) and 3 queued of one task, all ended by one command.
        ids = cluster.app.enqueue_many([{"task": "tc_sync_poll", "key": f"k{i}"}
                                        for i in range(7)])
        wait_for(lambda: states(cluster, ids).count("running") == 4, 20, 0.05, "4 running")
        done = cli(cluster, "cancel", "--task", "tc_sync_poll")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            "cancelled 3 queued jobs of tc_sync_poll; requested cancel of 4 running")
        wait_for(lambda: set(states(cluster, ids)) == {"cancelled"}, CANCEL_BOUND, 0.05,
                 "all seven cancelled")
        print(f"cancel of two running jobs took {took:.2f} s")
    finally:
        cluster.close()


def test_bulk_forms_without_a_worker_and_their_usage_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    app = build(App(database_url=url, cluster="bulk", partitions=64))
    try:
        ids = app.enqueue_many([{"task": "tc_sync_poll", "key": f"k{i}"} for i in range(3)])
        app.enqueue("rec", key="other")
        env = {**os.environ, "RINGWORK_DATABASE_URL": url, "RINGWORK_CLUSTER": "bulk",
               "RINGWORK_LOG_LEVEL": "WARNING"}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "ringwork.cli", "jobs", SPEC, *args],
                                  capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)

        done = run("cancel", "--task", "tc_sync_poll")
        assert done.returncode == 0 and done.stdout.strip() == (
            "cancelled 3 queued jobs of tc_sync_poll; requested cancel of 0 running"), done
        assert {app.get_job(i).state for i in ids} == {"cancelled"}  # type: ignore[union-attr]
        done = run("retry", "--all", "--state", "cancelled")
        assert done.returncode == 0 and done.stdout.strip() == "queued 3 cancelled jobs again"
        assert {app.get_job(i).state for i in ids} == {"queued"}  # type: ignore[union-attr]
        for bad in (("cancel",), ("cancel", str(ids[0]), "--task", "t"), ("retry",),
                    ("retry", str(ids[0]), "--all"), ("retry", str(ids[0]), "--task", "t")):
            result = run(*bad)
            assert result.returncode == 2 and "Traceback" not in result.stderr, (bad, result)
            assert result.stderr.strip().splitlines()[-1].startswith("Error: "), result.stderr
    finally:
        app.close()
