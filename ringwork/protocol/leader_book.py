"""The leader's books: who owns each partition in its term, and what of it may be granted.

Every partition is in exactly one of these states::

    granted ──(rebalance moves it)──> revoking ──(owner confirms, or after
       ^                                 │        max(revoke_timeout, session_timeout))
       │                                 v
       └──── assign() bumps epoch <── ready <── orphaned (owner dead, left, unconfirmed,
                                                           never owned, new incarnation)

plus *unconfirmed* right after a takeover: owned on the referee by a node that has not yet joined
us and reported holding it. A partition is granted (its owner may claim it) only if it is in none
of the other states, so a write that moves it can never race with the old owner claiming it: the
old owner has either released it, or its lease has run out, or its leader's authority has.

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ringwork.protocol.messages import Pairs
from ringwork.protocol.referee import Ownership


@dataclass
class Member:
    node_id: str
    incarnation: int
    last_heard: float
    leaving: bool = False
    heard_version: int = -1  # the last grant version it reported applying (Heartbeat.version)
    unreachable: bool = False  # silent for session_timeout, registry row fresh: noted once
    named: bool = False  # static membership: never declared dead on its link's word


@dataclass
class Revocation:
    owner: str
    epoch: int
    started: float
    released: bool = False
    #: The first grant version that told the owner (-1: the owner reported it, e.g. at takeover).
    version: int = -1


def live_members(members: Mapping[str, Member]) -> list[str]:
    """The members that are not leaving, sorted: whom the partitions are balanced over."""
    return sorted(m for m, info in members.items() if not info.leaving)


class Book:
    """Ownership as written in this term (``owners`` is the referee's state: the leader is its
    only writer), the partitions blocked from being granted, and which members must hear of a
    change (``dirty``) under which state version."""

    def __init__(self, partitions: int, ownership: Mapping[int, Ownership]) -> None:
        self.dirty: set[str] = set()  # members whose grant changed since they were told
        self._unversioned = False  # state changed since ``version`` was last stamped
        self.publish = True  # ClusterState to broadcast at the next flush
        self.owners: dict[int, tuple[str | None, int]] = {}
        self.owned_by: dict[str, set[int]] = {}
        for p in range(partitions):
            row = ownership.get(p)
            self.set_owner(p, row.owner if row else None, row.epoch if row else 0)
        self.unconfirmed: dict[int, str] = {
            p: owner for p, (owner, _) in self.owners.items() if owner is not None
        }
        self.orphaned: set[int] = {p for p, (owner, _) in self.owners.items() if owner is None}
        self.revoking: dict[int, Revocation] = {}
        self.version = 1

    def set_owner(self, p: int, owner: str | None, epoch: int) -> None:
        old = self.owners.get(p)
        if old is not None and old[0] is not None:
            self.owned_by[old[0]].discard(p)
            self.dirty.add(old[0])
        self.owners[p] = (owner, epoch)
        if owner is not None:
            self.owned_by.setdefault(owner, set()).add(p)
            self.dirty.add(owner)

    def changed(self, *nodes: str | None) -> None:
        """The state changed, and with it what these members are granted."""
        self.dirty.update(n for n in nodes if n is not None)
        self._unversioned = self.publish = True

    def stamp(self) -> int:
        """The version of the current state: bumped before any message reflects a change, so
        a follower never mistakes newer content for a version it has already applied."""
        if self._unversioned:
            self.version += 1
            self._unversioned = False
        return self.version

    def blocked(self, p: int) -> bool:
        """Not grantable: orphaned, being revoked, or not yet confirmed by its owner."""
        return p in self.orphaned or p in self.revoking or p in self.unconfirmed

    def grant_for(self, node: str) -> Pairs:
        owned = self.owned_by.get(node, ())
        return tuple(sorted((p, self.owners[p][1]) for p in owned if not self.blocked(p)))

    def revoking_for(self, node: str) -> tuple[int, ...]:
        return tuple(sorted(p for p, r in self.revoking.items() if r.owner == node))

    def orphan(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.revoking.pop(p, None)
            self.unconfirmed.pop(p, None)
            self.orphaned.add(p)
            self.changed(self.owners[p][0])
