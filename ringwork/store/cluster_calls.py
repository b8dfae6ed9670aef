"""The store as the cluster's referee and registry: terms, partition epochs, node rows.

It implements :class:`ringwork.protocol.referee.Referee` over :mod:`.referee` (the term CAS,
assignments and the re-queue of dead claimers' jobs), :mod:`.registry` (node rows) and
:mod:`.restarts` (a named node's restart).

Threads: the node's protocol thread and its referee pool (``ringwork-ref``); ``list_nodes`` also
the wake-up sender and ``status``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from ringwork.protocol.referee import NodeRecord, Ownership, TermRecord
from ringwork.store import poll, referee, registry, restarts
from ringwork.store.base import StoreBase


class ClusterCalls(StoreBase):
    """Term, epochs and the node registry."""

    # -- referee (ringwork.protocol.referee.Referee) ---------------------------------------------

    def read_term(self) -> TermRecord:
        with self._tx() as conn:
            return referee.read_term(conn, self.cluster)

    def claim_leadership(self, node_id: str, seen_term: int) -> int | None:
        with self._tx(write=True) as conn:
            return referee.claim_leadership(conn, self.cluster, node_id, seen_term)

    def assign(
        self,
        leader: str,
        term: int,
        owners: Mapping[int, str | None],
        keep: Collection[str] = (),
        stale_after: float = math.inf,
    ) -> dict[int, int] | None:
        for p in owners:
            if not 0 <= p < self.partitions:
                raise ValueError(f"partition {p} out of range 0..{self.partitions - 1}")
        with self._tx(write=True) as conn:
            return referee.assign(conn, self.dialect, self.cluster, leader, term, owners, keep,
                                  stale_after)

    def requeue_orphans(
        self, leader: str, term: int, keep: Collection[str], stale_after: float
    ) -> int | None:
        with self._tx(write=True) as conn:
            return referee.requeue_orphans(conn, self.dialect, self.cluster, leader, term, keep,
                                           stale_after)

    def read_poll(self, with_partitions: bool) -> poll.PollRead:
        """The term, the registry and (``with_partitions``) the partitions, read together: one
        statement on PostgreSQL (:mod:`.poll`), in autocommit: one round trip, not three."""
        with self._one_statement() if self.dialect == "postgresql" else self._tx() as conn:
            return poll.read(conn, self.dialect, self.cluster, with_partitions)

    def read_partitions(self) -> dict[int, Ownership]:
        with self._tx() as conn:
            return referee.read_partitions(conn, self.cluster)

    # -- node registry --------------------------------------------------------------------------

    def register_node(
        self,
        node_id: str,
        endpoint: str,
        *,
        pub_endpoint: str | None = None,
        wake_endpoint: str | None = None,
    ) -> int:
        with self._tx(write=True) as conn:
            return registry.register_node(
                conn, self.dialect, self.cluster, node_id, endpoint, pub_endpoint, wake_endpoint
            )

    def register_counted(
        self,
        node_id: str,
        endpoint: str,
        *,
        pub_endpoint: str | None = None,
        wake_endpoint: str | None = None,
    ) -> registry.Registration:
        """:meth:`register_node`, also returning the cluster counter it bumped (a node's
        incarnation comes from it: :mod:`ringwork.store.registry`)."""
        with self._tx(write=True) as conn:
            return registry.register_counted(
                conn, self.dialect, self.cluster, node_id, endpoint, pub_endpoint, wake_endpoint
            )

    def requeue_restarted(self, node_id: str) -> int:
        """Re-queue the jobs a named node's previous process left running (:mod:`.restarts`)."""
        with self._tx(write=True) as conn:
            return restarts.requeue_restarted(conn, self.dialect, self.cluster, node_id)

    def touch_node(self, node_id: str, *, joined: bool | None = None) -> bool:
        """Refresh the node's ``last_seen``; False if it has no row (it was pruned). One
        statement in autocommit on PostgreSQL: every node runs it about once a second."""
        with self._one_statement() as conn:
            return registry.touch_node(conn, self.dialect, self.cluster, node_id, joined)

    def mark_joined(self, node_id: str, joined: bool) -> None:
        with self._tx(write=True) as conn:
            registry.mark_joined(conn, self.cluster, node_id, joined)

    def deregister_node(self, node_id: str) -> None:
        with self._tx(write=True) as conn:
            registry.deregister_node(conn, self.cluster, node_id)

    def list_nodes(self) -> list[NodeRecord]:
        with self._tx() as conn:
            return registry.list_nodes(conn, self.dialect, self.cluster)
