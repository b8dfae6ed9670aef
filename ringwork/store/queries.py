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

Clock: every time is the database's, taken in the statement (``now()`` on PostgreSQL,
``SQLITE_NOW`` on SQLite; see ``clock.py``). No statement binds a time from the caller, except a
user's absolute ``run_at``. Every SQLite statement comes in two variants: the plain one, and
the *skewed* one that takes ``:clock``, the date modifier correcting a process's clock offset
from the host's (``clock.sqlite_clock()``, ``None`` in a normal process, which runs the plain
one: the hot path is what it was).
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from ringwork.store.clock import sqlite_now
from ringwork.store.schema import UTCDateTime

#: SQLite: above this many owned partitions the claim uses one correlated scan per partition
#: instead of a merged UNION ALL (statement size; SQLite allows at most 500 compound terms).
MERGE_MAX_PARTITIONS = 200

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

# The batch travels as one JSON array of rows (``json.dumps`` is C; psycopg's text-array
# quoting is a Python regex per element, which was ~40% of an enqueue's client time).
ENQUEUE_PG = sa.text(f"""
WITH ins AS (
    {_INSERT_COLUMNS}
    SELECT :cluster, t.r->>0, t.r->>1, CAST(t.r->>2 AS integer), t.r->3,
           CAST(t.r->>4 AS integer), 'queued',
           COALESCE(CAST(t.r->>5 AS timestamptz),
                    now() + make_interval(secs => COALESCE(CAST(t.r->>9 AS float8), 0))), 0,
           CAST(t.r->>6 AS integer), CAST(t.r->>7 AS boolean), t.r->>8, now()
    FROM json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS t(r, ord)
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

# A chunk without dedupe keys is COPYed instead (``jobs._copy_pg``): this statement hands out its
# ids in ascending order (nextval over generate_series, one round trip) together with the
# transaction's now() for the timestamps, and queues the NOTIFY when :wake is given (it is
# delivered at commit, with the rows). ``ON CONFLICT`` is not needed: a NULL dedupe key never
# enters the partial unique index, and a queued row never enters the running one.
ENQUEUE_PG_IDS = sa.text("""
SELECT now() AS now,
       ARRAY(SELECT nextval('ringwork_jobs_id_seq')
             FROM generate_series(1, CAST(:n AS integer))) AS ids,
       CASE WHEN CAST(:wake AS text) IS NOT NULL
            THEN pg_notify(:channel, CAST(:wake AS text)) END AS woke
""").columns(now=UTCDateTime)

ENQUEUE_PG_COPY = """COPY ringwork_jobs (id, cluster, task, "key", "partition", payload, priority,
    state, run_at, attempts, max_attempts, ordered, enqueued_at) FROM STDIN"""

NOTIFY_PG = sa.text("SELECT pg_notify(:channel, :wake)")

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
          AND {_ORDERED_HEAD.format(j="c")}
        ORDER BY c.priority DESC, c.id
        LIMIT :limit
    ) AS c
    ORDER BY c.priority DESC, c.id
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
          j.claim_epoch, j.priority
"""


#: The claim for the partitions bound as the ``:parts``/``:epochs`` arrays.
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
CLAIM_PG = sa.text(_OWNED_PG + _TOP_PG + _CLAIM_PG_TAIL).columns(**_CLAIM_COLUMNS)


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

@functools.lru_cache(maxsize=2)
def enqueue_sqlite(skewed: bool = False) -> Any:
    """The SQLite enqueue; ``skewed``: the variant that takes ``:clock``."""
    delayed = sqlite_now(skewed, "json_extract(r.value, '$[9]')")
    return (
        sa.text(f"""
{_INSERT_COLUMNS}
SELECT :cluster, json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'),
       json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'),
       json_extract(r.value, '$[4]'), 'queued',
       COALESCE(json_extract(r.value, '$[5]'), {delayed}),
       0, json_extract(r.value, '$[6]'), json_extract(r.value, '$[7]'),
       json_extract(r.value, '$[8]'), {sqlite_now(skewed)}
FROM json_each(:rows) AS r
WHERE true
ORDER BY r.key
{_DEDUPE_CONFLICT}
RETURNING id, task, dedupe_key
""")
        .columns(id=sa.BigInteger, task=sa.String, dedupe_key=sa.String)
    )


ENQUEUE_SQLITE = enqueue_sqlite(False)

_CLAIM_SQLITE_SET = """
UPDATE ringwork_jobs
SET state = 'running', attempts = attempts + 1, claimed_by = :node, started_at = {now},
    claim_epoch = (SELECT p.epoch FROM ringwork_partitions AS p
                   WHERE p.cluster = ringwork_jobs.cluster
                     AND p."partition" = ringwork_jobs."partition")
"""

# Wide fallback: a correlated, limited index scan per owned partition, merged in a temp b-tree.
_CLAIM_SQLITE_WIDE_WHERE = """
WHERE id IN (
    SELECT c.id
    FROM ringwork_partitions AS p
    JOIN json_each(:owned) AS w
      ON p."partition" = json_extract(w.value, '$[0]') AND p.epoch = json_extract(w.value, '$[1]')
    JOIN ringwork_jobs AS c ON c.id IN (
        SELECT t.id FROM ringwork_jobs AS t
        WHERE t.cluster = :cluster AND t."partition" = p."partition"
          AND t.state = 'queued' AND t.run_at <= {now}
          AND ORDERED_HEAD_T
        ORDER BY t.priority DESC, t.id
        LIMIT :limit)
    WHERE p.cluster = :cluster AND p.owner = :node
    ORDER BY c.priority DESC, c.id
    LIMIT :limit
)"""

_ARM_SQLITE = """    SELECT t.id, t.priority FROM ringwork_jobs AS t
    WHERE t.cluster = :cluster AND t."partition" = :p{i}
      AND t.state = 'queued' AND t.run_at <= {now}
      AND EXISTS (SELECT 1 FROM ringwork_partitions AS p
                  WHERE p.cluster = :cluster AND p."partition" = :p{i}
                    AND p.owner = :node AND p.epoch = :e{i})
      AND ORDERED_HEAD_T"""

_CLAIM_SQLITE_RETURNING = """
RETURNING id, task, "key", "partition", payload, attempts, max_attempts, claim_epoch, priority
"""


@functools.lru_cache(maxsize=256)
def claim_sqlite(owned: int, skewed: bool = False) -> Any:
    """The SQLite claim for ``owned`` partitions (``:p0``/``:e0``.. in ascending order).

    ``skewed``: the variant that takes ``:clock`` (see the module's docstring).

    Up to :data:`MERGE_MAX_PARTITIONS` (SQLite allows 500 compound terms), a ``UNION ALL`` with
    ``ORDER BY .. LIMIT`` that SQLite runs as a lazy ``MERGE (UNION ALL)`` of per-partition index
    scans, reading about ``limit + owned`` rows.
    """
    now = sqlite_now(skewed)
    if owned > MERGE_MAX_PARTITIONS:
        where = _CLAIM_SQLITE_WIDE_WHERE.format(now=now)
    else:
        arms = "\n    UNION ALL\n".join(_ARM_SQLITE.format(i=i, now=now) for i in range(owned))
        where = f"""
WHERE id IN (SELECT id FROM (
{arms}
    ORDER BY 2 DESC, 1
    LIMIT :limit
))"""
    return (
        sa.text(_CLAIM_SQLITE_SET.format(now=now)
                + where.replace("ORDERED_HEAD_T", _ORDERED_HEAD.format(j="t"))
                + _CLAIM_SQLITE_RETURNING)
        .columns(**_CLAIM_COLUMNS)
    )


@functools.lru_cache(maxsize=2)
def complete_sqlite(skewed: bool = False) -> Any:
    """The SQLite completion; ``skewed``: the variant that takes ``:clock``."""
    return (
        sa.text(f"""
UPDATE ringwork_jobs SET state = 'succeeded', finished_at = {sqlite_now(skewed)}
FROM (SELECT json_extract(value, '$[0]') AS jid, json_extract(value, '$[1]') AS tok
      FROM json_each(:done)) AS d
WHERE ringwork_jobs.id = d.jid AND ringwork_jobs.claim_epoch = d.tok
  AND +ringwork_jobs.cluster = :cluster AND ringwork_jobs.claimed_by = :node
  AND ringwork_jobs.state = 'running'
RETURNING ringwork_jobs.id
""")
        .columns(id=sa.BigInteger)
    )


COMPLETE_SQLITE = complete_sqlite(False)
