"""The referee in SQL: the cluster row, the leader term and the partition epochs.

These are the facts that must never be wrong; each changes only by compare-and-set or under a
row lock (see :mod:`ringwork.protocol.referee` for the contract, shared with the in-memory twin).
Moving a partition also re-queues its jobs still running under an older epoch whose claimer is
dead, in the same transaction, which is why the job table (and the registry's rows) appear here;
the jobs of live claimers keep their claims (fenced by job). The node registry is
:mod:`ringwork.store.registry`.

Threads: each function runs inside a transaction opened by :class:`ringwork.store.Store` -- a
write transaction (``BEGIN IMMEDIATE`` on SQLite) for anything that changes a row -- on the
node's protocol thread (in the worker or the node child process), except :func:`ensure_cluster`,
which runs once, on whichever thread opens the store first, and the reads ``ringwork status``
makes.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import sqlalchemy as sa

from ringwork.errors import PartitionCountMismatch
from ringwork.protocol.referee import Ownership, TermRecord
from ringwork.store.clock import age_expr, now_expr
from ringwork.store.jobs import back_to_queue, record_attempts
from ringwork.store.schema import RUNNING, clusters, dialect_insert, jobs, nodes, partitions


def ensure_cluster(conn: sa.Connection, dialect: str, cluster: str, count: int) -> None:
    """Create the cluster row and its partition rows if missing; check the partition count."""
    conn.execute(
        dialect_insert(dialect, clusters)
        .values(name=cluster, partitions=count, term=0, node_seq=0, created_at=now_expr(dialect))
        .on_conflict_do_nothing(index_elements=[clusters.c.name])
    )
    stored = conn.execute(
        sa.select(clusters.c.partitions).where(clusters.c.name == cluster)
    ).scalar_one()
    if stored != count:
        raise PartitionCountMismatch(
            f"cluster {cluster!r} has {stored} partitions in the database, the app says {count}"
        )
    have = conn.execute(
        sa.select(sa.func.count()).select_from(partitions).where(partitions.c.cluster == cluster)
    ).scalar_one()
    if have < count:
        conn.execute(
            dialect_insert(dialect, partitions)
            .values([{"cluster": cluster, "partition": p, "epoch": 0} for p in range(count)])
            .on_conflict_do_nothing(index_elements=[partitions.c.cluster, partitions.c.partition])
        )


def read_term(conn: sa.Connection, cluster: str) -> TermRecord:
    row = conn.execute(
        sa.select(clusters.c.term, clusters.c.leader).where(clusters.c.name == cluster)
    ).one()
    return TermRecord(term=row.term, leader=row.leader)


def claim_leadership(conn: sa.Connection, cluster: str, node_id: str, seen_term: int) -> int | None:
    stmt = (
        sa.update(clusters)
        .where(clusters.c.name == cluster, clusters.c.term == seen_term)
        .values(term=clusters.c.term + 1, leader=node_id)
        .returning(clusters.c.term)
    )
    return conn.execute(stmt).scalar()


def assign(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    leader: str,
    term: int,
    owners: Mapping[int, str | None],
    keep: Collection[str] = (),
    stale_after: float = math.inf,
) -> dict[int, int] | None:
    """Move partitions under ``(term, leader)``; the new epochs, or ``None`` if stale.

    Jobs running in the moved partitions keep their claims unless their claimer is dead (see
    :func:`_claimer_dead`): a rebalance between live nodes re-runs nothing and waits for
    nothing."""
    if not _leads(conn, cluster, leader, term):
        return None
    if not owners:
        return {}
    parts = sorted(owners)
    p = partitions.c
    in_cluster = sa.and_(p.cluster == cluster, p.partition.in_(parts))
    # Lock in partition order, as claims do, so the two never deadlock.
    conn.execute(sa.select(p.partition).where(in_cluster).order_by(p.partition).with_for_update())
    epochs: dict[int, int] = dict(
        conn.execute(
            sa.update(partitions)
            .where(in_cluster)
            .values(
                owner=sa.case({q: owners[q] for q in parts}, value=p.partition),
                epoch=p.epoch + 1,
            )
            .returning(p.partition, p.epoch)
        ).all()
    )
    _requeue_lost(conn, dialect, cluster, parts, keep, stale_after)
    return epochs


def requeue_orphans(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    leader: str,
    term: int,
    keep: Collection[str],
    stale_after: float,
) -> int | None:
    """The leader's sweep: re-queue running jobs of dead claimers in partitions that moved since
    the claim (a node carried them past a rebalance, then died); how many, or ``None`` if our
    term is over. A probe of the running-jobs index: running jobs are few."""
    if not _leads(conn, cluster, leader, term):
        return None
    return _requeue_lost(conn, dialect, cluster, None, keep, stale_after)


def _leads(conn: sa.Connection, cluster: str, leader: str, term: int) -> bool:
    row = conn.execute(
        sa.select(clusters.c.term, clusters.c.leader)
        .where(clusters.c.name == cluster)
        .with_for_update(read=True)  # a concurrent term CAS waits for us (no-op on SQLite)
    ).one()
    return bool(row.term == term and row.leader == leader)


def _claimer_dead(
    dialect: str, keep: Collection[str], stale_after: float
) -> sa.ColumnElement[bool]:
    """A job's claimer is dead when it is no member (``keep``) and its registry row is gone or
    ``stale_after`` old by the database's clock. A live node touches its row every poll and
    stops claiming before the row can look that old (ringwork.protocol.follower), so its
    running jobs keep their claims however often their partitions move."""
    c, n = jobs.c, nodes.c
    row = sa.and_(n.cluster == c.cluster, n.node_id == c.claimed_by)
    if not math.isinf(stale_after):
        row = sa.and_(row, age_expr(dialect, n.last_seen) < stale_after)
    dead = ~sa.exists(sa.select(sa.literal(1)).select_from(nodes).where(row))
    if keep:
        dead = sa.and_(c.claimed_by.not_in(sorted(keep)), dead)
    return dead


def _requeue_lost(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    parts: list[int] | None,
    keep: Collection[str],
    stale_after: float,
) -> int:
    """Jobs still running under an older epoch (of ``parts``, or of any partition) whose
    claimer is dead lost their worker.

    The attempt was counted at claim time, so a job whose attempts are used up goes dead; one
    whose cancel was requested ends ``cancelled`` instead of running again.
    """
    c = jobs.c
    current_epoch = (
        sa.select(partitions.c.epoch)
        .where(partitions.c.cluster == c.cluster, partitions.c.partition == c.partition)
        .scalar_subquery()
    )
    lost_error = (
        sa.literal("worker ")
        + sa.func.coalesce(c.claimed_by, "?")
        + sa.literal(" was lost while running the job (it stopped reaching the cluster)")
    )
    where = [c.cluster == cluster, c.state == RUNNING, c.claim_epoch < current_epoch,
             _claimer_dead(dialect, keep, stale_after)]
    if parts is not None:
        where.append(c.partition.in_(parts))
    # The claimers first (the update clears ``claimed_by``), their rows locked so that a late
    # completion waits for this transaction, then finds the job re-queued: fenced.
    lost: dict[int, str] = dict(conn.execute(
        sa.select(c.id, c.claimed_by).where(*where).with_for_update(of=jobs)).all())
    if not lost:
        return 0
    rows = list(conn.execute(
        sa.update(jobs).where(c.id.in_(sorted(lost)), *where)
        .values(back_to_queue(dialect, lost_error, keep_error=True))
        .returning(c.id, c.attempts, c.claim_epoch, c.started_at)))
    record_attempts(conn, dialect, [
        {"job_id": r.id, "attempt": r.attempts, "node": lost[r.id], "epoch": r.claim_epoch,
         "started_at": r.started_at, "outcome": "lost",
         "error": f"worker {lost[r.id]} was lost while running the job "
                  "(it stopped reaching the cluster)"}
        for r in rows])
    return len(rows)


def read_partitions(conn: sa.Connection, cluster: str) -> dict[int, Ownership]:
    p = partitions.c
    rows = conn.execute(
        sa.select(p.partition, p.owner, p.epoch).where(p.cluster == cluster).order_by(p.partition)
    )
    return {r.partition: Ownership(r.partition, r.owner, r.epoch) for r in rows}
