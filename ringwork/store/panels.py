"""Reads for the dashboard's screens: per-partition backlog and lag, recent attempts, jobs in
flight per node, a filtered job list, and the heads of blocked ordered keys.

Apart from :mod:`.reads` (what ``status`` and the CLI read) because a screen refreshes every
second or so, for as long as someone looks at it: every statement here is bounded. The recent
attempts are the newest rows by primary key (a backward walk of it that stops at a cap), not a
scan by time, which ``ringwork_attempts`` has no index for; the job list stops at its limit.
Ages come from the database's clock (:func:`.clock.age_expr`), like every age ringwork shows.

Threads: each function runs inside a read transaction the caller opens, on whichever thread
serves the request (Starlette's thread pool, under the dashboard).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ringwork.job import JobRecord
from ringwork.store.clock import age_expr, now_expr
from ringwork.store.reads import _record
from ringwork.store.schema import HOLDS_KEY, JOB_STATES, QUEUED, RUNNING, attempts, jobs

#: Attempt rows the dashboard reads at most for throughput, failure rate and run times.
RECENT_ATTEMPTS = 5000


@dataclass(frozen=True)
class PartitionLoad:
    """One partition's queued jobs: how many, and how long the oldest due one has waited
    (seconds; ``None``: none is due)."""

    backlog: int
    oldest_age: float | None


def partition_load(conn: sa.Connection, dialect: str, cluster: str) -> dict[int, PartitionLoad]:
    """Queued count of every partition with a queued job, and how long its oldest due job has
    waited since it became due (``run_at``: its enqueue, or the end of its delay or retry
    back-off), ``None`` when none is due yet. Inside the claim index, which holds queued jobs
    alone and ends with ``run_at``."""
    c = jobs.c
    oldest = sa.func.min(sa.case((c.run_at <= now_expr(dialect), c.run_at)))
    stmt = (
        sa.select(c.partition, sa.func.count(), age_expr(dialect, oldest))
        .where(c.cluster == cluster, c.state == QUEUED)
        .group_by(c.partition)
    )
    return {int(p): PartitionLoad(int(n), None if age is None else max(0.0, float(age)))
            for p, n, age in conn.execute(stmt)}


def in_flight_by_node(conn: sa.Connection, cluster: str) -> dict[str, int]:
    """Running jobs per claimer (inside the running index)."""
    c = jobs.c
    stmt = (sa.select(c.claimed_by, sa.func.count())
            .where(c.cluster == cluster, c.state == RUNNING).group_by(c.claimed_by))
    return {str(node): int(n) for node, n in conn.execute(stmt) if node is not None}


def backlog_by_task(conn: sa.Connection, cluster: str) -> dict[str, int]:
    c = jobs.c
    stmt = (sa.select(c.task, sa.func.count())
            .where(c.cluster == cluster, c.state == QUEUED).group_by(c.task))
    return {str(t): int(n) for t, n in conn.execute(stmt)}


@dataclass(frozen=True)
class RecentAttempt:
    """An attempt that ended lately: its task, outcome, run time and how long ago it ended."""

    task: str
    outcome: str
    seconds: float | None
    ago: float


def recent_attempts(conn: sa.Connection, dialect: str, cluster: str,
                    limit: int = RECENT_ATTEMPTS) -> list[RecentAttempt]:
    """The newest ``limit`` attempt rows of the cluster, newest first."""
    a = attempts.c
    newest = (sa.select(a.job_id, a.outcome, a.started_at, a.finished_at,
                        age_expr(dialect, a.finished_at))
              .order_by(a.id.desc()).limit(limit).subquery())
    stmt = (sa.select(jobs.c.task, newest.c.outcome, newest.c.started_at, newest.c.finished_at,
                      newest.c.age)
            .join(jobs, jobs.c.id == newest.c.job_id).where(jobs.c.cluster == cluster))
    found = []
    for task, outcome, started, finished, age in conn.execute(stmt):
        took = (finished - started).total_seconds() if started and finished else None
        found.append(RecentAttempt(str(task), str(outcome), took, max(0.0, float(age or 0))))
    found.sort(key=lambda r: r.ago)
    return found


@dataclass(frozen=True)
class JobFilter:
    """What the jobs screen asks for; ``None``: any."""

    state: str | None = None
    task: str | None = None
    key: str | None = None
    partition: int | None = None
    #: Enqueued at most this many seconds ago.
    within: float | None = None
    limit: int = 100


def find_jobs(conn: sa.Connection, dialect: str, cluster: str, f: JobFilter) -> list[JobRecord]:
    """Jobs matching ``f``, newest first."""
    c = jobs.c
    stmt = sa.select(jobs).where(c.cluster == cluster)
    if f.state is not None:
        if f.state not in JOB_STATES:
            raise ValueError(f"unknown job state {f.state!r}; one of {', '.join(JOB_STATES)}")
        stmt = stmt.where(c.state == f.state)
    if f.task:
        stmt = stmt.where(c.task == f.task)
    if f.key:
        stmt = stmt.where(c.key == f.key)
    if f.partition is not None:
        stmt = stmt.where(c.partition == f.partition)
    if f.within is not None:
        stmt = stmt.where(c.enqueued_at >= now_expr(dialect, -f.within))
    return [_record(r) for r in conn.execute(stmt.order_by(c.id.desc()).limit(f.limit))]


@dataclass(frozen=True)
class BlockedKey:
    """An ordered key with jobs waiting behind its head, the job that must finish first."""

    task: str
    key: str
    head: int
    state: str
    claimed_by: str | None
    run_at: datetime | None
    last_error: str | None
    waiting: int


def blocked_key_heads(conn: sa.Connection, cluster: str, limit: int = 50) -> list[BlockedKey]:
    """Ordered keys whose head holds back at least one later job, most jobs waiting first.

    Read inside ``ix_ringwork_jobs_ordered`` (the jobs that hold an ordered key, and no other).
    """
    c = jobs.c
    holders = (
        sa.select(c.task, c.key, sa.func.min(c.id).label("head"),
                  (sa.func.count() - 1).label("waiting"))
        .where(c.cluster == cluster, sa.text(HOLDS_KEY))
        .group_by(c.task, c.key).having(sa.func.count() > 1)
        .order_by(sa.desc("waiting"), c.task, c.key).limit(limit).subquery()
    )
    stmt = (sa.select(holders.c.task, holders.c.key, holders.c.head, c.state, c.claimed_by,
                      c.run_at, c.last_error, holders.c.waiting)
            .join(jobs, jobs.c.id == holders.c.head)
            .order_by(holders.c.waiting.desc(), holders.c.task, holders.c.key))
    return [BlockedKey(**r._asdict()) for r in conn.execute(stmt)]


def has_dead(conn: sa.Connection, cluster: str) -> bool:
    """Whether the cluster has a dead job: one probe into ``ix_ringwork_jobs_finished`` (its
    predicate repeated as a literal, so both planners see that the index applies)."""
    c = jobs.c
    stmt: sa.Select[Any] = (sa.select(sa.literal_column("1")).select_from(jobs)
            .where(c.cluster == cluster, c.state == sa.literal_column("'dead'"),
                   sa.text("state IN ('succeeded', 'cancelled', 'dead')"))
            .limit(sa.literal_column("1")))
    return conn.execute(stmt).first() is not None


def ping(conn: sa.Connection) -> Any:
    """One round trip: whether the database answers (``/healthz``)."""
    return conn.execute(sa.select(sa.literal(1))).scalar_one()
