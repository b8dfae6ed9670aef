"""Cluster status from the database alone: who leads which term, who owns what, what is queued.

The database is the referee, so it is also the one place that knows the whole picture: the term
row names the leader, the partitions table the owners and epochs, the registry every node with
its last heartbeat (``last_seen`` is refreshed by each node's registry poll). A node whose row is
older than the session timeout is reported as ``stale``: it is dead or cut off, and the leader
will (or already did) move its partitions. A live node that is not a member (it registered but
its join was never acknowledged -- a wrong CURVE key, a firewall -- and it owns nothing) is
``not joined``; its own log says why (``event=join_failed``).

Job counts cost the same on a table of a million finished jobs as on an empty one: queued and
running are exact, each finished state is counted up to ``jobs_cap`` and listed in
``jobs_capped`` beyond (:meth:`ringwork.store.Store.status_counts`). ``jobs`` stays a plain
state -> number map, so scripts that read or sum it keep working. ``blocked_keys`` names the
ordered keys a dead ``block_key_on_dead`` job holds (read inside an index of those jobs alone).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Protocol

from ringwork.store.reads import BLOCKED_KEYS_SHOWN, STATUS_CAP

if TYPE_CHECKING:
    from ringwork.settings import Settings
    from ringwork.store import Store


class HasStore(Protocol):
    """What status reads of :class:`ringwork.App` (named, not imported: the dashboard, which
    the App imports, builds on this module)."""

    @property
    def store(self) -> Store: ...

    @property
    def settings(self) -> Settings: ...


def collect(app: HasStore) -> dict[str, Any]:
    """The status document (``ringwork status --json`` prints exactly this)."""
    store = app.store
    settings = app.settings
    term = store.read_term()
    owners = store.read_partitions()
    nodes = store.list_nodes()
    owned: dict[str, list[int]] = defaultdict(list)
    epochs: dict[str, dict[int, int]] = defaultdict(dict)
    unowned = []
    for p, row in sorted(owners.items()):
        if row.owner is None:
            unowned.append(p)
        else:
            owned[row.owner].append(p)
            epochs[row.owner][p] = row.epoch
    live_limit = settings.session_timeout
    node_docs = []
    for n in nodes:
        alive = n.age < live_limit
        if not alive:
            role = "stale"
        elif n.node_id == term.leader:
            role = "leader"
        else:
            # Outside the cluster and holding nothing. (Owning partitions means the leader took
            # it in: its own flag may lag the leader's assignment by a moment.)
            outside = n.joined is False and not owned.get(n.node_id)
            role = "not joined" if outside else "follower"
        node_docs.append(
            {
                "id": n.node_id,
                # Static membership: a named node's id is its name (``--node-name``), kept
                # across restarts; an unnamed one's id names its process, and is its name too.
                "name": n.node_id,
                "endpoint": n.endpoint,
                "pub_endpoint": n.pub_endpoint,
                "role": role,
                "priority": n.registered_seq,
                "partitions": owned.get(n.node_id, []),
                "last_heartbeat_age_s": round(n.age, 3),
                "last_heartbeat": n.last_seen.isoformat() if n.last_seen else None,
                # As the node registered (None: a version that did not record them).
                "concurrency": n.concurrency,
                "version": n.version,
            }
        )
    known = {n.node_id for n in nodes}
    orphans = {owner: parts for owner, parts in owned.items() if owner not in known}
    live = [n for n in node_docs if n["role"] != "stale"]
    leader_alive = any(n["role"] == "leader" for n in node_docs)
    counts, capped = store.status_counts()
    blocked = store.blocked_keys(BLOCKED_KEYS_SHOWN)
    return {
        "cluster": settings.cluster,
        "partition_count": settings.partitions,
        "term": term.term,
        "leader": term.leader if leader_alive else None,
        "last_leader": term.leader,
        "alive": bool(live),
        "nodes": node_docs,
        "unowned_partitions": unowned,
        "partitions_of_unregistered_owners": orphans,
        "jobs": counts,
        # Finished states holding more than JOBS_CAP jobs: their count above is JOBS_CAP.
        "jobs_capped": capped,
        "jobs_cap": STATUS_CAP,
        "backlog": {str(p): n for p, n in sorted(store.backlog_by_partition().items()) if n},
        # Ordered keys a dead job holds (block_key_on_dead), until it is retried or cancelled.
        "blocked_keys": [{"task": t, "key": k, "job": i}
                         for t, k, i in blocked[:BLOCKED_KEYS_SHOWN]],
        "blocked_keys_more": len(blocked) > BLOCKED_KEYS_SHOWN,
    }
