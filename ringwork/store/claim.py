"""The claim and the completion: the worker's hot path, each statement with its parameters and
the mapping of its rows, in one place.

They are written out as text, not built with Core, because their shape is what throughput
depends on:

* a whole batch travels as *one* bound parameter set -- PostgreSQL arrays through ``unnest``,
  SQLite a JSON array through ``json_each`` -- so each is a single cached statement and a single
  round trip whatever the batch size;
* the claim is one index range scan per owned partition (``LATERAL`` on PostgreSQL, one
  ``UNION ALL`` arm per partition on SQLite), merged and cut to the limit, instead of sorting
  every queued job;
* partial-index predicates (``state = 'queued'``...) are literals, so both planners can use the
  partial indexes (``schema.py``; the plans are checked by tests/integration/test_store_explain).

Fencing: the claim joins the caller's ``(partition, epoch)`` pairs against the partitions table
and, on PostgreSQL, locks those rows ``FOR SHARE`` in partition order; ``referee.assign`` locks
them ``FOR UPDATE`` in the same order, so the two serialise without deadlocks. The completion
checks ``claimed_by`` and ``claim_epoch`` on the job row itself, never through the partitions
table (under READ COMMITTED only the updated rows are re-checked against concurrent commits).

Clock: the database's, inside the statement (``clock.py``). Each SQLite statement has a plain
variant and a *skewed* one taking ``:clock`` for a process whose libc clock is off the host's;
a normal process runs the plain one.

Threads: :func:`claim` and :func:`complete` run inside a transaction of
:class:`~ringwork.store.Store`, on whichever thread called it -- the worker's database pool
(``ringwork-db``) or the node child's ``ringwork-store`` thread. :class:`AsyncClaimer` runs on
the worker's event loop thread and nowhere else.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from ringwork.job import Job
from ringwork.store.clock import sqlite_clock, sqlite_now, with_clock
from ringwork.store.engine import translated

if TYPE_CHECKING:
    import psycopg

#: SQLite: above this many owned partitions the claim uses one correlated scan per partition
#: instead of a merged UNION ALL (statement size; SQLite allows at most 500 compound terms).
MERGE_MAX_PARTITIONS = 200

#: What a claim returns, by name: :func:`claimed_jobs` reads exactly these keys.
CLAIM_COLUMNS = {
    "id": sa.BigInteger,
    "task": sa.String,
    "key": sa.String,
    "partition": sa.Integer,
    "payload": sa.JSON,
    "attempts": sa.Integer,
    "max_attempts": sa.Integer,
    "claim_epoch": sa.BigInteger,
    "priority": sa.Integer,
    "traceparent": sa.String,
    "waited": sa.Float,
}

# A job whose predecessor of the same ordered key is unfinished is not runnable (strict FIFO).
# A dead job of a ``block_key_on_dead`` task counts as unfinished. The predicate is
# ``ix_ringwork_jobs_ordered``'s, word for word (schema.py): so both planners use that index.
_ORDERED_HEAD = """(NOT {j}.ordered OR NOT EXISTS (
              SELECT 1 FROM ringwork_jobs AS e
              WHERE e.cluster = {j}.cluster AND e.task = {j}.task AND e."key" = {j}."key"
                AND e.id < {j}.id AND e.ordered
                AND (e.state IN ('queued', 'running')
                     OR (e.state = 'dead' AND e.block_key_on_dead))))"""

# --- PostgreSQL -------------------------------------------------------------------------------

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
              AND {_ORDERED_HEAD.format(j="c")}
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

# --- SQLite -----------------------------------------------------------------------------------
# Runs inside BEGIN IMMEDIATE (the database write lock), so reads and the write are one step.

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
    SELECT c.id{cols}
    FROM ringwork_partitions AS p
    JOIN json_each(:owned) AS w
      ON p."partition" = json_extract(w.value, '$[0]') AND p.epoch = json_extract(w.value, '$[1]')
    JOIN ringwork_jobs AS c ON c.id IN (
        SELECT t.id FROM ringwork_jobs AS t
        WHERE t.cluster = :cluster AND t."partition" = p."partition"
          AND t.state = 'queued' AND t.run_at <= {now}{skip}
          AND ORDERED_HEAD_T
        ORDER BY t.priority DESC, t.id
        LIMIT :limit)
    WHERE p.cluster = :cluster AND p.owner = :node
    ORDER BY c.priority DESC, c.id
    LIMIT :limit
)"""

_ARM_SQLITE = """    SELECT t.id, t.priority{task} FROM ringwork_jobs AS t
    WHERE t.cluster = :cluster AND t."partition" = :p{i}
      AND t.state = 'queued' AND t.run_at <= {now}
      AND EXISTS (SELECT 1 FROM ringwork_partitions AS p
                  WHERE p.cluster = :cluster AND p."partition" = :p{i}
                    AND p.owner = :node AND p.epoch = :e{i}){skip}
      AND ORDERED_HEAD_T"""

# Per-task limits (``concurrency=``), as in _TOP_PG_CAPPED: the tasks with no room left
# (``:full``, a JSON array) are skipped inside the scans, and of the merged candidates a task
# with some room (``:caps``, a JSON object of task -> room) keeps at most that many.
_SKIP_FULL_SQLITE = "\n      AND {t}.task NOT IN (SELECT value FROM json_each(:full))"
_CAPPED_SQLITE = """
WHERE id IN (SELECT r.id FROM (
    SELECT m.id, m.priority, m.task,
           row_number() OVER (PARTITION BY m.task ORDER BY m.priority DESC, m.id) AS rn
    FROM ({candidates}) AS m
) AS r
WHERE r.rn <= COALESCE((SELECT k.value FROM json_each(:caps) AS k WHERE k."key" = r.task),
                       :limit)
ORDER BY r.priority DESC, r.id
LIMIT :limit)"""

_CLAIM_SQLITE_RETURNING = """
RETURNING id, task, "key", "partition", payload, attempts, max_attempts, claim_epoch, priority,
          traceparent,
          (julianday(started_at) - julianday(max(run_at, enqueued_at))) * 86400.0 AS waited
"""


@functools.lru_cache(maxsize=256)
def claim_sqlite(owned: int, skewed: bool = False, capped: bool = False) -> Any:
    """The SQLite claim for ``owned`` partitions (``:p0``/``:e0``.. in ascending order).

    ``skewed``: the variant that takes ``:clock`` (see the module's docstring). ``capped``: the
    variant with per-task limits (``:full`` and ``:caps``, see :func:`claim_params_sqlite`).

    Up to :data:`MERGE_MAX_PARTITIONS` (SQLite allows 500 compound terms), a ``UNION ALL`` with
    ``ORDER BY .. LIMIT`` that SQLite runs as a lazy ``MERGE (UNION ALL)`` of per-partition index
    scans, reading about ``limit + owned`` rows.
    """
    now = sqlite_now(skewed)
    if owned > MERGE_MAX_PARTITIONS:
        if not capped:
            where = _CLAIM_SQLITE_WIDE_WHERE.format(now=now, cols="", skip="")
        else:
            wide = _CLAIM_SQLITE_WIDE_WHERE.format(
                now=now, cols=", c.priority, c.task",
                skip=_SKIP_FULL_SQLITE.format(t="t").replace("\n      ", "\n          "))
            where = _CAPPED_SQLITE.format(
                candidates=wide.strip().removeprefix("WHERE id IN (").removesuffix(")"))
    else:
        task, skip = ("", "") if not capped else (", t.task", _SKIP_FULL_SQLITE.format(t="t"))
        arms = "\n    UNION ALL\n".join(_ARM_SQLITE.format(i=i, now=now, task=task, skip=skip)
                                         for i in range(owned))
        merged = f"""
{arms}
    ORDER BY 2 DESC, 1
    LIMIT :limit
"""
        where = (_CAPPED_SQLITE.format(candidates=merged) if capped
                 else f"""
WHERE id IN (SELECT id FROM ({merged}))""")
    return (
        sa.text(_CLAIM_SQLITE_SET.format(now=now)
                + where.replace("ORDERED_HEAD_T", _ORDERED_HEAD.format(j="t"))
                + _CLAIM_SQLITE_RETURNING)
        .columns(**CLAIM_COLUMNS)
    )


_DONE_SQLITE = """(SELECT json_extract(value, '$[0]') AS jid, json_extract(value, '$[1]') AS tok,
        json_extract(value, '$[2]') AS res
      FROM json_each(:done)) AS d"""

_FENCE_SQLITE = """ringwork_jobs.id = d.jid AND ringwork_jobs.claim_epoch = d.tok
  AND +ringwork_jobs.cluster = :cluster AND ringwork_jobs.claimed_by = :node
  AND ringwork_jobs.state = 'running'"""


@functools.lru_cache(maxsize=4)
def complete_sqlite(skewed: bool = False, results: bool = False) -> Any:
    """The SQLite completion; ``skewed``: the variant that takes ``:clock``; ``results``: each
    ``:done`` element is ``[id, token, result JSON text]`` and the result is written."""
    result = ", result = d.res" if results else ""
    return (
        sa.text(f"""
UPDATE ringwork_jobs SET state = 'succeeded', finished_at = {sqlite_now(skewed)}{result}
FROM {_DONE_SQLITE}
WHERE {_FENCE_SQLITE}
RETURNING ringwork_jobs.id
""")
        .columns(id=sa.BigInteger)
    )


@functools.lru_cache(maxsize=2)
def history_sqlite(skewed: bool = False) -> Any:
    """The attempt rows of a SQLite completion, run just before it with the same parameters.

    SQLite has no data-modifying CTE. Both statements run under the database write lock
    (``BEGIN IMMEDIATE``), so this insert sees exactly the rows the update then changes.
    """
    return sa.text(f"""
INSERT INTO ringwork_attempts (job_id, attempt, node, epoch, started_at, finished_at, outcome)
SELECT ringwork_jobs.id, ringwork_jobs.attempts, ringwork_jobs.claimed_by,
       ringwork_jobs.claim_epoch, ringwork_jobs.started_at, {sqlite_now(skewed)}, 'succeeded'
FROM {_DONE_SQLITE} JOIN ringwork_jobs ON ringwork_jobs.id = d.jid
WHERE {_FENCE_SQLITE}
""")


COMPLETE_SQLITE = complete_sqlite(False)


#: SQLite's :data:`ATTEMPT_GUARD_PG`: no row locks, and none needed -- a later write of this
#: transaction fails (it cannot upgrade its snapshot) if another connection wrote in between.
ATTEMPT_GUARD_SQLITE = sa.text("""
SELECT id FROM ringwork_jobs
WHERE id = :id AND +cluster = :cluster AND claimed_by = :node AND claim_epoch = :token
  AND attempts = :attempt AND state = 'running'
""").columns(id=sa.BigInteger)

# --- Running them -----------------------------------------------------------------------------


def claim_params_pg(
    cluster: str, node_id: str, owned: Mapping[int, int], limit: int,
    rooms: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The parameters of :data:`CLAIM_PG` (of :data:`CLAIM_PG_CAPPED` with ``rooms``), for the
    store's claim and :class:`AsyncClaimer`."""
    parts = sorted(owned)
    params = {"parts": parts, "epochs": [owned[p] for p in parts], "cluster": cluster,
              "node": node_id, "limit": limit}
    if rooms is not None:
        caps = sorted((t, r) for t, r in rooms.items() if r > 0)
        params.update(full=sorted(t for t, r in rooms.items() if r <= 0),
                      cap_tasks=[t for t, _ in caps], cap_rooms=[r for _, r in caps])
    return params


def claim_params_sqlite(
    cluster: str, node_id: str, owned: Mapping[int, int], limit: int,
    rooms: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The parameters of :func:`claim_sqlite` (both forms: ``:pN``/``:eN`` and ``:owned``;
    ``:full`` and ``:caps`` with ``rooms``)."""
    parts = sorted(owned)
    params: dict[str, Any] = {f"p{i}": p for i, p in enumerate(parts)}
    params.update({f"e{i}": owned[p] for i, p in enumerate(parts)})
    params.update(owned=json.dumps([[p, owned[p]] for p in parts]),
                  cluster=cluster, node=node_id, limit=limit)
    if rooms is not None:
        params.update(full=json.dumps(sorted(t for t, r in rooms.items() if r <= 0)),
                      caps=json.dumps({t: r for t, r in sorted(rooms.items()) if r > 0}))
    return params


def capped_rounds(
    claim_once: Callable[[int, Mapping[str, int]], list[Job]], limit: int,
    rooms: Mapping[str, int],
) -> list[Job]:
    """Claim up to ``limit`` jobs, at most ``rooms[task]`` of each limited task.

    One statement usually does it. When a limited task fills its room the statement may come
    back short -- its scans read ``limit`` candidates per partition, and the ones of that task
    beyond its room were dropped -- so it runs again with the task counted full (skipped inside
    the scans). Each repeat fills at least one more task: at most one per limited task.
    """
    left = dict(rooms)
    claimed: list[Job] = []
    while len(claimed) < limit:
        got = claim_once(limit - len(claimed), left)
        claimed.extend(got)
        if not got or not fills_a_room(left, got):
            break
    return claimed


def fills_a_room(left: dict[str, int], got: Iterable[Job]) -> bool:
    """Count ``got`` against the rooms ``left``; True if a limited task has none left now."""
    filled = False
    for job in got:
        if job.task in left:
            left[job.task] -= 1
            filled = filled or left[job.task] <= 0
    return filled


def claimed_jobs(rows: Iterable[Mapping[Any, Any]]) -> list[Job]:
    """Jobs from a claim's rows (keyed by :data:`CLAIM_COLUMNS`), highest priority first, then
    oldest: the statement's ``UPDATE .. RETURNING`` keeps no order."""
    ordered = sorted(rows, key=lambda r: (-r["priority"], r["id"]))
    return [
        Job(id=r["id"], task=r["task"], key=r["key"], partition=r["partition"],
            payload=r["payload"], attempt=r["attempts"], max_attempts=r["max_attempts"],
            token=r["claim_epoch"], traceparent=r["traceparent"], waited=r["waited"])
        for r in ordered
    ]


def claim(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    node_id: str,
    owned: Mapping[int, int],
    limit: int,
    rooms: Mapping[str, int] | None = None,
) -> list[Job]:
    """Claim up to ``limit`` runnable jobs of the partitions ``node_id`` owns at those epochs.

    ``rooms``: the worker's limited tasks (``concurrency=``) and how many more jobs of each it
    can start now (0: none). Without it -- an app with no per-task limit -- the claim is the
    plain statement, the hot path unchanged.
    """
    if limit <= 0 or not owned:
        return []
    if rooms:
        return capped_rounds(
            lambda n, left: _claim_once(conn, dialect, cluster, node_id, owned, n, left),
            limit, rooms)
    return _claim_once(conn, dialect, cluster, node_id, owned, limit, None)


def _claim_once(conn: sa.Connection, dialect: str, cluster: str, node_id: str,
                owned: Mapping[int, int], limit: int, rooms: Mapping[str, int] | None,
                ) -> list[Job]:
    if dialect == "postgresql":
        stmt = CLAIM_PG if rooms is None else CLAIM_PG_CAPPED
        params = claim_params_pg(cluster, node_id, owned, limit, rooms)
    else:
        clock = sqlite_clock()
        stmt = claim_sqlite(len(owned), clock is not None, rooms is not None)
        params = with_clock(claim_params_sqlite(cluster, node_id, owned, limit, rooms), clock)
    return claimed_jobs(conn.execute(stmt, params).mappings())


def complete(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    node_id: str,
    done: Sequence[tuple[int, int]],
    results: Mapping[int, str] | None = None,
    channel: str = "",
) -> list[int]:
    """Mark ``(job_id, token)`` pairs succeeded, each with its attempt row; the ids that were
    fenced (not updated). ``results``: job id -> result JSON text for the jobs that have one
    (``store_result`` tasks), written by a second statement that only those jobs pay for;
    ``channel``: the results channel it notifies (PostgreSQL)."""
    if not done:
        return []
    plain, kept = split_results(done, results)
    updated: set[int] = set()
    for batch, res in ((plain, None), (kept, results)):
        if batch:
            for stmt, params in completion(dialect, cluster, node_id, batch, res, channel):
                rows = conn.execute(stmt, params)
            updated.update(rows.scalars())
    return [job_id for job_id, _ in done if job_id not in updated]


def split_results(
    done: Sequence[tuple[int, int]], results: Mapping[int, str] | None
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(pairs without a result, pairs with one)``."""
    if not results:
        return list(done), []
    return ([d for d in done if d[0] not in results], [d for d in done if d[0] in results])


def completion(
    dialect: str, cluster: str, node_id: str, done: Sequence[tuple[int, int]],
    results: Mapping[int, str] | None = None, channel: str = "",
) -> list[tuple[Any, dict[str, Any]]]:
    """The completion's statements and their parameters, to run in order on any connection
    (a transactional handler's, sync or async, runs the very statements the pump does); the
    last one returns the updated ids. ``results``: every job of ``done`` has one here."""
    if dialect == "postgresql":
        params: dict[str, Any] = {"ids": [d[0] for d in done], "tokens": [d[1] for d in done],
                                  "cluster": cluster, "node": node_id}
        if results:
            params.update(results=[results[d[0]] for d in done], channel=channel)
            return [(COMPLETE_RESULTS_PG, params)]
        return [(COMPLETE_PG, params)]
    clock = sqlite_clock()
    rows = [[d[0], d[1], results[d[0]]] for d in done] if results else [list(d) for d in done]
    params = with_clock({"done": json.dumps(rows), "cluster": cluster, "node": node_id}, clock)
    skewed = clock is not None
    return [(history_sqlite(skewed), params),
            (complete_sqlite(skewed, bool(results)), params)]


def attempt_guard(
    dialect: str, cluster: str, node_id: str, job_id: int, token: int, attempt: int
) -> tuple[Any, dict[str, Any]]:
    """For a transactional handler's own transaction, before its completion: the job is still
    running under this very attempt's claim (claimer, token and the attempt number).

    Why the attempt: the token is the partition's epoch, the same for two attempts of a job
    claimed by the same worker. The pump never writes a late attempt's success (it holds each
    attempt by identity), but a transactional handler's thread writes its own: a plain
    handler that ran on past its timeout while its retry runs on this worker would otherwise
    commit its writes and the job's success under the retry's claim."""
    params: dict[str, Any] = {"id": job_id, "token": token, "attempt": attempt,
                              "cluster": cluster, "node": node_id}
    return (ATTEMPT_GUARD_PG if dialect == "postgresql" else ATTEMPT_GUARD_SQLITE), params


# --- The claim on the event loop (PostgreSQL) -------------------------------------------------


class AsyncClaimer:
    """:data:`CLAIM_PG` on the worker's event loop: no thread hand-off, one round trip.

    An idle worker woken by a NOTIFY claims from the partitions it names, and that claim is on
    the enqueue-to-start path. Through the store's thread pool it costs two thread hand-offs
    (loop -> database thread -> loop, 0.2-0.5 ms each on a busy machine) and SQLAlchemy's
    per-statement work. This runs the very same statement, compiled once by SQLAlchemy's
    psycopg dialect, on its own ``AsyncConnection`` in autocommit: the statement is its own
    transaction and its reply arrives only after the commit is flushed, so a handler never
    starts before its claim is durable. Rounds that also complete jobs stay on the thread pool
    (``Store.exchange``): completing and claiming in one transaction is what lets an ordered
    key's next job go in the same round.

    One connection, used from one event loop, one claim at a time. It connects on first use
    and, after any error, drops the connection and reconnects on the next claim; errors come out
    as :class:`ringwork.errors.DatabaseError` like the store's.
    """

    def __init__(
        self, dialect: Dialect, connect_kwargs: Mapping[str, Any], cluster: str
    ) -> None:
        self._sql = str(CLAIM_PG.compile(dialect=dialect))  # %(name)s placeholders
        self._sql_capped = str(CLAIM_PG_CAPPED.compile(dialect=dialect))
        self._connect_kwargs = dict(connect_kwargs)
        self._cluster = cluster
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None

    async def claim(self, node_id: str, owned: Mapping[int, int], limit: int,
                    rooms: Mapping[str, int] | None = None) -> list[Job]:
        """Claim up to ``limit`` runnable jobs of partitions ``node_id`` owns at those epochs
        (``rooms``: per-task limits, as for :func:`claim`)."""
        if limit <= 0 or not owned:
            return []
        if not rooms:
            return await self._claim_once(node_id, owned, limit, None)
        # capped_rounds' loop, awaited: each statement is its own transaction (autocommit),
        # and each is correct alone (it starts no more than the rooms left).
        left = dict(rooms)
        claimed: list[Job] = []
        while len(claimed) < limit:
            got = await self._claim_once(node_id, owned, limit - len(claimed), left)
            claimed.extend(got)
            if not got or not fills_a_room(left, got):
                break
        return claimed

    async def _claim_once(self, node_id: str, owned: Mapping[int, int], limit: int,
                          rooms: Mapping[str, int] | None) -> list[Job]:
        params = claim_params_pg(self._cluster, node_id, owned, limit, rooms)
        try:
            with translated("claim"):
                conn = self._conn or await self._connect()
                cursor = await conn.execute(
                    self._sql if rooms is None else self._sql_capped, params)
                rows = await cursor.fetchall()
        except BaseException:
            # Errors and cancellation alike leave the connection in an unknown state.
            await self.close()
            raise
        return claimed_jobs(rows)

    async def _connect(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        self._conn = await psycopg.AsyncConnection.connect(
            **self._connect_kwargs, autocommit=True, row_factory=dict_row
        )
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):  # a broken connection: nothing left to do
                await conn.close()
