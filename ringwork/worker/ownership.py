"""Partition ownership as the coordinator reports it: assigned, revoked, lost.

* assigned -- claim from it again (it may have been revoked or lost before) and look for work;
* revoked -- stop claiming it now; once the ledger says nothing of it is unwritten, confirm it
  to the coordinator (``revoke_done``), which hands it to its next owner. The ledger calls the
  confirmation back the moment the partition becomes clean: there is no drain loop polling it.
* lost -- taken without a hand-off (another node owns it at a newer epoch): the ledger drops
  every outcome of it we still hold; the store would refuse them anyway (fencing).

Each event then fires the app's callbacks for it (:class:`.executor.Callbacks`).

Threads: :meth:`Ownership.listener` is called by the coordinator from any thread and hands the
event to the loop; everything else runs on the loop. ``revoking`` is read and written on the
loop only.
"""

from __future__ import annotations

import asyncio

from ringwork.coordinator import Coordinator
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
            self.ledger.regained(partitions)
            self.wakeups.wake()
        elif kind == "revoked":
            self.revoking |= partitions
            self.ledger.when_clean(partitions, self._confirm)
        elif kind == "lost":
            self.ledger.lose(partitions)
            self.wakeups.kick.set()  # a node whose loop died reports everything lost
        else:
            raise ValueError(f"unknown partition event {kind!r}")
        self.callbacks.fire(kind, partitions)

    def _confirm(self, clean: frozenset[int]) -> None:
        self.revoking -= clean
        self.coordinator.revoke_done(clean)  # a queue put or a pipe send: no thread needed

    def claimable(self) -> dict[int, int]:
        """What we may claim from now: the coordinator's grant minus what is being revoked."""
        return {p: e for p, e in self.coordinator.claimable().items()
                if p not in self.revoking}
