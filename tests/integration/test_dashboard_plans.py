"""The dashboard's reads stay inside their partial indexes on a table that is mostly finished
jobs: a screen refreshes every second, so none of them may scan the jobs table. Each panel
function runs once with its statements captured, then each statement is EXPLAINed as sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from ringwork.store import Store, panels
from ringwork.store.schema import jobs

FINISHED = 20_000


@pytest.fixture
def loaded(store: Store) -> Store:
    now = dt.datetime.now(dt.timezone.utc)
    states = ["succeeded"] * FINISHED + ["queued"] * 300 + ["running"] * 40 + ["dead"] * 20
    rows = [dict(cluster=store.cluster, task="t", key=f"k{i % 50}", partition=i % store.partitions,
                 state=s, run_at=now, enqueued_at=now, ordered=s != "succeeded",
                 claimed_by="n" if s == "running" else None,
                 finished_at=now if s in ("succeeded", "dead") else None)
            for i, s in enumerate(states)]
    with store.engine.begin() as conn:
        for k in range(0, len(rows), 5000):
            conn.execute(jobs.insert(), rows[k:k + 5000])
        conn.exec_driver_sql("ANALYZE" if store.dialect == "sqlite" else "ANALYZE ringwork_jobs")
    return store


def plans(store: Store, read: Callable[[sa.Connection], Any]) -> str:
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    try:
        with store.engine.begin() as conn:
            read(conn)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", capture)
    out = []
    with store.engine.begin() as conn:
        for statement, parameters in sent:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}"
                                        if store.dialect == "sqlite" else f"EXPLAIN {statement}",
                                        parameters).all()
            out.append("\n".join(str(r[-1]) for r in rows))
    return "\n".join(out)


def assert_inside(plan: str, index: str) -> None:
    assert index in plan, plan
    assert "Seq Scan on ringwork_jobs" not in plan, plan
    assert "SCAN ringwork_jobs\n" not in plan + "\n", plan


@pytest.mark.parametrize(("read", "index"), [
    (lambda s, c: panels.partition_load(c, s.dialect, s.cluster), "ix_ringwork_jobs_claim"),
    (lambda s, c: panels.backlog_by_task(c, s.cluster), "ix_ringwork_jobs_claim"),
    (lambda s, c: panels.in_flight_by_node(c, s.cluster), "ix_ringwork_jobs_running"),
    (lambda s, c: panels.has_dead(c, s.cluster), "ix_ringwork_jobs_finished"),
    (lambda s, c: panels.blocked_key_heads(c, s.cluster), "ix_ringwork_jobs_ordered"),
], ids=["partition_load", "backlog_by_task", "in_flight", "has_dead", "blocked_keys"])
def test_panel_reads_stay_in_their_index(loaded: Store, read: Any, index: str) -> None:
    assert_inside(plans(loaded, lambda conn: read(loaded, conn)), index)
