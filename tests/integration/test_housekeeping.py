"""The leader's housekeeping in real nodes: only the leader prunes, a new leader takes over,
dead nodes' rows leave ``status``, and a node whose row went comes back registered.

In-thread nodes (``Node`` in this process, the same class the node process runs), each with a
store of its own like two processes, and a housekeeping round every 0.2 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from ringwork.app import App
from ringwork.node import Node
from ringwork.protocol.config import ProtocolConfig
from ringwork.status import collect
from ringwork.store import Store
from ringwork.store.retention import RetentionPolicy
from ringwork.store.schema import nodes
from tests.retention_support import age_node, make_jobs, remaining
from tests.support import wait_for

POLICY = RetentionPolicy(succeeded=100, cancelled=100, dead=100, nodes=3600, interval=0.2,
                         batch=3, pause=0.01)


def config(store: Store) -> ProtocolConfig:
    return ProtocolConfig.for_session(session_timeout=1.5, heartbeat_interval=0.2,
                                      revoke_timeout=2.0, cluster=store.cluster,
                                      partitions=store.partitions)


class Calls:
    """Counts a store's prune calls (made on its node's housekeeping thread)."""

    def __init__(self, store: Store) -> None:
        self.lock = threading.Lock()
        self.jobs = 0
        self.nodes = 0
        prune_jobs, prune_nodes = store.prune_jobs, store.prune_nodes

        def jobs(*args: object, **kwargs: object) -> int:
            with self.lock:
                self.jobs += 1
            return prune_jobs(*args, **kwargs)  # type: ignore[arg-type]

        def nodes_(*args: object, **kwargs: object) -> list[str]:
            with self.lock:
                self.nodes += 1
            return prune_nodes(*args, **kwargs)  # type: ignore[arg-type]

        store.prune_jobs = jobs  # type: ignore[method-assign]
        store.prune_nodes = nodes_  # type: ignore[method-assign]


def confirm_all(node: list[Node]) -> Callable[[str, frozenset[int]], None]:
    def listener(kind: str, partitions: frozenset[int]) -> None:
        if kind == "revoked" and node:
            node[0].revoke_done(partitions)
    return listener


def started(store: Store) -> Node:
    holder: list[Node] = []
    node = Node(store, config(store), retention=POLICY)
    holder.append(node)
    node.start(confirm_all(holder), None)
    return node


def test_only_the_leader_prunes_and_a_new_leader_takes_over(
    store: Store, make_store: Callable[..., Store]
) -> None:
    other = make_store()
    other.open()
    calls = {store: Calls(store), other: Calls(other)}
    running: list[Node] = []
    try:
        a = started(store)
        running.append(a)
        wait_for(lambda: a.role == "leader", 30, message="a leads")
        b = started(other)
        running.append(b)
        wait_for(lambda: b.role == "follower", 30, message="b follows")
        old = make_jobs(store, [("succeeded", 1000)] * 7 + [("dead", 1000), ("dead", 10)])
        wait_for(lambda: remaining(store) == {old[-1]}, 30, message="the leader pruned")
        assert calls[store].jobs >= 3  # batches of 3
        assert calls[other].jobs == 0 and calls[other].nodes == 0, "a follower pruned"
        running.remove(a)
        a.stop()
        wait_for(lambda: b.role == "leader", 30, message="b leads after a left")
        more = make_jobs(store, [("cancelled", 1000)])
        wait_for(lambda: not remaining(store) & set(more), 30, message="the new leader pruned")
        assert calls[other].jobs > 0
    finally:
        for node in running:
            node.stop()


def test_dead_nodes_leave_status(store: Store, db_url: str) -> None:
    app = App(db_url, partitions=store.partitions, cluster=store.cluster)
    store.register_node("ghost", "tcp://127.0.0.1:1")
    age_node(store, "ghost", 436 + 3600)
    try:
        roles = {n["id"]: n["role"] for n in collect(app)["nodes"]}
        assert roles == {"ghost": "stale"}
        node = started(store)
        try:
            wait_for(lambda: [n["id"] for n in collect(app)["nodes"]] == [node.node_id], 30,
                     message="the ghost left status")
        finally:
            node.stop()
    finally:
        app.close()


def test_a_live_node_whose_row_was_deleted_registers_again(
    store: Store, make_store: Callable[..., Store]
) -> None:
    """The race the leader's delete can lose to a node that was only paused: its next touch
    puts the row back, and it stays a member (no rejoin is refused, no partition is lost)."""
    other = make_store()
    other.open()
    running: list[Node] = []
    try:
        a = started(store)
        running.append(a)
        wait_for(lambda: a.role == "leader", 30, message="a leads")
        b = started(other)
        running.append(b)
        wait_for(lambda: b.role == "follower" and b.claimable(), 30, message="b owns some")
        with store.engine.begin() as conn:
            conn.execute(sa.delete(nodes).where(nodes.c.cluster == store.cluster,
                                                nodes.c.node_id == b.node_id))
        wait_for(lambda: b.node_id in {n.node_id for n in store.list_nodes()}, 30,
                 message="b's row is back")
        wait_for(lambda: b.role == "follower" and b.claimable(), 30, message="b still owns")
        [row] = [n for n in store.list_nodes() if n.node_id == b.node_id]
        assert row.joined is True
    finally:
        for node in reversed(running):
            node.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_retention_no_housekeeping_thread(store: Store) -> None:
    node = Node(store, config(store))
    node.start(lambda kind, parts: None, None)
    try:
        names = {t.name for t in threading.enumerate()}
        assert "ringwork-housekeeping" not in names
    finally:
        node.stop()
