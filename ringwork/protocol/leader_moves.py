"""The leader's rebalancing: debounced target computation, cooperative moves, assignment writes.

Membership changes are folded into one rebalance (``join_debounce``, bounded by
``max_debounce``); a dead or departed member is not waited for. The target comes from the
sticky :func:`~ringwork.protocol.assignor.assign`. A partition whose owner is not its target is
revoked first and written to its new owner only once it is *ready* (see
:mod:`ringwork.protocol.leader_book`): one ``WriteAssignment`` at a time, under our term.

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ringwork.protocol.assignor import assign
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.effects import Effects
from ringwork.protocol.events import WriteAssignment
from ringwork.protocol.leader_book import Book, Member, Revocation, live_members


class Moves:
    """The target assignment of this term and the write in flight towards it."""

    def __init__(
        self,
        node_id: str,
        term: int,
        config: ProtocolConfig,
        fx: Effects,
        book: Book,
        members: Mapping[str, Member],
    ) -> None:
        self.node_id = node_id
        self.term = term
        self.config = config
        self.fx = fx
        self.book = book
        self.members = members  # the leadership's members, read only
        self.target: dict[int, str | None] = {}
        self.target_members: list[str] = []  # who the target was balanced over
        self.rebalance_due: float | None = None
        self.first_change: float | None = None
        self.rebalances = 0
        self.write_op: int | None = None
        self.write_owners: dict[int, str | None] = {}

    def schedule(self, now: float, *, at_once: bool = False) -> None:
        """Debounce joins: fold changes closer than join_debounce into one rebalance (bounded).

        A member that died or left is not waited for (``at_once``): its partitions are orphaned
        and every moment they wait is a moment nobody processes them.
        """
        if self.first_change is None:
            self.first_change = now
        self.rebalance_due = now if at_once else min(
            now + self.config.join_debounce, self.first_change + self.config.max_debounce
        )
        self.book.changed()

    def rebalance(self, now: float) -> None:
        self.rebalance_due = self.first_change = None
        book = self.book
        live = live_members(self.members)
        previous: dict[int, str | None] = {}
        for p, (owner, _) in book.owners.items():
            if p in self.write_owners:
                previous[p] = self.write_owners[p]  # being written: where it is going
            elif p in book.revoking:
                previous[p] = self.target.get(p)  # already on its way: keep its destination
            elif p in book.orphaned or p in book.unconfirmed:
                previous[p] = None
            else:
                previous[p] = owner
        target = assign(live, previous, self.config.partitions)
        if target != self.target:
            self.rebalances += 1
            moves = sum(1 for p, owner in target.items() if previous.get(p) != owner)
            self.fx.notice(self.term, "rebalance", members=len(live), moves=moves)
        self.target = target
        self.target_members = live
        self.start(now)

    def start(self, now: float) -> None:
        """Revoke every granted partition whose owner is not its target (cooperative: revoke
        first); orphan those whose owner is not a member at all."""
        book, target = self.book, self.target
        for p, (owner, epoch) in book.owners.items():
            if book.blocked(p):
                continue
            if p not in target:
                continue  # no rebalance yet
            if owner is None or owner not in self.members:
                book.orphan([p])
            elif target[p] != owner:  # (a leaving member's partitions are revoked too)
                book.changed(owner)  # the next stamped version is the first to say so
                book.revoking[p] = Revocation(owner, epoch, now, version=book.version + 1)
        self.maybe_write(now)

    def heard(self, r: Revocation) -> bool:
        """Whether the owner of a revocation has heard of it (and so stopped claiming it)."""
        member = self.members.get(r.owner)
        return r.owner == self.node_id or member is None or member.heard_version >= r.version

    def _ready(self, now: float) -> dict[int, str | None]:
        """Partitions that may be written to their target owner now."""
        book = self.book
        live = set(live_members(self.members))
        wait = self.config.unconfirmed_revoke_wait
        ready: dict[int, str | None] = {}
        for p in book.orphaned:
            if p not in self.target:
                continue  # no rebalance has placed it yet
            dest = self.target[p]
            if dest is None and book.owners[p][0] is None:
                continue  # nobody to give it to and nobody holds it: nothing to write
            if dest is None or dest in live:
                ready[p] = dest
        for p, r in book.revoking.items():
            if p not in self.target:
                continue  # reported draining at takeover; no rebalance has placed it yet
            dest = self.target[p]
            # Unreleased, it is handed over after the wait only if its owner has heard it is
            # revoked: an owner cut off from us may still be claiming it in degraded mode.
            forced = now - r.started >= wait and self.heard(r)
            if (r.released or forced) and (dest is None or dest in live):
                ready[p] = dest
        return ready

    def maybe_write(self, now: float) -> None:
        if self.write_op is not None:
            return
        ready = self._ready(now)
        if ready:
            self.write_owners = ready
            # Jobs of members keep their claims across the move (fenced by job): only a
            # claimer that is no member and whose row is stale is dead (protocol/referee.py).
            keep = tuple(sorted(self.members))
            self.write_op = self.fx.referee_op(
                lambda op: WriteAssignment(op_id=op, term=self.term, owners=dict(ready),
                                           keep=keep, stale_after=self.config.session_timeout)
            )

    def pending_write(self, op_id: int) -> bool:
        return op_id == self.write_op

    def written(self, now: float, op_id: int, epochs: Mapping[int, int]) -> None:
        """The write landed: adopt the new owners and epochs, and move on towards the target."""
        if op_id != self.write_op:
            return
        book = self.book
        written, self.write_owners, self.write_op = self.write_owners, {}, None
        for p, epoch in epochs.items():
            owner = written.get(p)
            revocation = book.revoking.pop(p, None)
            book.orphaned.discard(p)
            book.set_owner(p, owner, epoch)
            book.changed(owner, revocation.owner if revocation else None)
        self.fx.notice(self.term, "assignment_written", partitions=len(epochs))
        self.start(now)  # the target may have moved on while the write was in flight
