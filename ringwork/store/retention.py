"""Retention: deleting finished jobs and the registry rows of long-dead nodes, in small batches.

A job system's table grows by every job it ever ran unless something deletes the finished ones.
The leader's housekeeping (:mod:`ringwork.node.housekeeping`) and ``ringwork jobs APP prune``
call these statements. Each call is one short statement of its own transaction: at most
``limit`` rows, picked oldest first from the partial index ``ix_ringwork_jobs_finished``
(finished states only, ordered by ``finished_at`` inside a state), so a batch holds SQLite's
database-wide write lock for a few milliseconds and PostgreSQL's row locks only on rows no
claim can want.

Safety of the job delete, per database:

* The age is the database's clock (:func:`~ringwork.store.clock.now_expr`), never the host's.
* The outer ``DELETE`` repeats the state and age conditions, not just ``id IN (...)``: on
  PostgreSQL a row a concurrent ``retry`` re-queued after the sub-select read it is locked,
  re-checked against the outer conditions (READ COMMITTED's re-evaluation) and skipped. So an
  unfinished job is never deleted.
* States are literals (the partial index's predicate is repeated as a literal too), for the
  reasons in :mod:`.schema`; so is the batch size (see :func:`prune_jobs`).

Threads: each function runs inside a transaction of :class:`~ringwork.store.Store` on the
caller's thread: the node's ``ringwork-housekeeping`` thread, or the CLI's main thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ringwork.errors import ConfigurationError
from ringwork.store.clock import now_expr
from ringwork.store.schema import FINISHED_STATES, attempts, clusters, jobs, nodes, partitions

#: Rows one prune statement deletes at most: a few milliseconds of SQLite's write lock.
BATCH_ROWS = 1000


@dataclass(frozen=True)
class RetentionPolicy:
    """How long finished jobs and dead nodes' rows are kept (seconds; 0 keeps them forever),
    and how the leader paces its pruning."""

    succeeded: float = 86400.0
    cancelled: float = 7 * 86400.0
    dead: float = 30 * 86400.0
    nodes: float = 3600.0
    #: Seconds between two housekeeping rounds of the leader.
    interval: float = 60.0
    batch: int = BATCH_ROWS
    #: Pause between two batches, so other writers get the lock in between.
    pause: float = 0.05

    def ages(self) -> dict[str, float]:
        """State -> age for the states that are pruned at all."""
        ages = {"succeeded": self.succeeded, "cancelled": self.cancelled, "dead": self.dead}
        return {state: age for state, age in ages.items() if age > 0}


def _state(state: str) -> sa.ColumnElement[str]:
    if state not in FINISHED_STATES:
        raise ConfigurationError(
            f"only finished jobs can be pruned ({', '.join(FINISHED_STATES)}), not {state!r}"
        )
    return sa.literal_column(f"'{state}'")


def prune_jobs(
    conn: sa.Connection, dialect: str, cluster: str, state: str, older_than: float, limit: int
) -> int:
    """Delete up to ``limit`` jobs in ``state`` finished ``older_than`` seconds ago or more."""
    c = jobs.c
    finished: list[sa.ColumnElement[str]] = [sa.literal_column(f"'{s}'") for s in FINISHED_STATES]
    cutoff = now_expr(dialect, -older_than)
    due = sa.and_(
        c.cluster == cluster,
        c.state.in_(finished),  # the partial index's own predicate, as literals
        c.state == _state(state),
        c.finished_at < cutoff,
    )
    # PostgreSQL runs our statements with generic plans, where neither the cutoff nor the
    # batch's size is known: given ``id IN (sub-select)`` it hash-joined the batch against a
    # scan of every due row (120 ms a batch with 1M finished rows). ``id = ANY(ARRAY(...))``
    # makes the batch an array computed once, and each row is reached by its primary key.
    batch: sa.ColumnElement[int] = sa.literal_column(str(int(limit)))
    picked = sa.select(c.id).where(due).order_by(c.finished_at).limit(batch).scalar_subquery()
    pg = dialect == "postgresql"
    chosen = c.id == sa.any_(sa.func.array(picked)) if pg else c.id.in_(picked)
    stmt = sa.delete(jobs).where(chosen, due).returning(c.id)
    gone = [int(i) for i in conn.execute(stmt).scalars()]
    if gone:  # their history goes in the same batch (one range of the job_id index each)
        conn.execute(sa.delete(attempts).where(attempts.c.job_id.in_(gone)))
    return len(gone)


def prune_nodes(
    conn: sa.Connection, dialect: str, cluster: str, older_than: float, keep: str | None
) -> list[str]:
    """Delete the registry rows of nodes not seen for ``older_than`` seconds; their ids.

    Never the row of ``keep`` (the caller), of the node the term names as leader, or of a node
    that still owns a partition: the leader moves a dead owner's partitions within a session
    timeout, long before its row is old enough, and until then the row stays for ``status``.
    A node that comes back after its row went re-registers at its next touch
    (:meth:`ringwork.node.registry.SqlRegistry.touch`).
    """
    n = nodes.c
    owns = (
        sa.select(partitions.c.partition)
        .where(partitions.c.cluster == cluster, partitions.c.owner == n.node_id)
        .exists()
    )
    leader = sa.select(clusters.c.leader).where(clusters.c.name == cluster).scalar_subquery()
    stmt = (
        sa.delete(nodes)
        .where(
            n.cluster == cluster,
            n.last_seen < now_expr(dialect, -older_than),
            n.node_id != sa.func.coalesce(leader, ""),
            ~owns,
        )
        .returning(n.node_id)
    )
    if keep is not None:
        stmt = stmt.where(n.node_id != keep)
    return [str(i) for i in conn.execute(stmt).scalars()]
