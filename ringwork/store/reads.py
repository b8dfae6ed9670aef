"""Reading jobs: one job, its attempts, lists, and the counts ``ringwork status`` shows.

Apart from :mod:`.jobs` (what changes a job) because these never write and have their own
concern: staying as cheap on a table of a million finished jobs as on an empty one (the capped
counts below, and the partial indexes they lean on).

Threads: each function runs inside a read transaction of :class:`~ringwork.store.Store`, on an
application thread, the CLI's or ``ringwork status``'s.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import sqlalchemy as sa

from ringwork.job import AttemptRecord, JobRecord
from ringwork.store.schema import FINISHED_STATES, JOB_STATES, QUEUED, RUNNING, attempts, jobs


def _record(row: sa.Row[Any]) -> JobRecord:
    data = row._asdict()
    text = data.pop("result", None)
    return JobRecord(**data, result=None if text is None else json.loads(text))


def get_attempts(conn: sa.Connection, cluster: str, job_id: int) -> list[AttemptRecord]:
    """A job's attempt rows, oldest first (the ``ix_ringwork_attempts_job_id`` range), if the
    job is this cluster's (attempt rows carry no cluster: job ids are unique in a database)."""
    a = attempts.c
    ours = sa.exists().where(jobs.c.id == job_id, jobs.c.cluster == cluster)
    rows = conn.execute(
        sa.select(a.attempt, a.node, a.epoch, a.started_at, a.finished_at, a.outcome, a.error)
        .where(a.job_id == job_id, ours).order_by(a.id))
    return [AttemptRecord(**r._asdict()) for r in rows]


def get_job(conn: sa.Connection, cluster: str, job_id: int) -> JobRecord | None:
    row = conn.execute(
        sa.select(jobs).where(jobs.c.id == job_id, jobs.c.cluster == cluster)
    ).first()
    return None if row is None else _record(row)


def list_jobs(
    conn: sa.Connection, cluster: str, state: str | None, task: str | None, limit: int
) -> list[JobRecord]:
    """Newest first."""
    stmt = sa.select(jobs).where(jobs.c.cluster == cluster)
    if state is not None:
        if state not in JOB_STATES:
            raise ValueError(f"unknown job state {state!r}; one of {', '.join(JOB_STATES)}")
        stmt = stmt.where(jobs.c.state == state)
    if task is not None:
        stmt = stmt.where(jobs.c.task == task)
    stmt = stmt.order_by(jobs.c.id.desc()).limit(limit)
    return [_record(r) for r in conn.execute(stmt)]


def counts_by_state(conn: sa.Connection, cluster: str) -> dict[str, int]:
    """Exact counts of every state: reads every row of the cluster, finished ones included
    (tests and benchmarks count succeeded jobs with it). ``status`` uses :func:`status_counts`."""
    counts = dict.fromkeys(JOB_STATES, 0)
    stmt = (
        sa.select(jobs.c.state, sa.func.count())
        .where(jobs.c.cluster == cluster)
        .group_by(jobs.c.state)
    )
    for state, n in conn.execute(stmt):
        counts[state] = n
    return counts


#: Keys ``status`` names as blocked by a dead job, at most.
BLOCKED_KEYS_SHOWN = 20


def blocked_keys(conn: sa.Connection, cluster: str, limit: int = BLOCKED_KEYS_SHOWN,
                 ) -> list[tuple[str, str, int]]:
    """``(task, key, dead job id)`` of the ordered keys a dead ``block_key_on_dead`` job holds,
    up to ``limit`` (+1, so the caller can tell there are more). Read inside
    ``ix_ringwork_jobs_blocking``, which holds those jobs and no other: as cheap with a million
    dead jobs as with none."""
    c = jobs.c
    stmt = (
        sa.select(c.task, c.key, c.id)
        # The index's predicate word for word (a literal): SQLite would render the flag as
        # ``block_key_on_dead = 1`` and no longer see the partial index apply.
        .where(c.cluster == cluster, sa.text("state = 'dead' AND block_key_on_dead"))
        .order_by(c.task, c.key)
        .limit(sa.literal_column(str(int(limit) + 1)))
    )
    return [(str(t), str(k), int(i)) for t, k, i in conn.execute(stmt)]


def backlog_by_partition(conn: sa.Connection, cluster: str) -> dict[int, int]:
    stmt = (
        sa.select(jobs.c.partition, sa.func.count())
        .where(jobs.c.cluster == cluster, jobs.c.state == QUEUED)
        .group_by(jobs.c.partition)
    )
    return {p: n for p, n in conn.execute(stmt)}


#: Finished jobs ``status`` counts per state at most (see :func:`status_counts`).
STATUS_CAP = 10_000


def _count(where: sa.ColumnElement[bool], cap: int | None = None,
           ordered: bool = False) -> sa.ScalarSelect[int]:
    if cap is None:
        return sa.select(sa.func.count()).select_from(jobs).where(where).scalar_subquery()
    # A literal LIMIT, like the states: one statement text whatever the cap.
    rows: sa.Select[Any] = sa.select(sa.literal_column("1")).select_from(jobs).where(where)
    if ordered:
        rows = rows.order_by(jobs.c.finished_at)
    rows = rows.limit(sa.literal_column(str(int(cap) + 1)))
    return sa.select(sa.func.count()).select_from(rows.subquery()).scalar_subquery()


@functools.lru_cache(maxsize=8)
def _status_counts_stmt(dialect: str, cap: int) -> sa.Executable:
    """Built once: status runs it every second under ``--watch``."""
    c = jobs.c
    cluster = sa.bindparam("cluster", type_=c.cluster.type)
    finished = c.state.in_([sa.literal_column(f"'{s}'") for s in FINISHED_STATES])
    columns = [
        _count(sa.and_(c.cluster == cluster, c.state == QUEUED)).label("queued"),
        _count(sa.and_(c.cluster == cluster, c.state == RUNNING)).label("running"),
    ]
    for state in FINISHED_STATES:
        # The equality before the IN: SQLite constrains the index's state column by whichever
        # comes first, and by the IN it would read every finished row of the other states too.
        where = sa.and_(c.cluster == cluster, c.state == sa.literal_column(f"'{state}'"), finished)
        columns.append(_count(where, cap, ordered=dialect == "postgresql").label(state))
    return sa.select(*columns)


def status_counts(conn: sa.Connection, dialect: str, cluster: str, cap: int = STATUS_CAP
                  ) -> tuple[dict[str, int], list[str]]:
    """Per-state counts that cost the same with a million finished rows as with none:
    ``(counts, capped states)``, in one statement.

    Queued and running are exact: they are the real backlog and work in flight, each counted
    inside its own partial index (``ix_ringwork_jobs_claim``, ``ix_ringwork_jobs_running``). A
    finished state is counted up to ``cap`` inside ``ix_ringwork_jobs_finished`` and named in
    the second value when it holds more; an exact count of it would read every finished row
    (or need a counter row that every completion updates, one more contended write on the hot
    path), and nobody acts on "1,000,000 succeeded" versus "10,000+". Every state is a literal,
    and the finished index's own predicate is repeated, so both planners can use the partial
    indexes (see :mod:`.schema`). On PostgreSQL the finished rows are read in that index's order:
    without it the planner may prefer a sequential scan that stops after ``cap`` matches, which
    reads the whole heap when a state's rows lie at its end. SQLite walks the index unasked
    (an ORDER BY there was seen to make it sort every row of the state instead).
    """
    row = conn.execute(_status_counts_stmt(dialect, cap), {"cluster": cluster}).one()._asdict()
    counts = {state: min(int(row[state]), cap) if state in FINISHED_STATES else int(row[state])
              for state in JOB_STATES}
    capped = [state for state in FINISHED_STATES if int(row[state]) > cap]
    return counts, capped
