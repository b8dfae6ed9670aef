"""Periodic tasks in real worker processes (issue 11, item 4): a schedule every second, two
workers, the leader killed with SIGKILL in the middle -- every tick is one job, none is lost to
the failover, each ran, and ``ringwork cron`` shows the schedule."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from ringwork.store.schema import jobs
from tests.acceptance.cluster import ROOT, Cluster, Proc
from tests.acceptance.cron_app import build
from tests.support import wait_for

pytestmark = pytest.mark.slow

SPEC = "tests.acceptance.cron_app:app"


def beats(cluster: Cluster) -> list[tuple[int, str, str]]:
    with cluster.app.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            sa.select(jobs.c.id, jobs.c.dedupe_key, jobs.c.state)
            .where(jobs.c.cluster == cluster.name, jobs.c.task == "beat")
            .order_by(jobs.c.dedupe_key)
        )]


def leader_of(cluster: Cluster, procs: list[Proc]) -> Proc | None:
    doc = cluster.status()
    for proc in procs:
        node = cluster.node_of(proc, doc)
        if node is not None and node["role"] == "leader":
            return proc
    return None


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql",
                                                           marks=pytest.mark.postgres)],
                         indirect=True)
def test_one_job_per_tick_across_two_workers_and_a_leader_kill(
    db_url: str, cluster_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = Cluster(db_url, cluster_name, tmp_path, app_spec=SPEC, app_build=build)
    schedule = cluster.app.schedules["beat"]
    try:
        procs = cluster.start(2)
        cluster.wait_balanced(procs)
        wait_for(lambda: len(beats(cluster)) >= 3, 20, 0.1, "ticks before the kill")
        leader = wait_for(lambda: leader_of(cluster, procs), 10, 0.1, "a leader")
        killed_at = cluster.kill9(leader)
        survivor = [p for p in procs if p is not leader]
        cluster.wait_balanced(survivor)
        wait_for(lambda: any(schedule.tick_of(k).timestamp() > killed_at + 4  # type: ignore[union-attr]
                             for _, k, _ in beats(cluster)), 30, 0.1, "ticks after the kill")
        rows = beats(cluster)
        keys = Counter(k for _, k, _ in rows)
        assert max(keys.values()) == 1, keys  # one job per tick
        ticks = [schedule.tick_of(k) for k in sorted(keys)]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)]  # type: ignore[operator]
        assert all(g == 1.0 for g in gaps), (ticks, cluster.logs())  # none lost to the failover
        assert ticks[0].timestamp() < killed_at < ticks[-1].timestamp()  # type: ignore[union-attr]

        # each job ran (at least once: a tick killed mid-run runs again), as a normal job
        ids = [i for i, _, _ in rows]
        wait_for(lambda: all(s == "succeeded" for _, _, s in beats(cluster)[: len(ids) - 1]),
                 30, 0.1, "ticks run")
        started = cluster.events().starts
        assert all(started.get(i) for i in ids[:-1])

        env = {**os.environ, "RINGWORK_DATABASE_URL": db_url, "RINGWORK_CLUSTER": cluster_name,
               "RINGWORK_LOG_LEVEL": "WARNING"}
        out = subprocess.run([sys.executable, "-m", "ringwork.cli", "cron", SPEC, "--json"],
                             capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        (row,) = [r for r in json.loads(out.stdout) if r["task"] == "beat"]
        assert row["cron"] == "* * * * * *" and row["timezone"] == "Europe/Berlin"
        assert row["last_run"] is not None and row["next_run"] > row["last_run"]
        table = subprocess.run([sys.executable, "-m", "ringwork.cli", "cron", SPEC],
                               capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
        assert table.returncode == 0 and "beat" in table.stdout and "NEXT RUN" in table.stdout
    finally:
        cluster.close()


@pytest.mark.parametrize("definition, message", [
    ('cron="61 * * * *"', "bad cron expression '61 * * * *'"),
    ('cron="* * * * *", timezone="Mars/Olympus"', "unknown timezone 'Mars/Olympus'"),
])
def test_a_bad_schedule_is_one_line_at_start_up_not_at_the_first_tick(
    tmp_path: Path, definition: str, message: str
) -> None:
    (tmp_path / "badcron.py").write_text(
        "from ringwork import App\n"
        f"app = App(database_url='sqlite:///{tmp_path}/db.sqlite')\n"
        f"@app.periodic('cleanup', {definition})\n"
        "def cleanup(job): pass\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    for command in (["worker", "badcron:app"], ["cron", "badcron:app"]):
        out = subprocess.run([sys.executable, "-m", "ringwork.cli", *command],
                             capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "db.sqlite").exists()  # it failed before touching the database
