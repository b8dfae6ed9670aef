"""What a node does while it leads a term: authority, takeover, formation, and telling members.

A :class:`Leadership` exists only between winning the term CAS and stepping down. It is the only
writer of partition ownership in its term. Its parts:

* :mod:`ringwork.protocol.leader_book` -- who owns what, and what may be granted;
* :mod:`ringwork.protocol.leader_members` -- joins, heartbeats, leaves, the heartcheck;
* :mod:`ringwork.protocol.leader_moves` -- the rebalance target and the writes towards it.

This class holds what spans them: the authority (renewed by polls that find the referee still
naming us), the takeover wait, genesis formation, and the grants and state sent on every change.

Takeover: the referee tells a new leader who owned what, but not whether those owners still
claim under the previous leader's leases. A partition stays *unconfirmed* until its owner joins
and reports holding it at the referee's epoch; whatever is still unconfirmed when the previous
leader's authority (and so every lease it granted) has surely ended is orphaned.

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.effects import Effects
from ringwork.protocol.events import SweepOrphans
from ringwork.protocol.leader_book import Book, Member, live_members
from ringwork.protocol.leader_members import Membership
from ringwork.protocol.leader_moves import Moves
from ringwork.protocol.links import Links
from ringwork.protocol.messages import Announce, ClusterState, Grant, Heartbeat, Join, Leave
from ringwork.protocol.referee import Ownership
from ringwork.protocol.referee_view import RefereeView
from ringwork.protocol.share import Share


class Leadership:
    """Leader-only state and handlers; :class:`~ringwork.protocol.core.Core` routes events here."""

    def __init__(
        self,
        node_id: str,
        config: ProtocolConfig,
        fx: Effects,
        referee: RefereeView,
        share: Share,
        now: float,
        term: int,
        authority_until: float,
        takeover_until: float,
        ownership: Mapping[int, Ownership],
        alive: Iterable[str],
        *,
        takeover: bool = False,
        links: Links | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.fx = fx
        self.referee = referee
        self.share = share  # our own share: we grant ourselves partitions like any member
        self.term = term
        self.authority_until = authority_until
        self.takeover_until: float | None = takeover_until
        # Owners the registry shows alive get until join_deadline to join and confirm; the
        # partitions of the others are orphaned as soon as the takeover wait is over.
        self.alive_at_takeover = set(alive)
        # The first rebalance does not wait out the join debounce when it can know that
        # everyone has joined (the debounce stays its upper bound):
        # * taking over a working cluster, the members are the nodes alive at takeover, and
        #   every moment before the rebalance the dead leader's partitions go unprocessed: it
        #   runs as soon as all of them have joined;
        # * at genesis nobody knows who else is starting: it runs once a registry poll issued
        #   after the last join shows every live node joined. Processes started together are
        #   balanced in one step; one that registers later joins as usual (debounced).
        self.awaiting_joins: set[str] | None = self.alive_at_takeover if takeover else None
        self.forming = not takeover
        self.formed_check_after = math.inf  # a poll issued at or after this confirms formation
        self.join_deadline: float | None = max(takeover_until, now + config.session_timeout)
        self.next_poll = now + config.heartbeat_interval
        self.poll_op: int | None = None
        # The orphan sweep: jobs carried past a rebalance by a node that died later. Not before
        # the join deadline: until then a node that has not rejoined may still hold a lease.
        self.next_sweep = math.inf
        self.sweep_op: int | None = None
        self._deaths_swept = 0
        self.poll_issued = 0.0
        # The members, by node id: one dict, changed only by ``membership``, read by the rest.
        self.members: dict[str, Member] = {}
        self.book = Book(config.partitions, ownership)
        self.moves = Moves(node_id, term, config, fx, self.book, self.members)
        self.links = links if links is not None else Links(config.link_confirm)
        self.membership = Membership(
            node_id, term, config, fx, referee, self.book, self.moves, self.members, self.links
        )
        self.moves.schedule(now)

    # -------------------------------------------------------- read by the simulator's checks

    @property
    def target(self) -> dict[int, str | None]:
        return self.moves.target

    @property
    def target_members(self) -> list[str]:
        return self.moves.target_members

    @property
    def rebalances(self) -> int:
        return self.moves.rebalances

    def live_members(self) -> list[str]:
        return live_members(self.members)

    # ------------------------------------------------------------------------------ members

    def admit(self, now: float, msg: Join) -> None:
        """A Join: new member, same member again (idempotent), or a new incarnation of one."""
        new = self.membership.enrol(now, msg)
        if new is None:
            return
        if new:
            self.moves.schedule(now)
            if self.awaiting_joins is not None and self.awaiting_joins <= self.members.keys():
                self.awaiting_joins = None  # everyone known at takeover is here: no debounce
                self.moves.rebalance_due = now
            self._check_formation(now)
        self.membership.greet(now, msg, self.authority_until)

    def admit_self(
        self,
        now: float,
        incarnation: int,
        held: Mapping[int, int],
        draining: Iterable[int],
        named: bool = False,
    ) -> None:
        self.admit(
            now,
            Join(
                sender=self.node_id,
                term=self.term,
                incarnation=incarnation,
                seq=0,
                sent_at=now,
                held=tuple(held.items()),
                draining=tuple(draining),
                named=int(named),
            ),
        )
        self.members[self.node_id].last_heard = math.inf

    def heartbeat(self, now: float, msg: Heartbeat) -> None:
        self.membership.heartbeat(now, msg, self.authority_until)

    def release(self, node: str, p: int, epoch: int) -> None:
        self.membership.release(node, p, epoch)

    def leave(self, now: float, msg: Leave) -> None:
        self.membership.leave(now, msg)

    def leave_self(self, now: float) -> None:
        """We are leaving: our partitions move away at the next rebalance, then we resign."""
        self.members[self.node_id].leaving = True
        self.moves.schedule(now)

    def resign_ready(self) -> bool:
        """A leaving leader may resign once it owns nothing and no write is in flight."""
        return not self.book.owned_by.get(self.node_id) and self.moves.write_op is None

    # -------------------------------------------------------------------------------- timers

    def tick(self, now: float) -> None:
        if self.poll_op is None and now >= self.next_poll:
            self.poll_issued = now
            self.poll_op = self.referee.poll(self.fx, partitions=False)
            self.next_poll = now + self.config.heartbeat_interval
        self.membership.heartcheck(now)
        self._forget_dead_joiners(now)
        if self.membership.deaths != self._deaths_swept and self.join_deadline is None:
            self._deaths_swept = self.membership.deaths
            self.next_sweep = min(self.next_sweep, now)  # its carried jobs: re-queue them now
        if self.takeover_until is not None and now >= self.takeover_until:
            self.takeover_until = None
            self._orphan_unconfirmed(now, lambda owner: owner not in self.alive_at_takeover)
        if self.join_deadline is not None and now >= self.join_deadline:
            self.join_deadline = None
            self._orphan_unconfirmed(now, lambda owner: True)
            self.next_sweep = now
        if self.sweep_op is None and now >= self.next_sweep and now < self.authority_until:
            self._sweep(now)
        moves = self.moves
        if moves.rebalance_due is not None and now >= moves.rebalance_due:
            self.forming = False  # formed or not, later joins are debounced
            moves.rebalance(now)
        moves.maybe_write(now)

    def _forget_dead_joiners(self, now: float) -> None:
        """Fast suspicion during a takeover: a node we wait for (to join and confirm what it
        holds) whose link confirms it dead will not come. Its partitions are orphaned now and
        the first rebalance stops waiting for it (a member is the heartcheck's business)."""
        waiting = self.awaiting_joins or set()
        dead = {n for n in self.links.confirmed(now, among=waiting) if n not in self.members}
        if not dead:
            return
        self._orphan_unconfirmed(now, lambda owner: owner in dead)
        if self.awaiting_joins is not None and waiting & dead:
            self.awaiting_joins = waiting = waiting - dead
            if waiting <= self.members.keys():
                self.awaiting_joins = None
                self.moves.rebalance_due = now

    def _sweep(self, now: float) -> None:
        """Ask the referee to re-queue jobs whose claimer died after its partition moved on;
        every session timeout (a node that left keeps its claims while its row is fresh, so
        its death shows only as the row going stale), and soon after a member is declared dead."""
        keep, stale_after = tuple(sorted(self.members)), self.config.session_timeout
        self.sweep_op = self.fx.referee_op(
            lambda op: SweepOrphans(op_id=op, term=self.term, keep=keep, stale_after=stale_after)
        )
        self.next_sweep = now + self.config.session_timeout

    def sweep_result(self, op_id: int, requeued: int | None) -> None:
        if op_id != self.sweep_op:
            return
        self.sweep_op = None
        if requeued:
            self.fx.notice(self.term, "orphans_requeued", jobs=requeued)

    def _orphan_unconfirmed(self, now: float, which: Callable[[str], bool]) -> None:
        stale = [p for p, owner in self.book.unconfirmed.items() if which(owner)]
        if stale:
            self.book.orphan(stale)
            # Nobody owns them now: once nobody is awaited either, balance at once (a takeover
            # whose survivors have all joined does not wait out a join debounce for them).
            self.moves.schedule(now, at_once=self.awaiting_joins is None)

    def deadlines(self) -> list[float]:
        cfg = self.config
        times = [self.authority_until]
        if self.poll_op is None:
            times.append(self.next_poll)
        if self.members:
            times.append(min(m.last_heard for m in self.members.values()) + cfg.session_timeout)
        if self.takeover_until is not None:
            times.append(self.takeover_until)
        if self.join_deadline is not None:
            times.append(self.join_deadline)
        if self.sweep_op is None:
            times.append(self.next_sweep)
        if self.moves.rebalance_due is not None:
            times.append(self.moves.rebalance_due)
        times += self.links.deadlines()
        wait = cfg.unconfirmed_revoke_wait
        times += [r.started + wait for r in self.book.revoking.values() if not r.released]
        return times

    def _check_formation(self, now: float) -> None:
        """Genesis: once every live node we know of has joined, confirm with a fresh poll."""
        if not self.forming or self.membership.live_node_not_joined():
            return
        self.formed_check_after = now
        if self.poll_op is None:
            self.next_poll = now  # issued by this very tick

    # ---------------------------------------------------------------------- referee answers

    def poll_result(self, now: float, op_id: int, term: int, leader: str | None) -> bool:
        """Renew authority if the referee still names us; ``False`` means step down."""
        if op_id != self.poll_op:
            return True
        self.poll_op = None
        if term != self.term or leader != self.node_id:
            return False
        if self.forming and self.formed_check_after < math.inf:
            if self.poll_issued < self.formed_check_after:
                self.next_poll = now  # it was out before the last join: look once more
            elif not self.membership.live_node_not_joined():
                self.forming = False  # the registry shows nobody else starting: balance now
                self.moves.rebalance_due = now
            # else: someone registered and has not joined yet; its join checks again
        if self.poll_issued < self.authority_until:  # a lapsed authority is never renewed
            self.authority_until = max(
                self.authority_until, self.poll_issued + self.config.leader_lease
            )
        return True

    def poll_failed(self, op_id: int) -> None:
        if op_id == self.poll_op:
            self.poll_op = None
        if op_id == self.sweep_op:
            self.sweep_op = None  # tried again at next_sweep

    def pending_write(self, op_id: int) -> bool:
        return self.moves.pending_write(op_id)

    def write_result(self, now: float, op_id: int, epochs: Mapping[int, int]) -> None:
        self.moves.written(now, op_id, epochs)

    # -------------------------------------------------------------------------------- output

    def flush(self) -> None:
        """Tell every member whose grant changed (the leader applies its own), publish state."""
        book = self.book
        if not (book.dirty or book.publish):
            return
        version = book.stamp()
        for node in sorted(book.dirty):
            member = self.members.get(node)
            if member is None:
                continue
            grant, revoking = book.grant_for(node), book.revoking_for(node)
            if node == self.node_id:
                self.share.apply(self.fx, version, grant, revoking)
            else:
                self.fx.send(
                    node,
                    Grant(
                        sender=self.node_id,
                        term=self.term,
                        incarnation=member.incarnation,
                        version=version,
                        grant=grant,
                        revoking=revoking,
                    ),
                )
        book.dirty.clear()
        book.publish = False
        self.fx.broadcast(self.state())

    def state(self) -> ClusterState:
        book = self.book
        return ClusterState(
            sender=self.node_id,
            term=self.term,
            version=book.stamp(),
            members=tuple(sorted((m.node_id, m.incarnation) for m in self.members.values())),
            owners=tuple((p, owner, epoch) for p, (owner, epoch) in sorted(book.owners.items())),
            revoking=tuple(sorted(book.revoking)),
        )

    def announce(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            if node != self.node_id:
                self.fx.send(node, Announce(sender=self.node_id, term=self.term))
