"""The node registry in SQL: who is in the cluster, at which endpoints, in which join order.

A node registers once (getting its ``registered_seq``, its leader priority), then touches its
row every heartbeat so others can tell it is alive by the row's age, which is computed by the
database's clock in the statement that reads it (:mod:`.clock`), never by comparing two
processes' clocks. Rows are :class:`ringwork.protocol.referee.NodeRecord`, the record the
protocol's registry contract defines: the protocol cannot import the store, so the one record
lives there and the store fills in the columns only it keeps (PUB and wake endpoints, joined,
last_seen).

Threads: each function runs inside a transaction of :class:`~ringwork.store.Store` (a write
one, ``BEGIN IMMEDIATE`` on SQLite, for the writes). Writes come from the node's protocol
thread (in the worker, or in the node child process); :func:`list_nodes` also from the
wake-up sender (any enqueueing thread) and ``ringwork status``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa

from ringwork.protocol.referee import NodeRecord
from ringwork.store.clock import age_expr, now_expr
from ringwork.store.schema import clusters, dialect_insert, nodes


def register_node(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    node_id: str,
    endpoint: str,
    pub_endpoint: str | None,
    wake_endpoint: str | None,
    concurrency: int | None = None,
    version: str | None = None,
) -> int:
    """Register (or refresh) a node; its ``registered_seq``, kept across re-registration.

    Bumping the cluster's counter row-locks it, so concurrent registrations get their seqs in
    commit order: a node that sees another's row also sees every lower seq.
    """
    return register_counted(
        conn, dialect, cluster, node_id, endpoint, pub_endpoint, wake_endpoint, concurrency,
        version,
    ).seq


class Registration(NamedTuple):
    """What a registration returns: the row's ``registered_seq`` (the leader priority, kept while
    the row lives) and the cluster's counter as this registration bumped it (``counter``: higher
    than at every earlier registration of any node in the cluster, whatever the clocks do)."""

    seq: int
    counter: int


def register_counted(
    conn: sa.Connection,
    dialect: str,
    cluster: str,
    node_id: str,
    endpoint: str,
    pub_endpoint: str | None,
    wake_endpoint: str | None,
    concurrency: int | None = None,
    version: str | None = None,
) -> Registration:
    """:func:`register_node`, also returning the counter it bumped.

    A named node (static membership) re-registers under the id of its previous process, whose
    row may still be there with its seq; the counter is what tells the new process from the old.
    ``concurrency`` and ``version`` are what the node tells about itself (the dashboard's nodes
    screen shows them).
    """
    seq = conn.execute(
        sa.update(clusters)
        .where(clusters.c.name == cluster)
        .values(node_seq=clusters.c.node_seq + 1)
        .returning(clusters.c.node_seq)
    ).scalar_one()
    now = now_expr(dialect)
    stmt = dialect_insert(dialect, nodes).values(
        cluster=cluster,
        node_id=node_id,
        endpoint=endpoint,
        pub_endpoint=pub_endpoint,
        wake_endpoint=wake_endpoint,
        registered_seq=seq,
        last_seen=now,
        joined=False,
        concurrency=concurrency,
        version=version,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[nodes.c.cluster, nodes.c.node_id],
        set_={
            "endpoint": stmt.excluded.endpoint,
            "pub_endpoint": stmt.excluded.pub_endpoint,
            "wake_endpoint": stmt.excluded.wake_endpoint,
            "last_seen": stmt.excluded.last_seen,
            "joined": stmt.excluded.joined,
            "concurrency": stmt.excluded.concurrency,
            "version": stmt.excluded.version,
        },
    ).returning(nodes.c.registered_seq)
    return Registration(int(conn.execute(stmt).scalar_one()), int(seq))


def touch_node(
    conn: sa.Connection, dialect: str, cluster: str, node_id: str, joined: bool | None = None
) -> bool:
    """Refresh ``last_seen`` (and record ``joined`` when given); False: the node has no row."""
    values: dict[str, Any] = {"last_seen": now_expr(dialect)}
    if joined is not None:
        values["joined"] = joined
    mine = sa.and_(nodes.c.cluster == cluster, nodes.c.node_id == node_id)
    return bool(conn.execute(sa.update(nodes).where(mine).values(values)).rowcount)


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
            n.concurrency,
            n.version,
            age_expr(dialect, n.last_seen),
        )
        .where(n.cluster == cluster)
        .order_by(n.registered_seq)
    ).all()
    return [NodeRecord(**{**r._mapping, "age": max(0.0, float(r.age))}) for r in rows]
