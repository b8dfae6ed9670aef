"""The PostgreSQL claim, completion and attempt guard, as text (why text: :mod:`.claim`), and
the parameters they bind.

A batch is *one* parameter set of arrays read through ``unnest``; the claim is one limited index
scan per owned partition driven by a ``LATERAL`` join from the locked ``owned`` rows, which it
holds ``FOR SHARE`` in partition order (``referee.assign`` takes them ``FOR UPDATE`` in the same
order). The completion is fenced on the job row and writes the attempt's history row in the same
statement.

Threads: none of its own; statements, run by :mod:`.claim` and :mod:`.claim_async`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from ringwork.store.claim_shape import CLAIM_COLUMNS, ORDERED_HEAD

_OWNED_PG = """
WITH owned AS MATERIALIZED (
    SELECT p."partition", p.epoch
    FROM ringwork_partitions AS p
    JOIN unnest(CAST(:parts AS integer[]), CAST(:epochs AS bigint[])) AS w(part, epoch)
      ON p."partition" = w.part AND p.epoch = w.epoch
    WHERE p.cluster = :cluster AND p."partition" = ANY(CAST(:parts AS integer[]))
      AND p.owner = :node
    ORDER BY p."partition"
    FOR SHARE OF p
),"""

# One LATERAL index scan per owned partition, each up to :limit rows (see CLAIM_PG).
_TOP_PG = f"""
top AS MATERIALIZED (
    SELECT c.id FROM owned AS o
    CROSS JOIN LATERAL (
        SELECT c.id, c.priority FROM ringwork_jobs AS c
        WHERE c.cluster = :cluster AND c."partition" = o."partition"
          AND c.state = 'queued' AND c.run_at <= now()
          AND {ORDERED_HEAD.format(j="c")}
        ORDER BY c.priority DESC, c.id
        LIMIT :limit
    ) AS c
    ORDER BY c.priority DESC, c.id
    LIMIT :limit
),"""

# The same scans for a worker with per-task limits (``concurrency=``): tasks with no room left
# (``:full``) are skipped inside the scans; a task with some room (``:cap_tasks`` /
# ``:cap_rooms``) gets at most that many of the candidates, its best by the claim's order.
# ``c.task || ''``: an expression, not the column, on purpose. On the column, the generic plan
# (prepared statements) estimates ``<> ALL($n)`` from the column's statistics -- nearly nothing
# passes when one task fills the table -- and picks a bitmap scan that reads and sorts every
# queued job of a partition; on an expression it takes the default (most rows pass) and keeps
# the limited index scan (tests/integration/test_store_explain.py checks both plans).
_TOP_PG_CAPPED = f"""
top AS MATERIALIZED (
    SELECT r.id FROM (
        SELECT c.id, c.priority, c.task,
               row_number() OVER (PARTITION BY c.task ORDER BY c.priority DESC, c.id) AS rn
        FROM owned AS o
        CROSS JOIN LATERAL (
            SELECT c.id, c.priority, c.task FROM ringwork_jobs AS c
            WHERE c.cluster = :cluster AND c."partition" = o."partition"
              AND c.state = 'queued' AND c.run_at <= now()
              AND (c.task || '') <> ALL(CAST(:full AS text[]))
              AND {ORDERED_HEAD.format(j="c")}
            ORDER BY c.priority DESC, c.id
            LIMIT :limit
        ) AS c
    ) AS r
    LEFT JOIN unnest(CAST(:cap_tasks AS text[]), CAST(:cap_rooms AS integer[])) AS k(task, room)
      ON k.task = r.task
    WHERE k.room IS NULL OR r.rn <= k.room
    ORDER BY r.priority DESC, r.id
    LIMIT :limit
),"""


_CLAIM_PG_TAIL = """
picked AS MATERIALIZED (
    -- A join from the few ids in ``top`` (primary-key probes). Written as ``id = ANY(ARRAY(..))``
    -- plus ``state = 'queued'``, the generic plan scanned the whole partial queued index.
    SELECT j.id FROM top JOIN ringwork_jobs AS j ON j.id = top.id
    WHERE j.state = 'queued'
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE ringwork_jobs AS j
SET state = 'running', attempts = j.attempts + 1, claimed_by = :node, started_at = now(),
    claim_epoch = (SELECT owned.epoch FROM owned WHERE owned."partition" = j."partition")
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.task, j."key", j."partition", j.payload, j.attempts, j.max_attempts,
          j.claim_epoch, j.priority, j.traceparent,
          CAST(EXTRACT(EPOCH FROM j.started_at - GREATEST(j.run_at, j.enqueued_at))
               AS double precision) AS waited
"""


#: The claim for the partitions bound as the ``:parts``/``:epochs`` arrays
#: (:func:`claim_params_pg`).
#:
#: One limited index scan per owned partition, driven by a LATERAL join from the locked
#: ``owned`` rows: it reads up to ``limit`` entries of each partition before the final sort.
#: The alternative, a ``UNION ALL`` of one arm per partition under a lazy ``Merge Append``,
#: reads fewer entries but pays executor start-up for every arm on every execution and is a
#: different statement for every partition count (each prepared and planned on its own; 20 ms
#: to plan for 64 partitions). Measured interleaved on the same data (40,000 queued, limit
#: 4): 16 partitions 3.6 -> 2.8 ms, 32: 5.9 -> 3.9 ms, 64: 24 -> 5.1 ms per claim; with limit
#: 32 the LATERAL form still wins (64 partitions 25.6 -> 9.2 ms). The text is the same for any
#: partition count, so one prepared statement serves every claim, narrowed or not.
CLAIM_PG = sa.text(_OWNED_PG + _TOP_PG + _CLAIM_PG_TAIL).columns(**CLAIM_COLUMNS)

#: :data:`CLAIM_PG` with per-task limits (:func:`claim_params_pg` with ``rooms``).
CLAIM_PG_CAPPED = sa.text(_OWNED_PG + _TOP_PG_CAPPED + _CLAIM_PG_TAIL).columns(**CLAIM_COLUMNS)


# The attempt's history row is written by the completion itself: a data-modifying CTE runs
# whether or not the outer SELECT reads it, in the same statement (one round trip) and snapshot.
_HISTORY_PG = """
), hist AS (
    INSERT INTO ringwork_attempts (job_id, attempt, node, epoch, started_at, finished_at, outcome)
    SELECT id, attempts, claimed_by, claim_epoch, started_at, finished_at, 'succeeded' FROM done
)"""

_DONE_RETURNING_PG = """
RETURNING j.id, j.attempts, j.claimed_by, j.claim_epoch, j.started_at, j.finished_at"""

#: The completion of jobs without a result (the hot path): one statement that marks the batch
#: succeeded, fenced on the job row, and inserts one attempt row per job it updated.
COMPLETE_PG = sa.text("""
WITH done AS (
UPDATE ringwork_jobs AS j SET state = 'succeeded', finished_at = now()
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS d(jid, tok)
WHERE j.id = ANY(CAST(:ids AS bigint[])) AND j.id = d.jid AND j.claim_epoch = d.tok
  AND j.cluster = :cluster
  AND j.claimed_by = :node AND j.state = 'running'""" + _DONE_RETURNING_PG + _HISTORY_PG + """
SELECT id FROM done
""").columns(id=sa.BigInteger)

#: Ids one results notification names at most (8000 bytes; ids of up to 19 digits).
NOTIFY_IDS_MAX = 400

#: The completion of ``store_result`` jobs: :data:`COMPLETE_PG` that also writes each job's
#: result, and notifies the results channel with the finished ids (``app.wait`` listens there;
#: only rounds that carry results pay NOTIFY's commit-time lock). At most
#: :data:`NOTIFY_IDS_MAX` ids per notification, else ``'*'`` (payloads are limited to 8000 bytes).
COMPLETE_RESULTS_PG = sa.text("""
WITH done AS (
UPDATE ringwork_jobs AS j SET state = 'succeeded', finished_at = now(), result = d.res
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[]), CAST(:results AS text[]))
     AS d(jid, tok, res)
WHERE j.id = ANY(CAST(:ids AS bigint[])) AND j.id = d.jid AND j.claim_epoch = d.tok
  AND j.cluster = :cluster
  AND j.claimed_by = :node AND j.state = 'running'""" + _DONE_RETURNING_PG + _HISTORY_PG + """
, note AS (
    SELECT pg_notify(:channel, CASE WHEN count(*) > """ + str(NOTIFY_IDS_MAX) + """ THEN '*'
                                    ELSE string_agg(CAST(id AS text), ',') END) AS sent
    FROM done HAVING count(*) > 0
)
SELECT id FROM done LEFT JOIN note ON true
""").columns(id=sa.BigInteger)

#: A transactional handler's guard before its completion: still this attempt's claim, the row
#: locked until the handler's transaction ends (see :func:`attempt_guard`).
ATTEMPT_GUARD_PG = sa.text("""
SELECT id FROM ringwork_jobs
WHERE id = :id AND cluster = :cluster AND claimed_by = :node AND claim_epoch = :token
  AND attempts = :attempt AND state = 'running'
FOR UPDATE
""").columns(id=sa.BigInteger)


def claim_params_pg(
    cluster: str, node_id: str, owned: Mapping[int, int], limit: int,
    rooms: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The parameters of :data:`CLAIM_PG` (of :data:`CLAIM_PG_CAPPED` with ``rooms``), for the
    store's claim and :class:`~ringwork.store.claim_async.AsyncClaimer`."""
    parts = sorted(owned)
    params = {"parts": parts, "epochs": [owned[p] for p in parts], "cluster": cluster,
              "node": node_id, "limit": limit}
    if rooms is not None:
        caps = sorted((t, r) for t, r in rooms.items() if r > 0)
        params.update(full=sorted(t for t, r in rooms.items() if r <= 0),
                      cap_tasks=[t for t, _ in caps], cap_rooms=[r for _, r in caps])
    return params

