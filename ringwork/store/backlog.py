"""The backlog of given partitions, for a worker's ``/metrics``: how many jobs are due and how
long the oldest of them has waited, partition by partition.

A worker asks for the partitions it owns only, so the cluster's gauges add up with nothing
counted twice. One statement for all of them, and bounded: each partition is one range scan of
the claim index (``ix_ringwork_jobs_claim``, in claim order) cut at ``cap`` entries, so a huge
backlog costs ``cap`` index entries per partition, not a count of the whole queue. Past the
cap the count reads ``cap`` and the age is that of the oldest among the first ``cap`` in claim
order (the head of the queue: with equal priorities, the oldest of all).

"Due" means queued with ``run_at`` at or before the database's now; jobs waiting for a delay or
a retry's backoff are not backlog. The age runs from ``run_at``: when the job became runnable.

Threads: the metrics server's (a scrape), in a read transaction of
:class:`~ringwork.store.Store`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ringwork.store.clock import sqlite_clock, sqlite_now, with_clock

#: Due jobs counted per partition at most (the gauge saturates there).
BACKLOG_CAP = 10_000

BACKLOG_PG = sa.text("""
SELECT w.p AS "partition", count(c.run_at) AS due,
       CAST(EXTRACT(EPOCH FROM clock_timestamp() - min(c.run_at)) AS double precision) AS oldest
FROM unnest(CAST(:parts AS integer[])) AS w(p)
LEFT JOIN LATERAL (
    SELECT j.run_at FROM ringwork_jobs AS j
    WHERE j.cluster = :cluster AND j."partition" = w.p
      AND j.state = 'queued' AND j.run_at <= clock_timestamp()
    ORDER BY j.priority DESC, j.id
    LIMIT :cap
) AS c ON true
GROUP BY w.p
""").columns(partition=sa.Integer, due=sa.Integer, oldest=sa.Float)


@functools.lru_cache(maxsize=2)
def backlog_sqlite(skewed: bool) -> Any:
    now = sqlite_now(skewed)
    head = f"""(SELECT j.run_at FROM ringwork_jobs AS j
        WHERE j.cluster = :cluster AND j."partition" = w.value
          AND j.state = 'queued' AND j.run_at <= {now}
        ORDER BY j.priority DESC, j.id LIMIT :cap)"""
    return sa.text(f"""
SELECT w.value AS "partition",
       (SELECT count(*) FROM {head}) AS due,
       (julianday({now}) - julianday((SELECT min(run_at) FROM {head}))) * 86400.0 AS oldest
FROM json_each(:parts) AS w
""").columns(partition=sa.Integer, due=sa.Integer, oldest=sa.Float)


def owned_backlog(conn: sa.Connection, dialect: str, cluster: str, partitions: Sequence[int],
                  cap: int = BACKLOG_CAP) -> dict[int, tuple[int, float | None]]:
    """``{partition: (due jobs up to cap, seconds the oldest has waited or None)}``."""
    parts = sorted(partitions)
    if not parts:
        return {}
    if dialect == "postgresql":
        rows = conn.execute(BACKLOG_PG, {"parts": parts, "cluster": cluster, "cap": cap})
    else:
        import json

        clock = sqlite_clock()
        params = with_clock({"parts": json.dumps(parts), "cluster": cluster, "cap": cap}, clock)
        rows = conn.execute(backlog_sqlite(clock is not None), params)
    return {r.partition: (int(r.due), None if r.due == 0 or r.oldest is None
                          else max(0.0, float(r.oldest))) for r in rows}
