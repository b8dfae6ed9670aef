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
(``ringwork-db``) or the node child's ``ringwork-store`` thread.

The statements live by database (:mod:`.claim_pg`, :mod:`.claim_sqlite`, sharing
:mod:`.claim_shape`); this module picks and runs them, and :mod:`.claim_async` runs the
PostgreSQL claim on the worker's event loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ringwork.job import Job
from ringwork.store.claim_pg import (
    ATTEMPT_GUARD_PG,
    CLAIM_PG,
    CLAIM_PG_CAPPED,
    COMPLETE_PG,
    COMPLETE_RESULTS_PG,
    claim_params_pg,
)
from ringwork.store.claim_sqlite import (
    ATTEMPT_GUARD_SQLITE,
    claim_params_sqlite,
    claim_sqlite,
    complete_sqlite,
    history_sqlite,
)
from ringwork.store.clock import sqlite_clock, with_clock


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
