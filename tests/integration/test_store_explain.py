"""The claim is an index range scan of the owned partitions; completion goes by primary key.

Plans are read with EXPLAIN on a table with a realistic backlog (and statistics), so the test
fails if a schema or query change makes either planner fall back to scanning the jobs table.
On PostgreSQL the generic plan (what a prepared statement runs: connections set
``plan_cache_mode=force_generic_plan``) is checked too. docs/store.md shows the plans.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import sqlalchemy as sa

from ringwork.job import NewJob
from ringwork.store import Store, claim_pg, claim_sqlite

BACKLOG = 20_000
OWNED = {0: 1, 1: 1, 2: 1}


def _sql(stmt: Any) -> str:
    return str(stmt.element.text)


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "'{" + ",".join(str(v) for v in value) + "}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def explain(store: Store, stmt: Any, params: dict[str, Any], *, generic: bool = False) -> str:
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql("ANALYZE")
            rows = conn.execute(sa.text("EXPLAIN QUERY PLAN " + _sql(stmt)), params)
            return "\n".join(r[3] for r in rows)
        conn.exec_driver_sql("ANALYZE ringwork_jobs")
        if not generic:
            rows = conn.execute(sa.text("EXPLAIN " + _sql(stmt)), params)
            return "\n".join(r[0] for r in rows)
        # PREPARE with $n placeholders, then EXPLAIN EXECUTE: the plan a prepared statement uses.
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        body = re.sub(r"(?<![:\w]):(\w+)", number, _sql(stmt))
        conn.exec_driver_sql(f"PREPARE ringwork_explain AS {body}")
        args = ", ".join(_literal(params[n]) for n in names)
        rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE ringwork_explain({args})")
        plan = "\n".join(r[0] for r in rows)
        conn.exec_driver_sql("DEALLOCATE ringwork_explain")
        return plan


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


def claim_plan(store: Store, *, generic: bool = False, capped: bool = False) -> str:
    """The claim's plan; ``capped``: the variant with per-task rooms (``concurrency=``)."""
    parts = sorted(OWNED)
    params: dict[str, Any] = {"cluster": store.cluster, "node": "n", "limit": 100}
    params |= {f"p{i}": p for i, p in enumerate(parts)}
    rooms = {"full": 0, "capped": 2}
    if store.dialect == "postgresql":
        params |= {"parts": parts, "epochs": [OWNED[p] for p in parts]}
        if capped:
            params |= {"full": ["full"], "cap_tasks": ["capped"], "cap_rooms": [2]}
        return explain(store, claim_pg.CLAIM_PG_CAPPED if capped else claim_pg.CLAIM_PG, params,
                       generic=generic)
    params |= {f"e{i}": OWNED[p] for i, p in enumerate(parts)}
    params |= {"owned": json.dumps(list(OWNED.items())), "now": "2100-01-01 00:00:00.000000"}
    if capped:
        params |= claim_sqlite.claim_params_sqlite("c", "n", OWNED, 100, rooms)
        params["cluster"] = store.cluster
    return explain(store, claim_sqlite.claim_sqlite(len(parts), False, capped), params)


def complete_plan(store: Store, *, generic: bool = False) -> str:
    params: dict[str, Any] = {"cluster": store.cluster, "node": "n"}
    if store.dialect == "postgresql":
        params |= {"ids": [1, 2, 3], "tokens": [1, 1, 1]}
        return explain(store, claim_pg.COMPLETE_PG, params, generic=generic)
    params |= {"done": "[[1,1],[2,1],[3,1]]", "now": "2100-01-01 00:00:00.000000"}
    return explain(store, claim_sqlite.COMPLETE_SQLITE, params)


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_claim_scans_the_claim_index_of_each_owned_partition(store: Store, generic: bool) -> None:
    if generic and store.dialect == "sqlite":
        pytest.skip("SQLite has no generic plans")
    fill(store)
    plan = claim_plan(store, generic=generic)
    print(plan)
    if store.dialect == "postgresql":
        # One limited, ordered range scan of the claim index per owned partition, driven by a
        # nested loop over the locked partition rows (the same plan for any partition count).
        assert re.search(r"Nested Loop[\s\S]*CTE Scan on owned", plan)
        scans = re.findall(r"Index Scan using ix_ringwork_jobs_claim on ringwork_jobs c", plan)
        assert len(scans) == 1
        assert "Seq Scan on ringwork_jobs" not in plan
        assert "Bitmap Heap Scan on ringwork_jobs" not in plan
        assert re.search(r"Index Scan using pk_ringwork_jobs on ringwork_jobs j ", plan)
    else:
        assert "MERGE (UNION ALL)" in plan
        scan = "SEARCH t USING INDEX ix_ringwork_jobs_claim (cluster=? AND partition=?)"
        assert plan.count(scan) == len(OWNED)
        assert "SCAN ringwork_jobs" not in plan and "SCAN t\n" not in plan + "\n"
        assert "USE TEMP B-TREE" not in plan
    # The ordered-key check is a probe into its own small index, not a scan.
    assert "ix_ringwork_jobs_ordered" in plan


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_complete_finds_jobs_by_primary_key(store: Store, generic: bool) -> None:
    if generic and store.dialect == "sqlite":
        pytest.skip("SQLite has no generic plans")
    fill(store)
    plan = complete_plan(store, generic=generic)
    print(plan)
    if store.dialect == "postgresql":
        assert "Index Scan using pk_ringwork_jobs on ringwork_jobs j " in plan
        assert "Index Cond: (id = ANY (" in plan
        assert "Seq Scan on ringwork_jobs" not in plan
    else:
        assert "SEARCH ringwork_jobs USING INTEGER PRIMARY KEY (rowid=?)" in plan
        assert "SCAN ringwork_jobs" not in plan


def test_wide_claim_fallback_uses_the_claim_index(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond MERGE_MAX_PARTITIONS owned partitions (SQLite; PostgreSQL always claims this way):
    one limited index scan per partition."""
    monkeypatch.setattr(claim_sqlite, "MERGE_MAX_PARTITIONS", 2)
    claim_sqlite.claim_sqlite.cache_clear()
    try:
        fill(store)
        plan = claim_plan(store)
        print(plan)
        assert "ix_ringwork_jobs_claim" in plan
        assert "Merge Append" not in plan and "MERGE (UNION ALL)" not in plan
        assert "Seq Scan on ringwork_jobs" not in plan and "SCAN ringwork_jobs" not in plan
    finally:
        claim_sqlite.claim_sqlite.cache_clear()


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_the_claim_with_per_task_rooms_scans_the_same_indexes(store: Store,
                                                              generic: bool) -> None:
    """``concurrency=`` tasks add a filter and a window over the candidates, not a scan: the
    claim index per owned partition and the ordered-key probe, as the plain claim."""
    if generic and store.dialect == "sqlite":
        pytest.skip("SQLite has no generic plans")
    fill(store)
    plan = claim_plan(store, generic=generic, capped=True)
    print(plan)
    assert "ix_ringwork_jobs_ordered" in plan
    if store.dialect == "postgresql":
        scans = re.findall(r"Index Scan using ix_ringwork_jobs_claim on ringwork_jobs c", plan)
        assert len(scans) == 1
        assert "Seq Scan on ringwork_jobs" not in plan
        assert "Bitmap Heap Scan on ringwork_jobs" not in plan
    else:
        scan = "SEARCH t USING INDEX ix_ringwork_jobs_claim (cluster=? AND partition=?)"
        assert plan.count(scan) == len(OWNED)
        assert "SCAN ringwork_jobs" not in plan and "SCAN t\n" not in plan + "\n"


def test_the_head_check_probes_the_ordered_index_with_dead_blockers_about(store: Store) -> None:
    """Dead jobs of ``block_key_on_dead`` tasks are in ``ix_ringwork_jobs_ordered``; the head
    check's predicate is the index's, so both planners still probe it."""
    fill(store)
    store.enqueue([NewJob(task="t", key=f"dead{i}", partition=i % store.partitions,
                          ordered=True, block_key_on_dead=True) for i in range(200)])
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ringwork_jobs SET state = 'dead' WHERE block_key_on_dead")
    for generic in ([False, True] if store.dialect == "postgresql" else [False]):
        plan = claim_plan(store, generic=generic)
        assert "ix_ringwork_jobs_ordered" in plan, plan


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_results_completion_and_attempt_rows_find_jobs_by_primary_key(
        store: Store, generic: bool) -> None:
    """The store_result completion, and SQLite's attempt insert (PostgreSQL's is in the
    completion's own statement, checked above), probe the jobs by primary key too."""
    if generic and store.dialect == "sqlite":
        pytest.skip("SQLite has no generic plans")
    fill(store)
    params: dict[str, Any] = {"cluster": store.cluster, "node": "n"}
    if store.dialect == "postgresql":
        params |= {"ids": [1, 2, 3], "tokens": [1, 1, 1], "results": ["1", "2", "3"],
                   "channel": store.results_channel}
        plans = [explain(store, claim_pg.COMPLETE_RESULTS_PG, params, generic=generic)]
    else:
        params |= {"done": '[[1,1,"1"],[2,1,"2"],[3,1,"3"]]'}
        plans = [explain(store, claim_sqlite.complete_sqlite(False, True), params),
                 explain(store, claim_sqlite.history_sqlite(False).columns(), params)]
    for plan in plans:
        print(plan)
        if store.dialect == "postgresql":
            assert "Index Scan using pk_ringwork_jobs on ringwork_jobs j " in plan
            assert "Seq Scan on ringwork_jobs" not in plan
        else:
            assert "SEARCH ringwork_jobs USING INTEGER PRIMARY KEY (rowid=?)" in plan
            assert "SCAN ringwork_jobs" not in plan


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_the_metrics_backlog_scans_the_claim_index_of_each_partition(
    store: Store, generic: bool
) -> None:
    """``/metrics``' backlog (store/backlog.py): one capped range scan per owned partition."""
    from ringwork.store import backlog

    if generic and store.dialect == "sqlite":
        pytest.skip("SQLite has no generic plans")
    fill(store)
    parts = sorted(OWNED)
    # A cap below the partitions' backlog, as in a queue that is far behind (with a cap above
    # it, reading the whole partition by a bitmap scan is the planner's cheaper choice).
    cap = 100
    if store.dialect == "postgresql":
        params = {"parts": parts, "cluster": store.cluster, "cap": cap}
        plan = explain(store, backlog.BACKLOG_PG, params, generic=generic)
        print(plan)
        assert re.search(r"Index (Only )?Scan using ix_ringwork_jobs_claim on ringwork_jobs j",
                         plan)
        assert "Seq Scan on ringwork_jobs" not in plan
        assert "Bitmap Heap Scan on ringwork_jobs" not in plan
    else:
        params = {"parts": json.dumps(parts), "cluster": store.cluster, "cap": cap}
        plan = explain(store, backlog.backlog_sqlite(False), params)
        print(plan)
        assert "SEARCH j USING INDEX ix_ringwork_jobs_claim (cluster=? AND partition=?)" in plan
        assert "SCAN ringwork_jobs" not in plan and "SCAN j\n" not in plan + "\n"
