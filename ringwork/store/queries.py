"""The hot-path SQL, named, one variant per dialect (everything else is built with Core in place).

These are the statements whose shape matters for throughput, so they are written out:

* a whole batch travels as *one* bound parameter set -- PostgreSQL arrays through ``unnest``,
  SQLite a JSON array through ``json_each`` -- so each is a single cached statement and a single
  round trip whatever the batch size;
* the claim is one index range scan per owned partition (``LATERAL`` on PostgreSQL, a correlated
  ``IN`` on SQLite), merged and cut to the limit, instead of sorting every queued job;
* partial-index predicates (``state = 'queued'``...) are repeated as literals so both planners can
  use the partial indexes (see ``schema.py``).

Fencing: the claim joins the caller's ``(partition, epoch)`` pairs against the partitions table
and, on PostgreSQL, locks those rows ``FOR SHARE`` in partition order; ``assign`` locks them
``FOR UPDATE`` in the same order, so the two serialise without deadlocks. Completion checks
``claimed_by`` and ``claim_epoch`` on the job row itself, never through the partitions table.
"""

from __future__ import annotations

import sqlalchemy as sa

from ringwork.store.schema import UTCDateTime

# A job whose predecessor of the same ordered key is unfinished is not runnable (strict FIFO).
_ORDERED_HEAD = """(NOT {j}.ordered OR NOT EXISTS (
              SELECT 1 FROM ringwork_jobs AS e
              WHERE e.cluster = {j}.cluster AND e.task = {j}.task AND e."key" = {j}."key"
                AND e.id < {j}.id AND e.ordered AND e.state IN ('queued', 'running')))"""

_CLAIM_COLUMNS = {
    "id": sa.BigInteger,
    "task": sa.String,
    "key": sa.String,
    "partition": sa.Integer,
    "payload": sa.JSON,
    "attempts": sa.Integer,
    "max_attempts": sa.Integer,
    "claim_epoch": sa.BigInteger,
    "priority": sa.Integer,
}

_DEDUPE_CONFLICT = """ON CONFLICT (cluster, task, dedupe_key)
        WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running')
    DO UPDATE SET dedupe_key = excluded.dedupe_key"""

_INSERT_COLUMNS = """INSERT INTO ringwork_jobs (cluster, task, "key", "partition", payload,
        priority, state, run_at, attempts, max_attempts, ordered, dedupe_key, enqueued_at)"""

# --- PostgreSQL -------------------------------------------------------------------------------

ENQUEUE_PG = sa.text(f"""
WITH ins AS (
    {_INSERT_COLUMNS}
    SELECT :cluster, t.task, t.k, t.part, CAST(t.payload AS json), t.priority, 'queued',
           COALESCE(t.run_at, now()), 0, t.max_attempts, t.ordered, t.dedupe_key, now()
    FROM unnest(CAST(:task AS text[]), CAST(:key AS text[]), CAST(:part AS integer[]),
                CAST(:payload AS text[]), CAST(:priority AS integer[]),
                CAST(:run_at AS timestamptz[]), CAST(:max_attempts AS integer[]),
                CAST(:ordered AS boolean[]), CAST(:dedupe_key AS text[]))
         WITH ORDINALITY AS t(task, k, part, payload, priority, run_at, max_attempts, ordered,
                              dedupe_key, ord)
    ORDER BY t.ord
    {_DEDUPE_CONFLICT}
    RETURNING id, task, dedupe_key, "partition", run_at
),
wake AS (
    SELECT pg_notify(:channel, CASE WHEN count(DISTINCT "partition") > 1000 THEN '*'
                     ELSE string_agg(DISTINCT CAST("partition" AS text), ',') END)
    FROM ins WHERE run_at <= now() HAVING count(*) > 0
)
SELECT ins.id, ins.task, ins.dedupe_key FROM ins, (SELECT count(*) FROM wake) AS woke
""").columns(id=sa.BigInteger, task=sa.String, dedupe_key=sa.String)

CLAIM_PG = sa.text(f"""
WITH owned AS MATERIALIZED (
    SELECT p."partition", p.epoch
    FROM ringwork_partitions AS p
    JOIN unnest(CAST(:parts AS integer[]), CAST(:epochs AS bigint[])) AS w(part, epoch)
      ON p."partition" = w.part AND p.epoch = w.epoch
    WHERE p.cluster = :cluster AND p."partition" = ANY(CAST(:parts AS integer[]))
      AND p.owner = :node
    ORDER BY p."partition"
    FOR SHARE OF p
),
picked AS MATERIALIZED (
    SELECT j.id
    FROM owned AS o
    CROSS JOIN LATERAL (
        SELECT c.id FROM ringwork_jobs AS c
        WHERE c.cluster = :cluster AND c."partition" = o."partition"
          AND c.state = 'queued' AND c.run_at <= now()
          AND {_ORDERED_HEAD.format(j="c")}
        ORDER BY c.priority DESC, c.id
        LIMIT :limit
    ) AS top
    JOIN ringwork_jobs AS j ON j.id = top.id AND j.state = 'queued'
    ORDER BY j.priority DESC, j.id
    LIMIT :limit
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE ringwork_jobs AS j
SET state = 'running', attempts = j.attempts + 1, claimed_by = :node,
    claim_epoch = o.epoch, started_at = now()
FROM owned AS o
WHERE j.id = ANY(ARRAY(SELECT id FROM picked)) AND j."partition" = o."partition"
RETURNING j.id, j.task, j."key", j."partition", j.payload, j.attempts, j.max_attempts,
          j.claim_epoch, j.priority
""").columns(**_CLAIM_COLUMNS)

COMPLETE_PG = sa.text("""
UPDATE ringwork_jobs AS j SET state = 'succeeded', finished_at = now()
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS d(jid, tok)
WHERE j.id = ANY(CAST(:ids AS bigint[])) AND j.id = d.jid AND j.claim_epoch = d.tok
  AND j.cluster = :cluster
  AND j.claimed_by = :node AND j.state = 'running'
RETURNING j.id
""").columns(id=sa.BigInteger)

# --- SQLite -----------------------------------------------------------------------------------
# Runs inside BEGIN IMMEDIATE (the database write lock), so reads and the write are one step.

ENQUEUE_SQLITE = (
    sa.text(f"""
{_INSERT_COLUMNS}
SELECT :cluster, json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'),
       json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'),
       json_extract(r.value, '$[4]'), 'queued', COALESCE(json_extract(r.value, '$[5]'), :now),
       0, json_extract(r.value, '$[6]'), json_extract(r.value, '$[7]'),
       json_extract(r.value, '$[8]'), :now
FROM json_each(:rows) AS r
WHERE true
ORDER BY r.key
{_DEDUPE_CONFLICT}
RETURNING id, task, dedupe_key
""")
    .bindparams(sa.bindparam("now", type_=UTCDateTime))
    .columns(id=sa.BigInteger, task=sa.String, dedupe_key=sa.String)
)

CLAIM_SQLITE = (
    sa.text(f"""
UPDATE ringwork_jobs
SET state = 'running', attempts = attempts + 1, claimed_by = :node, started_at = :now,
    claim_epoch = (SELECT p.epoch FROM ringwork_partitions AS p
                   WHERE p.cluster = ringwork_jobs.cluster
                     AND p."partition" = ringwork_jobs."partition")
WHERE id IN (
    SELECT c.id
    FROM ringwork_partitions AS p
    JOIN json_each(:owned) AS w
      ON p."partition" = json_extract(w.value, '$[0]') AND p.epoch = json_extract(w.value, '$[1]')
    JOIN ringwork_jobs AS c ON c.id IN (
        SELECT t.id FROM ringwork_jobs AS t
        WHERE t.cluster = :cluster AND t."partition" = p."partition"
          AND t.state = 'queued' AND t.run_at <= :now
          AND {_ORDERED_HEAD.format(j="t")}
        ORDER BY t.priority DESC, t.id
        LIMIT :limit)
    WHERE p.cluster = :cluster AND p.owner = :node
    ORDER BY c.priority DESC, c.id
    LIMIT :limit
)
RETURNING id, task, "key", "partition", payload, attempts, max_attempts, claim_epoch, priority
""")
    .bindparams(sa.bindparam("now", type_=UTCDateTime))
    .columns(**_CLAIM_COLUMNS)
)

COMPLETE_SQLITE = (
    sa.text("""
UPDATE ringwork_jobs SET state = 'succeeded', finished_at = :now
FROM (SELECT json_extract(value, '$[0]') AS jid, json_extract(value, '$[1]') AS tok
      FROM json_each(:done)) AS d
WHERE ringwork_jobs.id = d.jid AND ringwork_jobs.claim_epoch = d.tok
  AND +ringwork_jobs.cluster = :cluster AND ringwork_jobs.claimed_by = :node
  AND ringwork_jobs.state = 'running'
RETURNING ringwork_jobs.id
""")
    .bindparams(sa.bindparam("now", type_=UTCDateTime))
    .columns(id=sa.BigInteger)
)
