"""Retention figures: status, the claim and one prune batch, with 1,000,000 finished rows vs none.

    .venv/bin/python -m bench.retention [--rows 1000000] [--databases sqlite,postgresql]
        [--dsn postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each database: a fresh database (a file; a new PostgreSQL database, dropped at the end), a
few queued jobs on partition 0, then ``status`` (``ringwork.status.collect``), its job counts
(``Store.status_counts``; the exact ``Store.counts_by_state`` beside it) and ``Store.claim``
timed (median of many), then ``--rows`` succeeded jobs inserted by one INSERT ... SELECT
(``generate_series`` / a recursive CTE), finished two days ago, and the same timings again;
the claim again while another connection prunes (as the leader does); then prune batches of
1000 (each its own transaction: the time it holds the write lock), and the claim's and the
prune's plans. One JSON document on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from ringwork.app import App
from ringwork.job import NewJob
from ringwork.status import collect
from ringwork.store import Store
from ringwork.store.retention import BATCH_ROWS
from ringwork.store.schema import jobs

CLUSTER = "bench"
PARTITIONS = 16
QUEUED = 5

_COLUMNS = ("cluster, task, key, partition, payload, priority, state, run_at, attempts, "
            "max_attempts, ordered, enqueued_at, started_at, finished_at")


def fill(store: Store, rows: int) -> float:
    """Insert ``rows`` succeeded jobs, finished two days ago, in one statement; seconds."""
    if store.dialect == "postgresql":
        sql = (f"INSERT INTO ringwork_jobs ({_COLUMNS}) SELECT '{CLUSTER}', 'noop', 'k' || i, "
               f"mod(i, {PARTITIONS}), NULL, 0, 'succeeded', now() - interval '3 days', 1, 5, "
               "false, "
               "now() - interval '3 days', now() - interval '2 days', "
               f"now() - interval '2 days' FROM generate_series(1, {rows}) AS i")
    else:
        old = "strftime('%Y-%m-%d %H:%M:%f000', 'now', '-2 days')"
        sql = (f"INSERT INTO ringwork_jobs ({_COLUMNS}) WITH RECURSIVE c(i) AS (SELECT 1 "
               f"UNION ALL SELECT i + 1 FROM c WHERE i < {rows}) SELECT '{CLUSTER}', 'noop', "
               f"'k' || i, i % {PARTITIONS}, NULL, 0, 'succeeded', {old}, 1, 5, 0, {old}, "
               f"{old}, {old} FROM c")
    began = time.perf_counter()
    with store.engine.begin() as conn:
        conn.exec_driver_sql(sql)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE" if store.dialect == "sqlite" else "ANALYZE ringwork_jobs")
    return time.perf_counter() - began


def timed(fn: Callable[[], object], n: int) -> dict[str, float]:
    took = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        took.append((time.perf_counter() - began) * 1000)
    return {"median_ms": round(statistics.median(took), 3), "max_ms": round(max(took), 3),
            "n": n}


def claim_timing(store: Store, epochs: dict[int, int], n: int = 200) -> dict[str, float]:
    """One claim of the partition's few queued jobs, then put them back (untimed)."""
    owned = {0: epochs[0]}
    took = []
    for _ in range(n):
        began = time.perf_counter()
        got = store.claim("bench-node", owned, 10)
        took.append((time.perf_counter() - began) * 1000)
        assert len(got) == QUEUED, len(got)
        with store.engine.begin() as conn:
            conn.execute(sa.update(jobs).where(jobs.c.id.in_([j.id for j in got]))
                         .values(state="queued", claimed_by=None, claim_epoch=None,
                                 started_at=None, attempts=0))
    return {"median_ms": round(statistics.median(took), 3), "max_ms": round(max(took), 3),
            "n": n}


def claim_while_pruning(store: Store, url: str, epochs: dict[int, int]) -> dict[str, Any]:
    """The claim while another connection prunes batch after batch, as the leader does."""
    import threading

    pruner = Store(url, cluster=CLUSTER, partitions=PARTITIONS)
    pruner.open()
    stop = threading.Event()
    pruned = [0]

    def run() -> None:
        while not stop.is_set():
            pruned[0] += pruner.prune_jobs("succeeded", 86400)
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        doc: dict[str, Any] = dict(claim_timing(store, epochs, 300))
    finally:
        stop.set()
        thread.join()
        pruner.close()
    doc["pruned_meanwhile"] = pruned[0]
    return doc


def plans(store: Store) -> dict[str, str]:
    """The plans of one prune batch (the real statement), of the claim's queued probe and of
    status's job counts."""
    from ringwork.store import reads as jobs_queries
    from ringwork.store import retention

    class Capture:
        def execute(self, stmt: Any, params: dict[str, Any] | None = None) -> Any:
            if params:
                stmt = stmt.params(params)
            self.sql = str(stmt.compile(dialect=store.engine.dialect,
                                        compile_kwargs={"literal_binds": True}))
            raise LookupError

    capture = Capture()
    with contextlib.suppress(LookupError):
        retention.prune_jobs(capture, store.dialect, CLUSTER, "succeeded",  # type: ignore[arg-type]
                             86400, BATCH_ROWS)
    prune_sql = capture.sql
    with contextlib.suppress(LookupError):
        jobs_queries.status_counts(capture, store.dialect, CLUSTER)  # type: ignore[arg-type]
    status_sql = capture.sql
    claim_probe = (f"SELECT id FROM ringwork_jobs WHERE cluster = '{CLUSTER}' AND "
                   "partition = 0 AND state = 'queued' ORDER BY priority DESC, id LIMIT 10")
    out: dict[str, str] = {}
    with store.engine.connect() as conn:
        for name, sql in (("prune", prune_sql), ("claim_probe", claim_probe),
                          ("status_counts", status_sql)):
            if store.dialect == "sqlite":
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
                out[name] = "; ".join(r[3] for r in rows)
            else:
                rows = conn.exec_driver_sql("EXPLAIN " + sql)
                out[name] = "; ".join(r[0].strip() for r in rows)
    return out


def measure(url: str, rows: int) -> dict[str, Any]:
    store = Store(url, cluster=CLUSTER, partitions=PARTITIONS)
    store.open()
    app = App(url, partitions=PARTITIONS, cluster=CLUSTER)
    term = store.claim_leadership("bench-node", store.read_term().term)
    assert term is not None
    epochs = store.assign("bench-node", term, dict.fromkeys(range(PARTITIONS), "bench-node"))
    assert epochs is not None
    store.register_node("bench-node", "tcp://127.0.0.1:1")
    store.enqueue([NewJob(task="noop", key=f"q{i}", partition=0) for i in range(QUEUED)])
    doc: dict[str, Any] = {"rows": rows}
    doc["empty"] = {"status": timed(lambda: collect(app), 20),
                    "counts_by_state": timed(store.counts_by_state, 20),
                    "status_counts": timed(store.status_counts, 20),
                    "claim": claim_timing(store, epochs)}
    doc["fill_s"] = round(fill(store, rows), 2)
    doc["full"] = {"status": timed(lambda: collect(app), 20),
                   "counts_by_state": timed(store.counts_by_state, 20),
                   "status_counts": timed(store.status_counts, 20),
                   "claim": claim_timing(store, epochs)}
    doc["plans"] = plans(store)
    doc["claim_while_pruning"] = claim_while_pruning(store, url, epochs)
    batches = []
    for _ in range(20):
        began = time.perf_counter()
        n = store.prune_jobs("succeeded", 86400, limit=BATCH_ROWS)
        batches.append((time.perf_counter() - began) * 1000)
        assert n == BATCH_ROWS, n
    doc["prune_batch_1000"] = {"median_ms": round(statistics.median(batches), 3),
                               "max_ms": round(max(batches), 3), "n": len(batches)}
    # The round that finds nothing due (every row younger than its age): one index probe.
    doc["prune_nothing_due"] = timed(lambda: store.prune_jobs("succeeded", 10 * 86400), 20)
    app.close()
    store.close()
    return doc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--dsn", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    for db in args.databases.split(","):
        if db == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                out["sqlite"] = measure(f"sqlite:///{Path(tmp) / 'bench.db'}", args.rows)
            continue
        server = sa.make_url(args.dsn)
        name = f"ringwork_retention_{uuid.uuid4().hex[:8]}"
        admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        try:
            url = server.set(database=name).render_as_string(hide_password=False)
            out["postgresql"] = measure(url, args.rows)
        finally:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
