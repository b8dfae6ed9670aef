"""The protocol's node registry over the SQL store, and the endpoints it has read so far.

The core reaches the registry through referee operations, which run on the referee pool thread
(``ringwork-ref``, see :mod:`ringwork.node.referee_calls`); the protocol thread reads the
endpoints it remembers to dial peers and to follow the leader's PUB. So the endpoint maps are
written by the pool thread and read by the protocol thread, under a lock. ``register`` and
``unregister`` run on whichever thread starts and stops the node.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

from ringwork.errors import RingworkError
from ringwork.protocol.referee import NodeRecord

if TYPE_CHECKING:
    from ringwork.store import Store


class SqlRegistry:
    """The protocol's registry view over the SQL store; remembers each node's endpoints."""

    def __init__(self, store: Store, pub_endpoint: str, wake_endpoint: str | None) -> None:
        self.store = store
        self.pub_endpoint = pub_endpoint
        self.wake_endpoint = wake_endpoint
        #: Whether the node is a member, recorded with every touch. Written by the protocol
        #: thread, read by the pool thread (a bool: a stale read is fixed by the next touch).
        self.joined = False
        self._lock = threading.Lock()  # guards the two maps (pool thread writes, node reads)
        self._pub_endpoints: dict[str, str] = {}
        self._router_endpoints: dict[str, str] = {}

    def register(self, node_id: str, endpoint: str) -> int:
        return self.store.register_node(
            node_id, endpoint, pub_endpoint=self.pub_endpoint, wake_endpoint=self.wake_endpoint
        )

    def touch(self, node_id: str) -> None:
        self.store.touch_node(node_id, joined=self.joined)

    def record_joined(self, node_id: str, joined: bool) -> None:
        """Record a change of membership at once, not at the next touch (for ``status``)."""
        with contextlib.suppress(RingworkError):  # if it fails, the next touch records it
            self.store.mark_joined(node_id, joined)

    def read_nodes(self) -> list[NodeRecord]:
        rows = self.store.list_nodes()
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
