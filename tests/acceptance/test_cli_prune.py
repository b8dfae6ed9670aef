"""``ringwork jobs APP prune --older-than AGE [--state S ...]`` and the retention flags, as users
run them: real subprocesses, counts printed, one-line errors for bad durations and settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringwork.store import Store
from tests.acceptance.test_cli import APP, assert_one_line_error
from tests.retention_support import make_jobs, remaining
from tests.support import wait_for


@pytest.fixture
def store_partitions() -> int:
    return 64  # workers.example's


def run(*args: str, db_url: str, cluster: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "RINGWORK_LOG_LEVEL": "WARNING", "RINGWORK_DATABASE_URL": db_url,
               "RINGWORK_CLUSTER": cluster, **env}
    return subprocess.run([sys.executable, "-m", "ringwork.cli", *args], capture_output=True,
                          text=True, env=environ, timeout=60)


def test_prune_by_age_and_state(store: Store, db_url: str) -> None:
    ids = make_jobs(store, [("succeeded", 3 * 3600), ("dead", 3 * 3600), ("cancelled", 3 * 3600),
                            ("succeeded", 60), ("queued", 10**6)])
    _old_ok, _old_dead, old_cancelled, young, queued = ids
    result = run("jobs", APP, "prune", "--older-than", "2h", "--state", "succeeded",
                 "--state", "dead", db_url=db_url, cluster=store.cluster)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deleted 2 jobs (1 succeeded, 1 dead)"
    assert remaining(store) == {old_cancelled, young, queued}
    result = run("jobs", APP, "prune", "--older-than", "30s", db_url=db_url,
                 cluster=store.cluster)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deleted 2 jobs (1 succeeded, 1 cancelled, 0 dead)"
    assert remaining(store) == {queued}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("bad", ["2y", "-1h", "soon", "", "1.2.3d"])
def test_bad_durations_are_one_line_errors(store: Store, db_url: str, bad: str) -> None:
    result = run("jobs", APP, "prune", "--older-than", bad, db_url=db_url,
                 cluster=store.cluster)
    assert_one_line_error(result, "--older-than must be a duration", repr(bad))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_prune_needs_an_age_and_a_finished_state(store: Store, db_url: str) -> None:
    assert run("jobs", APP, "prune", db_url=db_url, cluster=store.cluster).returncode == 2
    result = run("jobs", APP, "prune", "--older-than", "1h", "--state", "queued",
                 db_url=db_url, cluster=store.cluster)
    # A bad option value is one "Error:" line with exit 1, like every command's (cli/group.py);
    # a missing option (above) is a usage error, exit 2.
    assert result.returncode == 1 and "queued" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (("--retain-dead", "forever"), {}, "'--retain-dead' (env var: 'RINGWORK_RETAIN_DEAD'): "
         "retain_dead must be a duration"),
        ((), {"RINGWORK_RETAIN_SUCCEEDED": "-5"}, "'RINGWORK_RETAIN_SUCCEEDED'): retain_succeeded "
         "must be a duration"),
        ((), {"RINGWORK_RETAIN_NODES": "10s"}, "retain_nodes must be 0 or at least"),
        ((), {"RINGWORK_HOUSEKEEPING_INTERVAL": "0"}, "housekeeping_interval must be positive"),
    ],
)
def test_bad_retention_settings_stop_the_worker_at_start(
    store: Store, db_url: str, args: tuple[str, ...], env: dict[str, str], fragment: str
) -> None:
    result = run("worker", APP, *args, db_url=db_url, cluster=store.cluster, **env)
    assert_one_line_error(result, fragment)


def test_a_worker_prunes_by_its_retention_flags(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    """A real worker process (its node in a process of its own, the default): as the leader it
    prunes by the ages its flags and variables give, and leaves young and unfinished jobs."""
    ids = make_jobs(store, [("succeeded", 3 * 3600), ("succeeded", 60), ("dead", 3 * 3600)])
    old_ok, young_ok, old_dead = ids
    log = tmp_path / "worker.log"
    env = {**os.environ, "RINGWORK_LOG_LEVEL": "INFO", "RINGWORK_DATABASE_URL": db_url,
           "RINGWORK_CLUSTER": store.cluster, "RINGWORK_HOUSEKEEPING_INTERVAL": "0.5",
           "RINGWORK_EXAMPLE_LOG": str(tmp_path)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringwork.cli", "worker", APP, "--retain-succeeded", "2h",
             "--retain-dead", "0"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for(lambda: old_ok not in remaining(store), 60, message="the old succeeded job went")
        time.sleep(1.5)  # a few more rounds: nothing else may go
        assert remaining(store) == {young_ok, old_dead}  # dead: 0 keeps them forever
        assert "event=jobs_pruned" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
