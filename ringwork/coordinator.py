"""What the worker runtime needs from whoever decides partition ownership.

The runtime claims only from ``claimable()`` and reacts to assigned / revoked / lost events.
:class:`SoloCoordinator` is the single-node coordinator: it takes every partition in the database
exactly as a cluster leader would (term compare-and-set, then an epoch bump per partition), so a
stale process is fenced the same way. The ZeroMQ cluster node provides the same interface.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from ringwork.errors import DatabaseError
from ringwork.log import log_event

if TYPE_CHECKING:
    from ringwork.store import Store

#: ``listener(kind, partitions)`` with kind in {"assigned", "revoked", "lost"}; may be called from
#: any thread.
PartitionListener = Callable[[str, frozenset[int]], None]


def new_node_id() -> str:
    """Unique per process incarnation: a restarted process is a new member with fresh claims."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Coordinator(Protocol):
    node_id: str

    def start(self, listener: PartitionListener, wake_endpoint: str | None) -> None:
        """Join (blocking until the first ownership is known or the attempt fails)."""
        ...

    def claimable(self) -> Mapping[int, int]:
        """Partitions this node may claim from right now, with the epoch it holds for each."""
        ...

    def revoke_done(self, partitions: frozenset[int]) -> None:
        """The runtime finished the in-flight jobs of revoked partitions; hand them over."""
        ...

    def check(self) -> None:
        """Periodic housekeeping from the runtime (the solo coordinator's ownership check)."""
        ...

    def begin_leave(self) -> None:
        """Start a clean leave without waiting: revocations follow for every partition."""
        ...

    def stop(self) -> None:
        """Leave: give up ownership now so nobody waits for a timeout."""
        ...


class SoloCoordinator:
    """Owns every partition of the cluster by itself (no ZeroMQ).

    It becomes leader with a term compare-and-set and assigns all partitions to itself, bumping
    their epochs: any older owner is fenced and its jobs still ``running`` are re-queued by the
    store. If another process takes the partitions away (a second solo worker, an operator),
    :meth:`check` notices and reports them lost.
    """

    def __init__(self, store: Store, node_id: str | None = None) -> None:
        self.store = store
        self.node_id = node_id or new_node_id()
        self.term = 0
        self._owned: dict[int, int] = {}
        self._lock = threading.Lock()
        self._listener: PartitionListener | None = None

    def start(self, listener: PartitionListener, wake_endpoint: str | None) -> None:
        self._listener = listener
        seq = self.store.register_node(self.node_id, "solo://", wake_endpoint=wake_endpoint)
        while True:
            seen = self.store.read_term().term
            term = self.store.claim_leadership(self.node_id, seen)
            if term is None:
                continue  # someone moved the term between our read and our write: read again
            epochs = self.store.assign(
                self.node_id, term, dict.fromkeys(range(self.store.partitions), self.node_id)
            )
            if epochs is not None:
                break
        with self._lock:
            self.term = term
            self._owned = dict(epochs)
        log_event("leader_elected", node=self.node_id, term=term, seq=seq)
        log_event("partition_assigned", node=self.node_id, term=term, count=len(epochs))
        listener("assigned", frozenset(epochs))

    def claimable(self) -> Mapping[int, int]:
        with self._lock:
            return dict(self._owned)

    def revoke_done(self, partitions: frozenset[int]) -> None:
        """Nothing to hand over to: the solo node never revokes."""

    def check(self) -> None:
        self.store.touch_node(self.node_id)
        rows = self.store.read_partitions()
        with self._lock:
            lost = frozenset(
                p
                for p, epoch in self._owned.items()
                if rows.get(p) is None or rows[p].owner != self.node_id or rows[p].epoch != epoch
            )
            for p in lost:
                del self._owned[p]
        if lost and self._listener is not None:
            log_event("partition_lost", node=self.node_id, term=self.term, count=len(lost))
            self._listener("lost", lost)

    def begin_leave(self) -> None:
        """Nothing to negotiate: :meth:`stop` releases everything at once."""

    def stop(self) -> None:
        """Release every partition (epoch bump re-queues stragglers) and leave the registry."""
        with self._lock:
            owned, self._owned = self._owned, {}
        try:
            if owned:
                self.store.assign(self.node_id, self.term, dict.fromkeys(owned))
            self.store.deregister_node(self.node_id)
        except DatabaseError as exc:
            log_event("leave_failed", node=self.node_id, error=exc)
