"""What a node does while it leads a term: membership, heartcheck, rebalancing, hand-over.

A :class:`Leadership` exists only between winning the term CAS and stepping down. It is the only
writer of partition ownership in its term, so its ``owners`` map is the referee's state.

Membership and the heartcheck::

    Join(incarnation i) ──> member (i)            a higher i replaces the member: its old
    Heartbeat ──> last_heard = now                partitions are orphaned (fenced by a new epoch)
    silence >= session_timeout, and a poll issued after that silence began shows its registry
        row session_timeout old ──> declared dead: its partitions orphaned, rebalance
    silence, row still fresh ──> kept (cut off from us, not from the database: it claims its
        partitions in degraded mode, see core.py; nothing of it is handed over unheard)
    Leave ──> removed at once: its partitions (already released) orphaned, rebalance

Every partition is in exactly one of these states::

    granted ──(rebalance moves it)──> revoking ──(owner confirms, or after
       ^                                 │        max(revoke_timeout, session_timeout))
       │                                 v
       └──── assign() bumps epoch <── ready <── orphaned (owner dead, left, unconfirmed,
                                                           never owned, new incarnation)

A partition is granted (its owner may claim it) only if it is in none of the other states, so a
write that moves it can never race with the old owner claiming it: the old owner has either
released it, or its lease has run out, or its leader's authority has.

Takeover: the referee tells a new leader who owned what, but not whether those owners still
claim under the previous leader's leases. A partition stays *unconfirmed* until its owner joins
and reports holding it at the referee's epoch; whatever is still unconfirmed when the previous
leader's authority (and so every lease it granted) has surely ended is orphaned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ringwork.protocol.assignor import assign
from ringwork.protocol.events import WriteAssignment
from ringwork.protocol.messages import (
    Ack,
    Announce,
    ClusterState,
    Grant,
    Heartbeat,
    Join,
    Leave,
    LeaveAck,
    Pairs,
    Rejoin,
)
from ringwork.protocol.referee import Ownership

if TYPE_CHECKING:
    from ringwork.protocol.core import Core


@dataclass
class Member:
    node_id: str
    incarnation: int
    last_heard: float
    leaving: bool = False
    heard_version: int = -1  # the last grant version it reported applying (Heartbeat.version)
    unreachable: bool = False  # silent for session_timeout, registry row fresh: noted once


@dataclass
class Revocation:
    owner: str
    epoch: int
    started: float
    released: bool = False
    #: The first grant version that told the owner (-1: the owner reported it, e.g. at takeover).
    version: int = -1


class Leadership:
    """Leader-only state and handlers; the owning :class:`Core` routes events here."""

    def __init__(
        self,
        core: Core,
        now: float,
        term: int,
        authority_until: float,
        takeover_until: float,
        ownership: Mapping[int, Ownership],
        alive: Iterable[str],
        *,
        takeover: bool = False,
    ) -> None:
        self.core = core
        self.config = core.config
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
        self.join_deadline: float | None = max(takeover_until, now + self.config.session_timeout)
        self.members: dict[str, Member] = {}
        self._dirty: set[str] = set()
        self._unversioned = False  # state changed since ``version`` was last stamped
        self._publish = True  # ClusterState to broadcast at the next flush
        self.owners: dict[int, tuple[str | None, int]] = {}
        self.owned_by: dict[str, set[int]] = {}
        for p in range(self.config.partitions):
            row = ownership.get(p)
            self._set_owner(p, row.owner if row else None, row.epoch if row else 0)
        self.unconfirmed: dict[int, str] = {
            p: owner for p, (owner, _) in self.owners.items() if owner is not None
        }
        self.orphaned: set[int] = {p for p, (owner, _) in self.owners.items() if owner is None}
        self.revoking: dict[int, Revocation] = {}
        self.target: dict[int, str | None] = {}
        self.target_members: list[str] = []  # who the target was balanced over
        self.version = 1
        self.rebalance_due: float | None = None
        self.first_change: float | None = None
        self.rebalances = 0
        self.write_op: int | None = None
        self.write_owners: dict[int, str | None] = {}
        self.next_poll = now + self.config.heartbeat_interval
        self.poll_op: int | None = None
        self.poll_issued = 0.0
        self._membership_changed(now)

    # ------------------------------------------------------------------------- bookkeeping

    def _set_owner(self, p: int, owner: str | None, epoch: int) -> None:
        old = self.owners.get(p)
        if old is not None and old[0] is not None:
            self.owned_by[old[0]].discard(p)
            self._dirty.add(old[0])
        self.owners[p] = (owner, epoch)
        if owner is not None:
            self.owned_by.setdefault(owner, set()).add(p)
            self._dirty.add(owner)

    def _changed(self, *nodes: str | None) -> None:
        self._dirty.update(n for n in nodes if n is not None)
        self._unversioned = self._publish = True

    def _stamp(self) -> int:
        """The version of the current state: bumped before any message reflects a change, so
        a follower never mistakes newer content for a version it has already applied."""
        if self._unversioned:
            self.version += 1
            self._unversioned = False
        return self.version

    def _membership_changed(self, now: float, *, at_once: bool = False) -> None:
        """Debounce joins: fold changes closer than join_debounce into one rebalance (bounded).

        A member that died or left is not waited for (``at_once``): its partitions are orphaned
        and every moment they wait is a moment nobody processes them.
        """
        if self.first_change is None:
            self.first_change = now
        self.rebalance_due = now if at_once else min(
            now + self.config.join_debounce, self.first_change + self.config.max_debounce
        )
        self._unversioned = self._publish = True

    def grant_for(self, node: str) -> Pairs:
        blocked = (self.orphaned, self.revoking, self.unconfirmed)
        return tuple(
            sorted(
                (p, self.owners[p][1])
                for p in self.owned_by.get(node, ())
                if not any(p in b for b in blocked)
            )
        )

    def revoking_for(self, node: str) -> tuple[int, ...]:
        return tuple(sorted(p for p, r in self.revoking.items() if r.owner == node))

    def live_members(self) -> list[str]:
        return sorted(m for m, info in self.members.items() if not info.leaving)

    def _orphan(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.revoking.pop(p, None)
            self.unconfirmed.pop(p, None)
            self.orphaned.add(p)
            self._changed(self.owners[p][0])

    def _drop_member(self, node: str, now: float, why: str) -> None:
        self.core.notice(why, node=node)
        self.members.pop(node, None)
        self._orphan(list(self.owned_by.get(node, ())))
        self._membership_changed(now, at_once=True)

    # ------------------------------------------------------------------------------ joining

    def admit(self, now: float, msg: Join) -> None:
        """A Join: new member, same member again (idempotent), or a new incarnation of one."""
        member = self.members.get(msg.sender)
        if member is not None and msg.incarnation < member.incarnation:
            return  # a delayed Join from an incarnation that has since been replaced
        if member is None or msg.incarnation > member.incarnation:
            if member is not None:  # restarted or fenced: whatever the old incarnation held
                self._orphan(list(self.owned_by.get(msg.sender, ())))  # is fenced by a new epoch
            self.members[msg.sender] = Member(msg.sender, msg.incarnation, now)
            self.core.notice("member_joined", node=msg.sender, incarnation=msg.incarnation)
            held = dict(msg.held)
            draining = set(msg.draining)
            for p in list(self.owned_by.get(msg.sender, ())):
                if self.unconfirmed.get(p) != msg.sender:
                    continue  # already orphaned or moving: never granted back at this epoch
                epoch = self.owners[p][1]
                if held.get(p) == epoch:
                    del self.unconfirmed[p]  # confirmed: it keeps working, no epoch bump
                elif p in draining:
                    del self.unconfirmed[p]
                    self.revoking[p] = Revocation(msg.sender, epoch, now)
                else:
                    self._orphan([p])  # it does not claim it (any more): fence and reassign
            self._changed(msg.sender)
            self._membership_changed(now)
            if self.awaiting_joins is not None and self.awaiting_joins <= self.members.keys():
                self.awaiting_joins = None  # everyone known at takeover is here: no debounce
                self.rebalance_due = now
            self._check_formation(now)
        self.members[msg.sender].last_heard = now
        self._ack(now, msg.sender, msg.incarnation, msg.seq, msg.sent_at)

    def admit_self(self, now: float, held: Mapping[int, int], draining: Iterable[int]) -> None:
        core = self.core
        self.admit(
            now,
            Join(
                sender=core.node_id,
                term=self.term,
                incarnation=core.incarnation,
                seq=0,
                sent_at=now,
                held=tuple(held.items()),
                draining=tuple(draining),
            ),
        )
        self.members[core.node_id].last_heard = math.inf

    def heartbeat(self, now: float, msg: Heartbeat) -> None:
        member = self.members.get(msg.sender)
        if member is None or member.incarnation < msg.incarnation:
            # Declared dead (or left) while it was away: it must rejoin as a new incarnation.
            self.core.send(
                msg.sender,
                Rejoin(sender=self.core.node_id, term=self.term, incarnation=msg.incarnation),
            )
            return
        if member.incarnation > msg.incarnation:
            return
        member.last_heard = now
        member.unreachable = False
        member.heard_version = max(member.heard_version, msg.version)
        for p, epoch in msg.released:
            self.release(msg.sender, p, epoch)
        self._ack(now, msg.sender, msg.incarnation, msg.seq, msg.sent_at)

    def release(self, node: str, p: int, epoch: int) -> None:
        r = self.revoking.get(p)
        if r is not None and r.owner == node and r.epoch == epoch and not r.released:
            r.released = True

    def leave(self, now: float, msg: Leave) -> None:
        member = self.members.get(msg.sender)
        if member is not None and member.incarnation == msg.incarnation:
            self._drop_member(msg.sender, now, "member_left")
        self.core.send(
            msg.sender,
            LeaveAck(sender=self.core.node_id, term=self.term, incarnation=msg.incarnation),
        )

    def _ack(self, now: float, node: str, incarnation: int, seq: int, sent_at: float) -> None:
        if node == self.core.node_id:
            return
        self.core.send(
            node,
            Ack(
                sender=self.core.node_id,
                term=self.term,
                incarnation=incarnation,
                seq=seq,
                sent_at=sent_at,
                authority=self.authority_until - now,
                version=self._stamp(),
                grant=self.grant_for(node),
                revoking=self.revoking_for(node),
            ),
        )

    # -------------------------------------------------------------------------------- timers

    def tick(self, now: float) -> None:
        cfg = self.config
        if self.poll_op is None and now >= self.next_poll:
            self.poll_issued = now
            self.poll_op = self.core.poll()
            self.next_poll = now + cfg.heartbeat_interval
        for node, member in list(self.members.items()):
            if now - member.last_heard < cfg.session_timeout:
                continue
            if self._registry_stale(member):
                self._drop_member(node, now, "member_dead")  # heartcheck
            elif not member.unreachable:
                member.unreachable = True  # cut off from us, not from the database: kept
                self.core.notice("member_unreachable", node=node)
        if self.takeover_until is not None and now >= self.takeover_until:
            self.takeover_until = None
            self._orphan_unconfirmed(now, lambda owner: owner not in self.alive_at_takeover)
        if self.join_deadline is not None and now >= self.join_deadline:
            self.join_deadline = None
            self._orphan_unconfirmed(now, lambda owner: True)
        if self.rebalance_due is not None and now >= self.rebalance_due:
            self._rebalance(now)
        self._maybe_write(now)

    def _registry_stale(self, member: Member) -> bool:
        """Whether the last registry read, from a poll issued after ``member`` had already been
        silent for session_timeout, shows its row stale (or gone). Silence alone is not enough:
        a member that still touches its row may be claiming in degraded mode, and a touch that
        lands after our read could renew its lease only if its poll was issued within a lease
        that this very silence and that read had ended (see core.py)."""
        core = self.core
        if core.nodes_polled_at - member.last_heard < self.config.session_timeout:
            return False
        return not core._alive(member.node_id)

    def _heard(self, r: Revocation) -> bool:
        """Whether the owner of a revocation has heard of it (and so stopped claiming it)."""
        member = self.members.get(r.owner)
        return r.owner == self.core.node_id or member is None or member.heard_version >= r.version

    def _orphan_unconfirmed(self, now: float, which: Callable[[str], bool]) -> None:
        stale = [p for p, owner in self.unconfirmed.items() if which(owner)]
        if stale:
            self._orphan(stale)
            self._membership_changed(now)

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
        if self.rebalance_due is not None:
            times.append(self.rebalance_due)
        wait = cfg.unconfirmed_revoke_wait
        times += [r.started + wait for r in self.revoking.values() if not r.released]
        return times

    def _live_node_not_joined(self) -> bool:
        """Whether the registry, as last polled, lists a live node that is not a member."""
        core = self.core
        return any(core._alive(n) and n not in self.members for n in core.nodes)

    def _check_formation(self, now: float) -> None:
        """Genesis: once every live node we know of has joined, confirm with a fresh poll."""
        if not self.forming or self._live_node_not_joined():
            return
        self.formed_check_after = now
        if self.poll_op is None:
            self.next_poll = now  # issued by this very tick

    def poll_result(self, now: float, op_id: int, term: int, leader: str | None) -> bool:
        """Renew authority if the referee still names us; ``False`` means step down."""
        if op_id != self.poll_op:
            return True
        self.poll_op = None
        if term != self.term or leader != self.core.node_id:
            return False
        if self.forming and self.formed_check_after < math.inf:
            if self.poll_issued < self.formed_check_after:
                self.next_poll = now  # it was out before the last join: look once more
            elif not self._live_node_not_joined():
                self.forming = False  # the registry shows nobody else starting: balance now
                self.rebalance_due = now
            # else: someone registered and has not joined yet; its join checks again
        if self.poll_issued < self.authority_until:  # a lapsed authority is never renewed
            self.authority_until = max(
                self.authority_until, self.poll_issued + self.config.leader_lease
            )
        return True

    def poll_failed(self, op_id: int) -> None:
        if op_id == self.poll_op:
            self.poll_op = None

    # ---------------------------------------------------------------------------- rebalance

    def _rebalance(self, now: float) -> None:
        self.rebalance_due = self.first_change = None
        self.forming = False  # formed or not, later joins are debounced
        live = self.live_members()
        previous: dict[int, str | None] = {}
        for p, (owner, _) in self.owners.items():
            if p in self.write_owners:
                previous[p] = self.write_owners[p]  # being written: where it is going
            elif p in self.revoking:
                previous[p] = self.target.get(p)  # already on its way: keep its destination
            elif p in self.orphaned or p in self.unconfirmed:
                previous[p] = None
            else:
                previous[p] = owner
        target = assign(live, previous, self.config.partitions)
        if target != self.target:
            self.rebalances += 1
            moves = sum(1 for p, owner in target.items() if previous.get(p) != owner)
            self.core.notice("rebalance", members=len(live), moves=moves)
        self.target = target
        self.target_members = live
        self._start_moves(now)

    def _start_moves(self, now: float) -> None:
        """Revoke every granted partition whose owner is not its target (cooperative: revoke
        first); orphan those whose owner is not a member at all."""
        target = self.target
        for p, (owner, epoch) in self.owners.items():
            if p in self.revoking or p in self.orphaned or p in self.unconfirmed:
                continue
            if p not in target:
                continue  # no rebalance yet
            if owner is None or owner not in self.members:
                self._orphan([p])
            elif target[p] != owner:  # (a leaving member's partitions are revoked too)
                self._changed(owner)  # the next stamped version is the first to say so
                self.revoking[p] = Revocation(owner, epoch, now, version=self.version + 1)
        self._maybe_write(now)

    def _ready(self, now: float) -> dict[int, str | None]:
        """Partitions that may be written to their target owner now."""
        live = set(self.live_members())
        wait = self.config.unconfirmed_revoke_wait
        ready: dict[int, str | None] = {}
        for p in self.orphaned:
            if p not in self.target:
                continue  # no rebalance has placed it yet
            dest = self.target[p]
            if dest is None and self.owners[p][0] is None:
                continue  # nobody to give it to and nobody holds it: nothing to write
            if dest is None or dest in live:
                ready[p] = dest
        for p, r in self.revoking.items():
            if p not in self.target:
                continue  # reported draining at takeover; no rebalance has placed it yet
            dest = self.target[p]
            # Unreleased, it is handed over after the wait only if its owner has heard it is
            # revoked: an owner cut off from us may still be claiming it in degraded mode.
            forced = now - r.started >= wait and self._heard(r)
            if (r.released or forced) and (dest is None or dest in live):
                ready[p] = dest
        return ready

    def _maybe_write(self, now: float) -> None:
        if self.write_op is not None:
            return
        ready = self._ready(now)
        if ready:
            self.write_owners = ready
            self.write_op = self.core.referee_op(
                lambda op: WriteAssignment(op_id=op, term=self.term, owners=dict(ready))
            )

    def write_result(self, now: float, op_id: int, epochs: Mapping[int, int]) -> None:
        if op_id != self.write_op:
            return
        written, self.write_owners, self.write_op = self.write_owners, {}, None
        for p, epoch in epochs.items():
            owner = written.get(p)
            revocation = self.revoking.pop(p, None)
            self.orphaned.discard(p)
            self._set_owner(p, owner, epoch)
            self._changed(owner, revocation.owner if revocation else None)
        self.core.notice("assignment_written", partitions=len(epochs))
        self._start_moves(now)  # the target may have moved on while the write was in flight

    def pending_write(self, op_id: int) -> bool:
        return op_id == self.write_op

    # -------------------------------------------------------------------------------- output

    def flush(self) -> None:
        """Tell every member whose grant changed (the leader applies its own), publish state."""
        if not (self._dirty or self._publish):
            return
        version = self._stamp()
        core = self.core
        for node in sorted(self._dirty):
            member = self.members.get(node)
            if member is None:
                continue
            grant, revoking = self.grant_for(node), self.revoking_for(node)
            if node == core.node_id:
                core.apply_grant(version, grant, revoking)
            else:
                core.send(
                    node,
                    Grant(
                        sender=core.node_id,
                        term=self.term,
                        incarnation=member.incarnation,
                        version=version,
                        grant=grant,
                        revoking=revoking,
                    ),
                )
        self._dirty.clear()
        self._publish = False
        core.broadcast(self.state())

    def state(self) -> ClusterState:
        return ClusterState(
            sender=self.core.node_id,
            term=self.term,
            version=self._stamp(),
            members=tuple(sorted((m.node_id, m.incarnation) for m in self.members.values())),
            owners=tuple((p, owner, epoch) for p, (owner, epoch) in sorted(self.owners.items())),
            revoking=tuple(sorted(self.revoking)),
        )

    def announce(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            if node != self.core.node_id:
                self.core.send(node, Announce(sender=self.core.node_id, term=self.term))

    def resign_ready(self) -> bool:
        """A leaving leader may resign once it owns nothing and no write is in flight."""
        return not self.owned_by.get(self.core.node_id) and self.write_op is None
