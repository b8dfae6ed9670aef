"""This node's share of the partitions, as its leader last told it, and the runtime events that
follow from changes to it (``Assigned``, ``Revoked``, ``Lost``).

A leader keeps one too: it grants itself partitions like any member, through :meth:`Share.apply`.

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ringwork.protocol import events as ev
from ringwork.protocol import messages as msgs
from ringwork.protocol.effects import Effects


class Share:
    """Held, draining and released partitions (each partition -> epoch)."""

    def __init__(self) -> None:
        self.held: dict[int, int] = {}
        self.draining: dict[int, int] = {}  # revoked; the runtime is finishing in-flight jobs
        self.released: dict[int, int] = {}  # drained; reported until the leader hands them over
        #: The last grant version applied (versions are per leadership: reset on a new leader).
        self.applied_version = -1

    def apply(
        self,
        fx: Effects,
        version: int,
        grant: msgs.Pairs,
        revoking: tuple[int, ...],
        *,
        frozen: bool = False,
    ) -> None:
        """Adopt the leader's word on our share; tell the runtime what changed. ``frozen``: a
        leaving follower has revoked everything itself and takes nothing new on."""
        if version <= self.applied_version:
            return  # reordered or duplicated: we already know better
        self.applied_version = version
        if frozen:
            return
        new, rev = dict(grant), set(revoking)
        lost, revoked = set(), set()
        for p, epoch in self.held.items():
            if new.get(p) == epoch:
                continue
            if p in rev:
                revoked.add(p)
                self.draining[p] = epoch
            else:
                lost.add(p)
        for p in [p for p in self.draining if p not in rev and p not in revoked]:
            del self.draining[p]  # handed over (after revoke_timeout): nothing left to confirm
        for p in [p for p in self.released if p not in rev]:
            del self.released[p]
        assigned = {p: e for p, e in new.items() if self.held.get(p) != e}
        lost |= {p for p in assigned if p in self.held}  # same partition, newer epoch
        self.held = new
        if lost:
            fx.emit(ev.Lost(partitions=frozenset(lost)))
        if revoked:
            fx.emit(ev.Revoked(partitions=frozenset(revoked)))
        if assigned:
            fx.emit(ev.Assigned(partitions=assigned))

    def lose_everything(self, fx: Effects) -> None:
        gone = set(self.held) | set(self.draining) | set(self.released)
        self.held, self.draining, self.released = {}, {}, {}
        if gone:
            fx.emit(ev.Lost(partitions=frozenset(gone)))

    def revoke_all(self, fx: Effects) -> None:
        """Stop claiming everything at once and drain it (a follower leaving on its own)."""
        if self.held:
            self.draining.update(self.held)
            fx.emit(ev.Revoked(partitions=frozenset(self.held)))
            self.held = {}

    def confirm_drained(self, partitions: Iterable[int]) -> list[tuple[int, int]]:
        """The runtime finished these revoked partitions: released, to be reported."""
        released = []
        for p in partitions:
            if p in self.draining:
                self.released[p] = self.draining.pop(p)
                released.append((p, self.released[p]))
        return released
