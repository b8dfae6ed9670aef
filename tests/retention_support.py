"""Helpers of the retention tests: finished jobs and registry rows of a given age, by the
database's clock."""

from __future__ import annotations

import sqlalchemy as sa

from ringwork.job import NewJob
from ringwork.store import Store
from ringwork.store.clock import now_expr
from ringwork.store.schema import jobs, nodes


def make_jobs(store: Store, rows: list[tuple[str, float]]) -> list[int]:
    """One job per (state, finished so many seconds ago by the database's clock)."""
    ids = store.enqueue([NewJob(task="t", key=f"k{i}", partition=i % store.partitions)
                         for i in range(len(rows))])
    with store.engine.begin() as conn:
        for job_id, (state, age) in zip(ids, rows, strict=True):
            conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id)
                .values(state=state, finished_at=now_expr(store.dialect, -age))
            )
    return ids


def remaining(store: Store) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(
            sa.select(jobs.c.id).where(jobs.c.cluster == store.cluster)
        ).scalars())


def age_node(store: Store, node_id: str, seconds: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.update(nodes).where(nodes.c.cluster == store.cluster,
                                            nodes.c.node_id == node_id)
                     .values(last_seen=now_expr(store.dialect, -seconds)))
