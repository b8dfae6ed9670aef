"""What a node's referee poll reads -- the term, the registry and (for a follower) the partitions
-- in one round trip.

Every node polls about once a second, so on a cluster of many idle workers these reads are most
of what the database does. They used to be three statements (three round trips, three
snapshots); on PostgreSQL they are now one statement whose three parts come back as JSON
aggregates, read in one snapshot. SQLite reads them in one transaction (its reads are local
calls, not round trips). The touch of our own row is not folded in: the protocol needs it
committed *before* the term is read (:mod:`ringwork.protocol.operations`), so it stays a
statement of its own.

Threads: the node's referee pool (``ringwork-ref``), inside a transaction of the store.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by

from ringwork.protocol.referee import NodeRecord, Ownership, TermRecord
from ringwork.store import referee, registry
from ringwork.store.clock import age_expr
from ringwork.store.schema import clusters, nodes, partitions

PollRead = tuple[TermRecord, list[NodeRecord], dict[int, Ownership]]

#: The registry columns a poll reads, in the order of each node's JSON array.
_NODE_FIELDS = ("node_id", "endpoint", "pub_endpoint", "wake_endpoint", "registered_seq",
                "last_seen", "joined", "age")


def read(conn: sa.Connection, dialect: str, cluster: str, with_partitions: bool) -> PollRead:
    """The term, every registered node (by join order) and, if asked, every partition's row."""
    if dialect != "postgresql":
        term = referee.read_term(conn, cluster)
        found = registry.list_nodes(conn, dialect, cluster)
        owned = referee.read_partitions(conn, cluster) if with_partitions else {}
        return term, found, owned
    row = conn.execute(_statement(cluster, with_partitions)).one()
    leader_term, leader = _decoded(row.term)
    found = [_node(values) for values in _decoded(row.nodes) or ()]
    owned = {part: Ownership(part, owner, epoch)
             for part, owner, epoch in _decoded(row.parts) or ()}
    return TermRecord(term=leader_term, leader=leader), found, owned


def _statement(cluster: str, with_partitions: bool) -> sa.Select[Any]:
    c, n, p = clusters.c, nodes.c, partitions.c
    term = (sa.select(sa.func.json_build_array(c.term, c.leader))
            .where(c.name == cluster).scalar_subquery())
    rows = sa.select(n.node_id, n.endpoint, n.pub_endpoint, n.wake_endpoint, n.registered_seq,
                     n.last_seen, n.joined, age_expr("postgresql", n.last_seen),
                     ).where(n.cluster == cluster).subquery()
    found = sa.select(sa.func.json_agg(aggregate_order_by(
        sa.func.json_build_array(*(rows.c[name] for name in _NODE_FIELDS)),
        rows.c.registered_seq))).scalar_subquery()
    owned: Any = sa.null()
    if with_partitions:
        owned = (sa.select(sa.func.json_agg(aggregate_order_by(
            sa.func.json_build_array(p.partition, p.owner, p.epoch), p.partition)))
            .where(p.cluster == cluster).scalar_subquery())
    return sa.select(term.label("term"), found.label("nodes"), owned.label("parts"))


def _node(values: list[Any]) -> NodeRecord:
    fields = dict(zip(_NODE_FIELDS, values, strict=True))
    seen = fields.pop("last_seen")
    when = datetime.fromisoformat(seen) if isinstance(seen, str) else None
    if when is not None:
        when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(
            timezone.utc)
    age = max(0.0, float(fields.pop("age")))
    return NodeRecord(**fields, age=age, last_seen=when)


def _decoded(value: Any) -> Any:
    """A JSON column as psycopg hands it (already decoded), or text from another driver."""
    return json.loads(value) if isinstance(value, str) else value
