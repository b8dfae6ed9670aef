"""The referee in SQL: cluster row, leader term, partition epochs and the node registry.

These are the facts that must never be wrong; each changes only by compare-and-set or under a
row lock (see :mod:`ringwork.protocol.referee` for the contract, shared with the in-memory twin).
The functions run inside a transaction opened by :class:`ringwork.store.Store` -- a write
transaction (``BEGIN IMMEDIATE`` on SQLite) for anything that changes a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite

from ringwork.errors import PartitionCountMismatch
from ringwork.protocol.referee import Ownership, TermRecord
from ringwork.store.clock import age_expr, now_expr
from ringwork.store.jobs import RUNNING
from ringwork.store.schema import clusters, jobs, nodes, partitions


@dataclass(frozen=True)
class NodeRecord:
    """One registered node; ``registered_seq`` is its priority (lower joined earlier)."""

    node_id: str
    endpoint: str
    pub_endpoint: str | None
    wake_endpoint: str | None
    registered_seq: int
    last_seen: datetime
    #: A member as of the node's last write (``None``: not recorded by that node's version).
    joined: bool | None = None
    #: Seconds since ``last_seen``, computed in SQL by the database's clock at the read (see
    #: :mod:`ringwork.store.clock`), so the protocol never compares two processes' clocks.
    age: float = 0.0


def _insert(dialect: str, table: sa.Table) -> Any:
    return (pg.insert if dialect == "postgresql" else sqlite.insert)(table)


def ensure_cluster(conn: sa.Connection, dialect: str, cluster: str, count: int) -> None:
    """Create the cluster row and its partition rows if missing; check the partition count."""
    conn.execute(
        _insert(dialect, clusters)
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
            _insert(dialect, partitions)
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
) -> dict[int, int] | None:
    """Move partitions under ``(term, leader)``; the new epochs, or ``None`` if stale."""
    row = conn.execute(
        sa.select(clusters.c.term, clusters.c.leader)
        .where(clusters.c.name == cluster)
        .with_for_update(read=True)  # a concurrent term CAS waits for us (no-op on SQLite)
    ).one()
    if row.term != term or row.leader != leader:
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
    _requeue_lost(conn, dialect, cluster, parts)
    return epochs


def _requeue_lost(conn: sa.Connection, dialect: str, cluster: str, parts: list[int]) -> None:
    """Jobs still running in the moved partitions under an older epoch lost their worker.

    The attempt was counted at claim time, so a job whose attempts are used up goes dead.
    """
    c = jobs.c
    current_epoch = (
        sa.select(partitions.c.epoch)
        .where(partitions.c.cluster == c.cluster, partitions.c.partition == c.partition)
        .scalar_subquery()
    )
    exhausted = c.attempts >= c.max_attempts
    now = now_expr(dialect)
    lost_error = (
        sa.literal("worker ")
        + sa.func.coalesce(c.claimed_by, "?")
        + sa.literal(" was lost while running the job (its partition was reassigned)")
    )
    conn.execute(
        sa.update(jobs)
        .where(
            c.cluster == cluster,
            c.state == RUNNING,
            c.partition.in_(parts),
            c.claim_epoch < current_epoch,
        )
        .values(
            state=sa.case((exhausted, "dead"), else_="queued"),
            last_error=sa.case((exhausted, lost_error), else_=c.last_error),
            finished_at=sa.case((exhausted, now), else_=None),
            run_at=sa.case((exhausted, c.run_at), else_=now),
            claimed_by=sa.case((exhausted, c.claimed_by), else_=None),
        )
    )


def read_partitions(conn: sa.Connection, cluster: str) -> dict[int, Ownership]:
    p = partitions.c
    rows = conn.execute(
        sa.select(p.partition, p.owner, p.epoch).where(p.cluster == cluster).order_by(p.partition)
    )
    return {r.partition: Ownership(r.partition, r.owner, r.epoch) for r in rows}


def register_node(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    node_id: str,
    endpoint: str,
    pub_endpoint: str | None,
    wake_endpoint: str | None,
) -> int:
    """Register (or refresh) a node; its ``registered_seq``, kept across re-registration.

    Bumping the cluster's counter row-locks it, so concurrent registrations get their seqs in
    commit order: a node that sees another's row also sees every lower seq.
    """
    seq = conn.execute(
        sa.update(clusters)
        .where(clusters.c.name == cluster)
        .values(node_seq=clusters.c.node_seq + 1)
        .returning(clusters.c.node_seq)
    ).scalar_one()
    now = now_expr(dialect)
    stmt = _insert(dialect, nodes).values(
        cluster=cluster,
        node_id=node_id,
        endpoint=endpoint,
        pub_endpoint=pub_endpoint,
        wake_endpoint=wake_endpoint,
        registered_seq=seq,
        last_seen=now,
        joined=False,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[nodes.c.cluster, nodes.c.node_id],
        set_={
            "endpoint": stmt.excluded.endpoint,
            "pub_endpoint": stmt.excluded.pub_endpoint,
            "wake_endpoint": stmt.excluded.wake_endpoint,
            "last_seen": stmt.excluded.last_seen,
            "joined": stmt.excluded.joined,
        },
    ).returning(nodes.c.registered_seq)
    return int(conn.execute(stmt).scalar_one())


def touch_node(
    conn: sa.Connection, dialect: str, cluster: str, node_id: str, joined: bool | None = None
) -> None:
    """Refresh ``last_seen`` (and record ``joined`` when given)."""
    values: dict[str, Any] = {"last_seen": now_expr(dialect)}
    if joined is not None:
        values["joined"] = joined
    mine = sa.and_(nodes.c.cluster == cluster, nodes.c.node_id == node_id)
    conn.execute(sa.update(nodes).where(mine).values(values))


def mark_joined(conn: sa.Connection, cluster: str, node_id: str, joined: bool) -> None:
    """Record membership alone: ``last_seen`` is liveness, written only by the registry touch."""
    conn.execute(
        sa.update(nodes)
        .where(nodes.c.cluster == cluster, nodes.c.node_id == node_id)
        .values(joined=joined)
    )


def deregister_node(conn: sa.Connection, cluster: str, node_id: str) -> None:
    conn.execute(sa.delete(nodes).where(nodes.c.cluster == cluster, nodes.c.node_id == node_id))


def list_nodes(conn: sa.Connection, dialect: str, cluster: str) -> list[NodeRecord]:
    n = nodes.c
    rows = conn.execute(
        sa.select(
            n.node_id,
            n.endpoint,
            n.pub_endpoint,
            n.wake_endpoint,
            n.registered_seq,
            n.last_seen,
            n.joined,
            age_expr(dialect, n.last_seen),
        )
        .where(n.cluster == cluster)
        .order_by(n.registered_seq)
    ).all()
    return [NodeRecord(**{**r._asdict(), "age": max(0.0, float(r.age))}) for r in rows]
