"""``ringwork status`` on a table that is mostly finished jobs: cheap plans, capped finished counts.

Issue 11 asks that status cost the same with a million succeeded rows as with none. The claim
already does (its index holds queued jobs only); status used to count every row with a
``GROUP BY state``. Here every statement :func:`ringwork.status.collect` sends is captured and
EXPLAINed with its own parameters, on a table with more finished rows than the cap, and none
may scan the jobs table; the counts it shows are checked against the exact ones.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console

from ringwork.app import App
from ringwork.console import status_view
from ringwork.job import NewJob
from ringwork.status import collect
from ringwork.store import Store

#: The cap docs/operations.md documents for finished states.
STATUS_CAP = 10_000
SUCCEEDED = STATUS_CAP + 2_000
DEAD = 3
QUEUED = 40
RUNNING = 5

_COLUMNS = ("cluster, task, key, partition, payload, priority, state, run_at, attempts, "
            "max_attempts, ordered, enqueued_at, started_at, finished_at")


def _insert_finished(store: Store, state: str, rows: int) -> None:
    """``rows`` finished jobs in one INSERT ... SELECT (as bench/retention.py fills 1M)."""
    if store.dialect == "postgresql":
        sql = (f"INSERT INTO ringwork_jobs ({_COLUMNS}) SELECT :cluster, 'noop', 'k' || i, "
               f"mod(i, 8), NULL, 0, '{state}', now(), 1, 5, false, now(), now(), now() "
               "FROM generate_series(1, :rows) AS i")
    else:
        now = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
        sql = (f"INSERT INTO ringwork_jobs ({_COLUMNS}) WITH RECURSIVE c(i) AS (SELECT 1 "
               "UNION ALL SELECT i + 1 FROM c WHERE i < :rows) SELECT :cluster, 'noop', "
               f"'k' || i, i % 8, NULL, 0, '{state}', {now}, 1, 5, 0, {now}, {now}, {now} "
               "FROM c")
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql), {"cluster": store.cluster, "rows": rows})


@pytest.fixture
def busy_app(empty_db_url: str, cluster_name: str) -> Iterator[App]:
    """A cluster whose table is mostly succeeded jobs, with a small backlog and a few running.

    In a database of its own: the plans checked here follow the table's statistics, and the
    rows other tests leave in the shared test database (many small clusters) would make the
    planner expect a few rows per cluster and choose differently from run to run."""
    app = App(empty_db_url, partitions=8, cluster=cluster_name)
    store = app.store
    _insert_finished(store, "succeeded", SUCCEEDED)
    _insert_finished(store, "dead", DEAD)
    store.enqueue([NewJob(task="t", key=f"q{i}", partition=i % 8) for i in range(QUEUED)])
    term = store.claim_leadership("n", store.read_term().term)
    assert term is not None
    epochs = store.assign("n", term, dict.fromkeys(range(8), "n"))
    assert epochs is not None
    assert len(store.claim("n", epochs, RUNNING)) == RUNNING
    store.register_node("n", "tcp://127.0.0.1:1")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE" if store.dialect == "sqlite" else "ANALYZE ringwork_jobs")
    try:
        yield app
    finally:
        # PostgreSQL tests share one database: leave no bulk behind to skew the statistics
        # other tests' plans are checked against (test_store_retention's generic plan is).
        with store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM ringwork_jobs WHERE cluster = :c"),
                         {"c": store.cluster})
            if store.dialect == "postgresql":
                conn.exec_driver_sql("ANALYZE ringwork_jobs")
        app.close()


def _statements(app: App) -> list[tuple[str, Any]]:
    sent: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if "ringwork_jobs" in statement:
            sent.append((statement, parameters))

    sa.event.listen(app.store.engine, "before_cursor_execute", before)
    try:
        collect(app)
    finally:
        sa.event.remove(app.store.engine, "before_cursor_execute", before)
    return sent


def _plan(store: Store, statement: str, parameters: Any) -> str:
    """The plan with these parameters; on PostgreSQL also the generic plan (what a prepared
    statement runs: connections set ``plan_cache_mode=force_generic_plan``)."""
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(r[3] for r in rows)
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        custom = "\n".join(r[0] for r in rows)
        names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
        body = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", statement)
        conn.exec_driver_sql(f"PREPARE ringwork_status_explain AS {body}".replace("%", "%%"))
        args = ", ".join("'" + str(parameters[n]).replace("'", "''") + "'" for n in names)
        rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE ringwork_status_explain({args})"
                                    .replace("%", "%%"))
        generic = "\n".join(r[0] for r in rows)
        conn.exec_driver_sql("DEALLOCATE ringwork_status_explain")
        return custom + "\n-- generic --\n" + generic


def test_status_reads_no_finished_rows_beyond_the_cap(busy_app: App) -> None:
    store = busy_app.store
    sent = _statements(busy_app)
    assert sent, "status read nothing from ringwork_jobs"
    for statement, parameters in sent:
        plan = _plan(store, statement, parameters)
        print(statement, "\n", plan)
        if store.dialect == "postgresql":
            assert "Seq Scan on ringwork_jobs" not in plan
            assert "Bitmap Heap Scan on ringwork_jobs" not in plan
            # Finished rows are read only through their own index, and at most the cap of them.
            if "ix_ringwork_jobs_finished" in plan:
                assert "Limit" in plan
        else:
            assert "SCAN ringwork_jobs" not in plan  # SEARCH (an index range) only
            assert "TEMP B-TREE" not in plan  # a sort would read every row of a state
            for line in plan.splitlines():
                assert "ringwork_jobs" not in line or ("USING" in line and "INDEX" in line), line
    # Every finished state is counted inside the partial index of finished jobs.
    plans = "\n".join(_plan(store, s, p) for s, p in sent)
    assert plans.count("ix_ringwork_jobs_finished") >= 3
    assert "ix_ringwork_jobs_claim" in plans and "ix_ringwork_jobs_running" in plans


def test_status_shows_exact_backlog_and_capped_finished_counts(busy_app: App) -> None:
    doc = collect(busy_app)
    assert doc["jobs"] == {"queued": QUEUED - RUNNING, "running": RUNNING,
                           "succeeded": STATUS_CAP, "dead": DEAD, "cancelled": 0}
    assert doc["jobs_capped"] == ["succeeded"] and doc["jobs_cap"] == STATUS_CAP
    assert sum(doc["backlog"].values()) == QUEUED - RUNNING
    console = Console(width=200, record=True, color_system=None)
    console.print(status_view(doc))
    text = console.export_text()
    assert f"succeeded {STATUS_CAP}+" in text and f"dead {DEAD} " in text
    # The exact counts stay available to whoever needs them (tests, benchmarks).
    exact = busy_app.store.counts_by_state()
    assert exact["succeeded"] == SUCCEEDED and exact["queued"] == QUEUED - RUNNING


def test_status_counts_below_the_cap_are_exact(store: Store) -> None:
    _insert_finished(store, "cancelled", 7)
    store.enqueue([NewJob(task="t", key=f"q{i}", partition=0) for i in range(3)])
    counts, capped = store.status_counts()
    assert counts == store.counts_by_state() and capped == []
    # At exactly the cap a state is not capped; one more and it is.
    counts, capped = store.status_counts(cap=7)
    assert counts["cancelled"] == 7 and capped == []
    counts, capped = store.status_counts(cap=6)
    assert counts["cancelled"] == 6 and capped == ["cancelled"]
    assert counts["queued"] == 3


def test_sqlite_counts_of_small_finished_states_skip_the_big_one(store: Store) -> None:
    """SQLite's plan names the same index either way, so count the work: the virtual machine's
    steps for status's counts stay near those of reading the capped state alone (counting the
    empty states must not read through the succeeded rows). A table of succeeded rows only, as
    a retention-less cluster has: its statistics make the equality and the IN on ``state``
    look alike to the planner, which then takes the first."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite's choice between two terms on one index column")
    _insert_finished(store, "succeeded", SUCCEEDED)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    sent: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", before)
    try:
        store.status_counts()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", before)
    statement, parameters = next(s for s in sent if "LIMIT" in s[0])
    alone = ("SELECT count(*) FROM (SELECT 1 FROM ringwork_jobs WHERE cluster = ? AND "
             "state = 'succeeded' AND state IN ('succeeded', 'cancelled', 'dead') "
             f"LIMIT {STATUS_CAP + 1})")
    with store.engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        steps = [0]

        def tick() -> int:
            steps[0] += 1
            return 0

        raw.set_progress_handler(tick, 100)
        try:
            raw.execute(alone, (store.cluster,)).fetchall()
            baseline, steps[0] = steps[0], 0
            raw.execute(statement, parameters).fetchall()
        finally:
            raw.set_progress_handler(None, 0)
    print(baseline, steps[0])
    assert steps[0] < baseline * 1.5, (baseline, steps[0])


@pytest.mark.parametrize("store_partitions", [64])  # the partition count of the CLI's app
def test_status_cli_prints_the_cap(store: Store, db_url: str) -> None:
    """``ringwork status`` as a user runs it: ``10000+`` in the view, the cap named in --json."""
    _insert_finished(store, "succeeded", STATUS_CAP + 1)
    env = {**os.environ, "RINGWORK_DATABASE_URL": db_url, "RINGWORK_CLUSTER": store.cluster,
           "RINGWORK_LOG_LEVEL": "WARNING"}
    root = Path(__file__).resolve().parents[2]

    def status(*extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ringwork.cli", "status", "tests.acceptance.cluster_app:app",
             *extra], capture_output=True, text=True, env=env, cwd=root, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    doc = json.loads(status("--json"))
    assert doc["jobs"]["succeeded"] == STATUS_CAP and doc["jobs_capped"] == ["succeeded"]
    assert doc["jobs_cap"] == STATUS_CAP and doc["jobs"]["queued"] == 0
    assert f"succeeded {STATUS_CAP}+" in status()
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ringwork_jobs WHERE cluster = :c"), {"c": store.cluster})
