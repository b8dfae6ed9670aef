"""The referee: the few cluster facts that must never be wrong, changed only by compare-and-set.

In production this is the SQL store (:class:`ringwork.store.Store`); the simulator
and unit tests use :class:`tests.sim.referee.MemoryReferee`, an in-memory twin with the
same semantics. The protocol core never calls it: it emits actions (become-leader, assign), the
driver performs them here and feeds the result back as an event. That keeps the core free of I/O.

Semantics every implementation must keep:

* ``claim_leadership(node, seen_term)`` succeeds only if the stored term still equals
  ``seen_term``; it then stores ``term = seen_term + 1, leader = node`` and returns the new term.
  Two nodes that saw the same term cannot both win: at most one leader per term, ever.
* ``assign(leader, term, owners, keep, stale_after)`` changes the owner of each listed partition
  and bumps its epoch by one, atomically, and only if ``(term, leader)`` is still the stored one;
  otherwise it changes nothing and returns ``None`` (the caller must step down). ``owners[p] =
  None`` takes a partition away from everyone (epoch bumped too).
* Fenced by job: a job ``running`` in a moved partition keeps its claim (its completion under
  its claim token is still accepted) unless its claimer is *dead*: not in ``keep`` (the leader's
  members) and its registry row is missing or ``stale_after`` (the session timeout) old by the
  referee's clock. A dead claimer's jobs are re-queued in the same transaction. Why a stale row
  means dead: a node claims only while a poll whose touch succeeded is less than
  ``session_timeout - lease_margin`` old (:mod:`ringwork.protocol.follower`), so by the time
  its row is ``session_timeout`` old it has stopped claiming, and a late completion of a
  re-queued job is refused by the job's own claim (``claimed_by`` and token).
* ``requeue_orphans(leader, term, keep, stale_after)`` applies the same rule, under the same term
  check, to running jobs of every partition that has moved since they were claimed (a node that
  carried a job past a rebalance and then died); their count, or ``None`` if the term is stale.
* Any method may raise :class:`ringwork.errors.DatabaseUnavailable` for a transient failure; the
  caller treats the write as not done (and a leader whose write failed steps down).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime  # a value the store reads; the core never reads a clock


@dataclass(frozen=True)
class Ownership:
    """One partition's row on the referee."""

    partition: int
    owner: str | None
    epoch: int


@dataclass(frozen=True)
class TermRecord:
    term: int
    leader: str | None


class Referee(Protocol):
    def read_term(self) -> TermRecord: ...

    def claim_leadership(self, node_id: str, seen_term: int) -> int | None:
        """Compare-and-set the term; the new term on success, ``None`` if someone moved it."""
        ...

    def assign(
        self,
        leader: str,
        term: int,
        owners: Mapping[int, str | None],
        keep: Collection[str] = (),
        stale_after: float = math.inf,
    ) -> dict[int, int] | None:
        """Move partitions (bumping epochs) under ``term``; the new epochs, or ``None`` if stale."""
        ...

    def requeue_orphans(
        self, leader: str, term: int, keep: Collection[str], stale_after: float
    ) -> int | None:
        """Re-queue dead claimers' jobs of moved partitions; how many, or ``None`` if stale."""
        ...

    def read_partitions(self) -> dict[int, Ownership]: ...


# --- The node registry (additive): how the core learns peers, priorities and who is alive. ---


@dataclass(frozen=True)
class NodeRecord:
    """One row of the node registry: the only node record, the core's and the store's.

    ``registered_seq`` is the join-order priority (lower = earlier = preferred leader candidate).
    ``age`` is the number of seconds since the node last touched its row, measured by the
    referee's own clock at the moment of the read (so no two processes' clocks are compared).
    The core decides by these four fields alone; the rest are what the SQL registry also keeps
    for the node driver, wake-ups and ``status`` (the memory twin leaves them unset).
    """

    node_id: str
    endpoint: str
    registered_seq: int
    age: float
    pub_endpoint: str | None = None
    wake_endpoint: str | None = None
    #: A member as of the node's last write (``None``: not recorded by that node's version).
    joined: bool | None = None
    #: When the node last touched its row, by the referee's clock (for display; not compared).
    last_seen: datetime | None = None


class Registry(Protocol):
    """Node registry semantics the protocol relies on (the SQL store and the memory twin).

    * ``register`` inserts or replaces the node's row with a fresh ``registered_seq``, strictly
      greater than every seq handed out before in this cluster, and ``last_seen = now``.
    * ``touch`` sets ``last_seen = now`` (the referee's clock) for the node; it must be committed
      before the same operation reads the term (see :mod:`ringwork.protocol.operations`).
      A node whose row is gone (the leader prunes rows silent for hours) registers again there.
    * ``read_nodes`` returns every registered node with its age.
    * ``unregister`` deletes the row (a clean leave).
    """

    def register(self, node_id: str, endpoint: str) -> int: ...

    def touch(self, node_id: str) -> None: ...

    def read_nodes(self) -> list[NodeRecord]: ...

    def unregister(self, node_id: str) -> None: ...


@runtime_checkable
class PollReader(Protocol):
    """A registry that reads everything a poll needs -- the term, the nodes and, if asked, the
    partitions -- in one round trip (the SQL registry; the memory twin reads them one by one).
    The same values as ``read_term``, ``read_nodes`` and ``read_partitions``, from one
    snapshot."""

    def read_poll(self, with_partitions: bool) -> tuple[TermRecord, list[NodeRecord],
                                                        dict[int, Ownership]]: ...

