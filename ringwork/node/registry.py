"""The protocol's node registry over the SQL store, and the endpoints it has read so far.

The core reaches the registry through referee operations, which run on the referee pool thread
(``ringwork-ref``, see :mod:`ringwork.node.referee_calls`); the protocol thread reads the
endpoints it remembers to dial peers and to follow the leader's PUB. So the endpoint maps are
written by the pool thread and read by the protocol thread, under a lock. ``register`` and
``unregister`` run on whichever thread starts and stops the node.

A row can disappear under a live node: the leader's housekeeping deletes rows untouched for the
node retention (an hour by default), and a process paused that long (a stopped VM, SIGSTOP)
comes back to find its row gone. Its touch then registers it again -- a fresh
``registered_seq``, like any node that joins late -- before the same poll reads the term, so
the protocol sees a registered node again and its Joins are accepted; until then it was simply
a dead node (a missing row is a stale one: docs/protocol.md, invariant 6).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING

from ringwork.errors import RingworkError
from ringwork.log import log_event
from ringwork.protocol.referee import NodeRecord, Ownership, TermRecord

if TYPE_CHECKING:
    from ringwork.store import Store
    from ringwork.store.registry import Registration


class SqlRegistry:
    """The protocol's registry view over the SQL store; remembers each node's endpoints."""

    def __init__(self, store: Store, pub_endpoint: str, wake_endpoint: str | None) -> None:
        self.store = store
        self.pub_endpoint = pub_endpoint
        self.wake_endpoint = wake_endpoint
        #: Whether the node is a member, recorded with every touch. Written by the protocol
        #: thread, read by the pool thread (a bool: a stale read is fixed by the next touch).
        self.joined = False
        self.endpoint = ""  # our ROUTER's, kept from register() to register again
        self._lock = threading.Lock()  # guards the two maps (pool thread writes, node reads)
        self._pub_endpoints: dict[str, str] = {}
        self._router_endpoints: dict[str, str] = {}

    def register(self, node_id: str, endpoint: str) -> int:
        self.endpoint = endpoint
        return self.store.register_node(
            node_id, endpoint, pub_endpoint=self.pub_endpoint, wake_endpoint=self.wake_endpoint
        )

    def register_counted(self, node_id: str, endpoint: str) -> Registration:
        """:meth:`register`, also returning the cluster counter it bumped (the incarnation)."""
        self.endpoint = endpoint
        return self.store.register_counted(
            node_id, endpoint, pub_endpoint=self.pub_endpoint, wake_endpoint=self.wake_endpoint
        )

    def touch(self, node_id: str) -> None:
        if self.store.touch_node(node_id, joined=self.joined):
            return
        # Our row was pruned while we could not touch it: come back as a registered node.
        seq = self.register(node_id, self.endpoint)
        if self.joined:
            self.store.mark_joined(node_id, True)
        log_event("node_reregistered", logging.WARNING, node=node_id, seq=seq)

    def record_joined(self, node_id: str, joined: bool) -> None:
        """Record a change of membership at once, not at the next touch (for ``status``)."""
        with contextlib.suppress(RingworkError):  # if it fails, the next touch records it
            self.store.mark_joined(node_id, joined)

    def read_poll(self, with_partitions: bool) -> tuple[TermRecord, list[NodeRecord],
                                                        dict[int, Ownership]]:
        """A poll's reads in one round trip (:class:`~ringwork.protocol.referee.PollReader`)."""
        term, rows, owned = self.store.read_poll(with_partitions)
        return term, self._remembered(rows), owned

    def read_nodes(self) -> list[NodeRecord]:
        return self._remembered(self.store.list_nodes())

    def _remembered(self, rows: list[NodeRecord]) -> list[NodeRecord]:
        """Keep each node's endpoints for the driver; the core's records."""
        with self._lock:
            for row in rows:
                self._router_endpoints[row.node_id] = row.endpoint
                if row.pub_endpoint:
                    self._pub_endpoints[row.node_id] = row.pub_endpoint
        return [NodeRecord(r.node_id, r.endpoint, r.registered_seq, r.age) for r in rows]

    def unregister(self, node_id: str) -> None:
        self.store.deregister_node(node_id)

    def router_endpoint(self, node_id: str) -> str | None:
        """Where ``node_id``'s ROUTER listens, as last read (None: not read yet)."""
        with self._lock:
            return self._router_endpoints.get(node_id)

    def pub_endpoint_of(self, node_id: str) -> str | None:
        """Where ``node_id``'s PUB listens, as last read (None: not read yet)."""
        with self._lock:
            return self._pub_endpoints.get(node_id)
