"""The leader's membership: joins, heartbeats, leaves, and the heartcheck.

::

    Join(incarnation i) ──> member (i)            a higher i replaces the member: its old
    Heartbeat ──> last_heard = now                partitions are orphaned (fenced by a new epoch)
                                                  and written back to it (a restart under the
                                                  same name: static membership), nothing moved
    silence >= session_timeout, and a poll issued after that silence began shows its registry
        row session_timeout old ──> declared dead: its partitions orphaned, rebalance
    its link confirms it dead (connection closed, reconnects refused for link_confirm, nothing
        heard since: its process is gone, see links.py) ──> declared dead at once, the same way
    silence, row still fresh ──> kept (cut off from us, not from the database: it claims its
        partitions in degraded mode, see core.py; nothing of it is handed over unheard)
    Leave ──> removed at once: its partitions (already released) orphaned, rebalance

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.effects import Effects
from ringwork.protocol.leader_book import Book, Member, Revocation
from ringwork.protocol.leader_moves import Moves
from ringwork.protocol.links import Links
from ringwork.protocol.messages import Ack, Heartbeat, Join, Leave, LeaveAck, Rejoin
from ringwork.protocol.referee_view import RefereeView


class Membership:
    """Who is a member of this term, and what each told us last."""

    def __init__(
        self,
        node_id: str,
        term: int,
        config: ProtocolConfig,
        fx: Effects,
        referee: RefereeView,
        book: Book,
        moves: Moves,
        members: dict[str, Member],
        links: Links,
    ) -> None:
        self.node_id = node_id
        self.links = links  # fast suspicion (read only)
        self.term = term
        self.config = config
        self.fx = fx
        self.referee = referee
        self.book = book
        self.moves = moves
        self.members = members  # shared with the leadership (and read by ``moves``)
        self.deaths = 0  # members declared dead this term (the leadership sweeps after one)

    def enrol(self, now: float, msg: Join) -> bool | None:
        """A Join: ``True`` for a new member or a new incarnation of one (whose partitions it
        does not report holding at their epoch are orphaned), ``False`` for the same member
        again, ``None`` for a delayed Join of an incarnation since replaced (ignored)."""
        member = self.members.get(msg.sender)
        if member is not None and msg.incarnation < member.incarnation:
            return None
        if member is not None and msg.incarnation == member.incarnation:
            return False
        book = self.book
        if member is not None:  # restarted or fenced: whatever the old incarnation held
            book.orphan(list(book.owned_by.get(msg.sender, ())))  # is fenced by a new epoch
        self.members[msg.sender] = Member(msg.sender, msg.incarnation, now, named=bool(msg.named))
        self.fx.notice(self.term, "member_joined", node=msg.sender, incarnation=msg.incarnation)
        held = dict(msg.held)
        draining = set(msg.draining)
        for p in list(book.owned_by.get(msg.sender, ())):
            if book.unconfirmed.get(p) != msg.sender:
                continue  # already orphaned or moving: never granted back at this epoch
            epoch = book.owners[p][1]
            if held.get(p) == epoch:
                del book.unconfirmed[p]  # confirmed: it keeps working, no epoch bump
            elif p in draining:
                del book.unconfirmed[p]
                book.revoking[p] = Revocation(msg.sender, epoch, now)
            else:
                book.orphan([p])  # it does not claim it (any more): fence and reassign
        book.changed(msg.sender)
        return True

    def greet(self, now: float, msg: Join, authority_until: float) -> None:
        """Answer a Join we accepted (new or repeated) with an Ack."""
        self.members[msg.sender].last_heard = now
        self._ack(now, msg.sender, msg.incarnation, msg.seq, msg.sent_at, authority_until)

    def heartbeat(self, now: float, msg: Heartbeat, authority_until: float) -> None:
        member = self.members.get(msg.sender)
        if member is None or member.incarnation < msg.incarnation:
            # Declared dead (or left) while it was away: it must rejoin as a new incarnation.
            self.fx.send(
                msg.sender, Rejoin(sender=self.node_id, term=self.term, incarnation=msg.incarnation)
            )
            return
        if member.incarnation > msg.incarnation:
            return
        member.last_heard = now
        member.unreachable = False
        member.heard_version = max(member.heard_version, msg.version)
        for p, epoch in msg.released:
            self.release(msg.sender, p, epoch)
        self._ack(now, msg.sender, msg.incarnation, msg.seq, msg.sent_at, authority_until)

    def release(self, node: str, p: int, epoch: int) -> None:
        r = self.book.revoking.get(p)
        if r is not None and r.owner == node and r.epoch == epoch and not r.released:
            r.released = True

    def leave(self, now: float, msg: Leave) -> None:
        member = self.members.get(msg.sender)
        if member is not None and member.incarnation == msg.incarnation:
            self._drop(msg.sender, now, "member_left")
        self.fx.send(
            msg.sender, LeaveAck(sender=self.node_id, term=self.term, incarnation=msg.incarnation)
        )

    def _ack(
        self,
        now: float,
        node: str,
        incarnation: int,
        seq: int,
        sent_at: float,
        authority_until: float,
    ) -> None:
        if node == self.node_id:
            return
        book = self.book
        self.fx.send(
            node,
            Ack(
                sender=self.node_id,
                term=self.term,
                incarnation=incarnation,
                seq=seq,
                sent_at=sent_at,
                authority=authority_until - now,
                version=book.stamp(),
                grant=book.grant_for(node),
                revoking=book.revoking_for(node),
                named=int(self.members[self.node_id].named) if self.node_id in self.members else 0,
            ),
        )

    def _drop(self, node: str, now: float, why: str, **detail: object) -> None:
        self.fx.notice(self.term, why, node=node, **detail)
        if why == "member_dead":
            self.deaths += 1
        self.members.pop(node, None)
        self.book.orphan(list(self.book.owned_by.get(node, ())))
        self.moves.schedule(now, at_once=True)

    # ------------------------------------------------------------------------- heartcheck

    def heartcheck(self, now: float) -> None:
        """Declare dead the members silent for session_timeout whose registry row is stale
        too; note (once) those silent whose row is fresh: cut off from us, they are kept.
        A member whose link confirms it dead goes at once (fast suspicion): its partitions
        move now; its running jobs still wait for its row to go stale (the sweep)."""
        for node in self.links.confirmed(now, among=self.members.keys()):
            member = self.members.get(node)
            if member is not None and node != self.node_id and not member.named:
                self._drop(node, now, "member_dead", reason="link_refused",
                           incarnation=member.incarnation)
        for node, member in list(self.members.items()):
            if now - member.last_heard < self.config.session_timeout:
                continue
            if self._registry_stale(member):
                self._drop(node, now, "member_dead", reason="silent",  # heartcheck
                           incarnation=member.incarnation)
            elif not member.unreachable:
                member.unreachable = True  # cut off from us, not from the database: kept
                self.fx.notice(self.term, "member_unreachable", node=node)

    def _registry_stale(self, member: Member) -> bool:
        """Whether the last registry read, from a poll issued after ``member`` had already been
        silent for session_timeout, shows its row stale (or gone). Silence alone is not enough:
        a member that still touches its row may be claiming in degraded mode, and a touch that
        lands after our read could renew its lease only if its poll was issued within a lease
        that this very silence and that read had ended (see core.py)."""
        referee = self.referee
        if referee.nodes_polled_at - member.last_heard < self.config.session_timeout:
            return False
        return not referee.alive(member.node_id)

    def live_node_not_joined(self) -> bool:
        """Whether the registry, as last polled, lists a live node that is not a member."""
        referee = self.referee
        return any(referee.alive(n) and n not in self.members for n in referee.nodes)
