"""The claim is an index range scan of the owned partitions; completion goes by primary key.

Plans are read with EXPLAIN on a table with a realistic backlog (and statistics), so the test
fails if a schema or query change makes either planner fall back to scanning the jobs table.
docs/store.md shows the plans.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from ringwork.job import NewJob
from ringwork.store import Store, queries

BACKLOG = 20_000


def _sql(stmt: Any) -> str:
    return str(stmt.element.text)


def explain(store: Store, stmt: Any, params: dict[str, Any]) -> str:
    with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE ringwork_jobs")
            rows = conn.execute(sa.text("EXPLAIN " + _sql(stmt)), params)
            return "\n".join(r[0] for r in rows)
        conn.exec_driver_sql("ANALYZE")
        rows = conn.execute(sa.text("EXPLAIN QUERY PLAN " + _sql(stmt)), params)
        return "\n".join(r[3] for r in rows)


def fill(store: Store) -> None:
    """A backlog, plus a few thousand running jobs as a busy cluster has."""
    store.enqueue(
        [
            NewJob(task="t", key=f"k{i}", partition=i % store.partitions, ordered=i % 7 == 0)
            for i in range(BACKLOG)
        ]
    )
    term = store.claim_leadership("n", store.read_term().term)
    assert term is not None
    epochs = store.assign("n", term, dict.fromkeys(range(store.partitions), "n"))
    assert epochs is not None
    store.claim("n", epochs, 2000)


def claim_plan(store: Store) -> str:
    owned = {0: 1, 1: 1, 2: 1}
    params: dict[str, Any] = {"cluster": store.cluster, "node": "n", "limit": 100}
    if store.dialect == "postgresql":
        params |= {"parts": list(owned), "epochs": list(owned.values())}
        return explain(store, queries.CLAIM_PG, params)
    params |= {"owned": json.dumps(list(owned.items())), "now": "2100-01-01 00:00:00.000000"}
    return explain(store, queries.CLAIM_SQLITE, params)


def complete_plan(store: Store) -> str:
    params: dict[str, Any] = {"cluster": store.cluster, "node": "n"}
    if store.dialect == "postgresql":
        params |= {"ids": [1, 2, 3], "tokens": [1, 1, 1]}
        return explain(store, queries.COMPLETE_PG, params)
    params |= {"done": "[[1,1],[2,1],[3,1]]", "now": "2100-01-01 00:00:00.000000"}
    return explain(store, queries.COMPLETE_SQLITE, params)


def test_claim_uses_the_claim_index_per_partition(store: Store) -> None:
    fill(store)
    plan = claim_plan(store)
    print(plan)
    if store.dialect == "postgresql":
        assert "Index Scan using ix_ringwork_jobs_claim on ringwork_jobs c" in plan
        assert "Index Cond: (((cluster)::text =" in plan and "(partition = o" in plan
        assert "Seq Scan on ringwork_jobs" not in plan
        assert "Index Scan using pk_ringwork_jobs on ringwork_jobs j " in plan
    else:
        assert "SEARCH t USING INDEX ix_ringwork_jobs_claim (cluster=? AND partition=?)" in plan
        assert "SCAN ringwork_jobs" not in plan and "SCAN t" not in plan
    # The ordered-key check is a probe into its own small index, not a scan.
    assert "ix_ringwork_jobs_ordered" in plan


def test_complete_finds_jobs_by_primary_key(store: Store) -> None:
    fill(store)
    plan = complete_plan(store)
    print(plan)
    if store.dialect == "postgresql":
        assert "Index Scan using pk_ringwork_jobs on ringwork_jobs j " in plan
        assert "Index Cond: (id = ANY (" in plan
        assert "Seq Scan on ringwork_jobs" not in plan
    else:
        assert "SEARCH ringwork_jobs USING INTEGER PRIMARY KEY (rowid=?)" in plan
        assert "SCAN ringwork_jobs" not in plan
