"""An in-memory twin of the SQL referee and node registry, with exactly the same semantics.

Used by unit tests and the simulator. Time comes from an injected clock (the simulator's), so
registry ages are deterministic. It also keeps the history the simulator's invariants need: who
won each term. Its job table (:mod:`.simjobs`) has what fencing by job needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping

from ringwork.protocol.referee import NodeRecord, Ownership, TermRecord
from ringwork.testing.simjobs import JobTable, is_dead


class MemoryReferee:
    """:class:`~ringwork.protocol.referee.Referee` and ``Registry`` in a few dicts."""

    def __init__(self, partitions: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.partitions = partitions
        self.clock = clock
        self.term = 0
        self.leader: str | None = None
        self.owner: list[str | None] = [None] * partitions
        self.epoch: list[int] = [0] * partitions
        self.leaders_by_term: dict[int, str] = {}  # history: at most one per term, ever
        self.writes = 0  # successful assign() calls
        self._nodes: dict[str, tuple[str, int, float]] = {}
        self._seq = 0
        #: Recent registry touches (registration included) per node name: the simulator checks
        #: evictions against them (invariant 6).
        self.touches: dict[str, list[float]] = {}
        self.jobs = JobTable()

    # ------------------------------------------------------------------------- the referee

    def read_term(self) -> TermRecord:
        return TermRecord(term=self.term, leader=self.leader)

    def claim_leadership(self, node_id: str, seen_term: int) -> int | None:
        if seen_term != self.term:
            return None
        self.term += 1
        self.leader = node_id
        assert self.term not in self.leaders_by_term
        self.leaders_by_term[self.term] = node_id
        return self.term

    def assign(
        self,
        leader: str,
        term: int,
        owners: Mapping[int, str | None],
        keep: Collection[str] = (),
        stale_after: float = math.inf,
    ) -> dict[int, int] | None:
        if (term, leader) != (self.term, self.leader):
            return None
        for p in owners:
            if not 0 <= p < self.partitions:
                raise ValueError(f"no partition {p}")
        self.writes += 1
        epochs = {}
        for p, owner in owners.items():
            self.owner[p] = owner
            self.epoch[p] += 1
            epochs[p] = self.epoch[p]
        self.jobs.requeue_dead(self.epoch, owners, self._dead_rule(keep, stale_after))
        return epochs

    def requeue_orphans(
        self, leader: str, term: int, keep: Collection[str], stale_after: float
    ) -> int | None:
        if (term, leader) != (self.term, self.leader):
            return None
        return self.jobs.requeue_dead(self.epoch, None, self._dead_rule(keep, stale_after))

    def _dead_rule(self, keep: Collection[str], stale_after: float) -> Callable[[str], bool]:
        now = self.clock()

        def dead(claimer: str) -> bool:
            row = self._nodes.get(claimer)
            return is_dead(claimer, keep, None if row is None else now - row[2], stale_after)

        return dead

    def read_partitions(self) -> dict[int, Ownership]:
        return {
            p: Ownership(partition=p, owner=self.owner[p], epoch=self.epoch[p])
            for p in range(self.partitions)
        }

    # ------------------------------------------------------------------------ the registry

    def register(self, node_id: str, endpoint: str) -> int:
        self.jobs.fence_name(node_id)  # a new process under this name: the old one is fenced
        self._seq += 1
        self._nodes[node_id] = (endpoint, self._seq, self.clock())
        self._touched(node_id)
        return self._seq

    def touch(self, node_id: str) -> None:
        if node_id in self._nodes:
            endpoint, seq, _ = self._nodes[node_id]
            self._nodes[node_id] = (endpoint, seq, self.clock())
            self._touched(node_id)

    def _touched(self, node_id: str) -> None:
        history = self.touches.setdefault(node_id, [])
        history.append(self.clock())
        del history[:-256]

    def stale_during(self, node_id: str, start: float, end: float, timeout: float) -> bool:
        """Whether at some moment in ``[start, end]`` the node's row was missing or had not been
        touched for ``timeout`` seconds: what a leader must have read before evicting it."""
        history = self.touches.get(node_id, [])
        if node_id not in self._nodes or not history:
            return True
        nexts = [*history[1:], float("inf")]
        # The row is stale over [t + timeout, next touch) after each touch t.
        return any(t + timeout <= end and nxt > start for t, nxt in zip(history, nexts, strict=True)
                   if t + timeout < nxt)

    def read_nodes(self) -> list[NodeRecord]:
        now = self.clock()
        return [
            NodeRecord(node_id=n, endpoint=e, registered_seq=s, age=now - seen)
            for n, (e, s, seen) in self._nodes.items()
        ]

    def unregister(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)
