"""Partition ownership as the coordinator reports it: assigned, revoked, lost.

* assigned -- claim from it again (it may have been revoked or lost before) and look for work,
  there first: its jobs waited through the move, so the next claim serves the newly assigned
  partitions before the others (``fresh``, once each);
* revoked -- stop claiming it now, and confirm it to the coordinator (``revoke_done``) as soon
  as no claiming round is out for it (the ledger calls back): the leader hands it to its next
  owner at once. Its running jobs go on here under their own claims (fenced by job): nobody
  waits for them, and nobody runs them again while this worker lives;
* lost -- taken without a hand-off (another node owns it at a newer epoch): claim nothing more
  from it. Outcomes of its jobs are still written; the store refuses those whose job was
  re-queued meanwhile (only if we were declared dead).

Each event then fires the app's callbacks for it (:class:`.executor.Callbacks`).

Threads: :meth:`Ownership.listener` is called by the coordinator from any thread and hands the
event to the loop; everything else runs on the loop. ``revoking`` is read and written on the
loop only, as is ``fresh``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from ringwork.coordinator import Coordinator
from ringwork.job import Job
from ringwork.worker.executor import Callbacks
from ringwork.worker.ledger import Ledger
from ringwork.worker.wakeups import Wakeups


class Ownership:
    def __init__(self, coordinator: Coordinator, ledger: Ledger, wakeups: Wakeups,
                 callbacks: Callbacks) -> None:
        self.coordinator = coordinator
        self.ledger = ledger
        self.wakeups = wakeups
        self.callbacks = callbacks
        self.revoking: set[int] = set()  # revoked, not yet confirmed: never claimed from
        #: Assigned, and not yet served by a claim: their jobs waited through the move (a dead
        #: owner's through its failover), so the pump claims from them first, once.
        self.fresh: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def listener(self, kind: str, partitions: frozenset[int]) -> None:
        """The coordinator's listener: any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.handle, kind, partitions)

    def handle(self, kind: str, partitions: frozenset[int]) -> None:
        if kind == "assigned":
            self.revoking -= partitions
            self.fresh |= partitions
            self.wakeups.wake()
        elif kind == "revoked":
            self.revoking |= partitions
            self.fresh -= partitions
            self.ledger.when_quiet(partitions, self._confirm)
        elif kind == "lost":
            self.fresh -= partitions
            self.wakeups.kick.set()  # a node whose loop died reports everything lost
        else:
            raise ValueError(f"unknown partition event {kind!r}")
        measures = self.ledger.stats.measures  # for /metrics
        measures.rebalances[kind] += 1
        measures.rebalanced_partitions[kind] += len(partitions)
        self.callbacks.fire(kind, partitions)

    def _confirm(self, quiet: frozenset[int]) -> None:
        self.revoking -= quiet
        self.coordinator.revoke_done(quiet)  # a queue put or a pipe send: no thread needed

    def claimable(self) -> dict[int, int]:
        """What we may claim from now: the coordinator's grant minus what is being revoked."""
        return {p: e for p, e in self.coordinator.claimable().items()
                if p not in self.revoking}

    def first(self, owned: dict[int, int]) -> dict[int, int] | None:
        """The fresh partitions of ``owned``, to claim from before the others (``None``:
        none left)."""
        if not self.fresh:
            return None
        first = {p: e for p, e in owned.items() if p in self.fresh}
        if not first:
            self.fresh.clear()  # moved on again before we claimed: nothing to serve
            return None
        return first

    def served(self, asked: Iterable[int], got: Sequence[Job], want: int) -> None:
        """A claim from fresh partitions ``asked`` came back with ``got``: a partition is
        served once it gave a job, or once the claim came back short (it has none ready)."""
        if len(got) < want:
            self.fresh.difference_update(asked)
        else:
            self.fresh.difference_update(job.partition for job in got)
