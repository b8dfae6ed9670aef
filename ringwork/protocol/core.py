"""The ring protocol as a pure state machine: ``Core.handle(now, event) -> [actions]``.

The core reads no clock and opens no socket (h11-style sans-IO): the driver passes ``now`` (its
monotonic clock, in seconds), performs the returned actions and feeds their results back. The
runtime asks :meth:`Core.claimable` before every claim.

:class:`Core` is the driver's side of it; :class:`~ringwork.protocol.transitions.Transitions`
routes each event and makes the role changes (:class:`~ringwork.protocol.roles.Role` has the
diagram). The parts it routes to never call back into it and share state only through small
objects handed to them: :class:`~ringwork.protocol.roles.NodeState` (who we are, role, term,
leader), :class:`~ringwork.protocol.referee_view.RefereeView` (the last referee read),
:class:`~ringwork.protocol.share.Share` (our partitions), and they write their actions to
:class:`~ringwork.protocol.effects.Effects`. The parts: following a leader
(:mod:`~ringwork.protocol.follower`), elections (:mod:`~ringwork.protocol.election`), leading
(:mod:`~ringwork.protocol.leader`, with :mod:`~ringwork.protocol.leader_inbox` in front of it).

Threads: all of it runs on the one thread of the driver that feeds the core (the node thread of
:mod:`ringwork.node`; the simulator's only thread), which also reads it between calls.

Why it is safe (checked after every step by the simulator, invariant 2):

* a follower claims only while its lease runs: ``sent_at + min(session_timeout, authority) -
  lease_margin`` from the heartbeat the leader acknowledged. The leader declares it dead only
  ``session_timeout`` after it last *received* one, so the lease has ended first; and the lease
  never outlives the authority of the leader that granted it;
* the leader acts only while its authority runs: ``leader_lease`` from issuing the last poll that
  found the referee still naming it. A lapsed authority is never renewed: it steps down;
* a new leader keeps its hands off partitions whose owners have not joined it until the previous
  leader's authority has ended (it learns the previous leader's last registry touch with the CAS);
  right after a referee silence longer than session_timeout it waits, up to session_timeout, for
  every node that was alive when the silence began (only liveness: waiting is never unsafe);
* epochs move only by the leader's ``assign`` under its term, and only for partitions nobody may
  claim (revoked and released, timed out past every lease, or orphaned);
* jobs are fenced by job as well: a move re-queues a running job only if its claimer is neither
  a member nor fresh in the registry, and a follower claims only until ``session_timeout -
  lease_margin`` after issuing its last poll whose touch succeeded -- so a claimer whose row is
  ``session_timeout`` old has stopped claiming (simulator invariant 8: no job is re-queued while
  its claimer may still claim).

Fast suspicion (:mod:`~ringwork.protocol.links`) changes *when* a node is believed dead, never
what a death may touch: a peer whose connection closed and whose reconnects are refused for
``link_confirm`` (the driver's ``LinkChanged``) is declared dead by the leader at once, and a
follower elects its dead leader's successor at once; running jobs are still re-queued only on
the rule above, and every claim is still checked against its epoch. Only a live node whose port
answers resets for the whole window could be taken for dead: then the database's epoch fence,
not the lease, keeps its claims out (docs/protocol.md, "Fast suspicion").

Degraded mode -- degrade, do not stall. A follower cut off from the leader's Acks (either way)
that still reaches the database keeps claiming through it: a poll *issued* at ``t`` whose registry
touch succeeded, that found the same term and leader and the leader's row fresh, extends its lease
to ``t + session_timeout - lease_margin`` over the part of ``held`` that the poll's read of the
partitions table shows it owning at the same epochs. The leader, for its part, no longer evicts on
heartbeat silence alone. Why no one else can be handed such a partition while that lease runs:

* eviction: the leader declares a member dead only when a poll it issued at ``p`` after the
  member had been silent for ``session_timeout`` (so every Ack lease ended by ``p - margin``)
  read the member's row ``session_timeout`` old at ``D >= p`` (so every lease from a touch
  before ``D`` ended by ``D - margin``). A touch landing after ``D`` can only renew a lease if its
  poll was issued while a lease still ran (before ``D - margin``: a lapsed lease is never renewed)
  *and* answered within ``degraded_poll_budget <= lease_margin`` -- impossible for a touch after
  ``D``. So every lease of the evicted member has ended when the leader decides;
* hand-over: an unreleased revocation is forced through after ``unconfirmed_revoke_wait`` only if
  the owner's heartbeats report a grant version that includes the revocation (``Heartbeat.
  version``): it has stopped claiming. An owner that cannot hear us keeps the partition, and
  works it, until the heal (or its eviction);
* elections: a degraded lease comes only from a poll that read the old term, so it was issued
  before any successor's CAS, and ends before the successor's ``join_deadline`` (the CAS plus
  ``session_timeout``) orphans partitions of owners that did not join it. A follower that has
  not been acknowledged by the current leader has no degraded lease at all.

What degraded mode costs: a revocation the cut owner cannot hear waits for the heal, and nothing
reaches the cut node faster than its poll (new grants, wake-ups from the leader).

A follower whose lease runs out keeps ``held`` (kazoo's SUSPENDED): if the next leader confirms
it at the same epochs it resumes with no event at all; whatever it does not get back is ``Lost``.
"""

from __future__ import annotations

import math

from ringwork.protocol import events as ev
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.leader import Leadership
from ringwork.protocol.roles import NodeState, Role
from ringwork.protocol.transitions import Transitions

FOLLOWER, LEADER, STOPPED, IDLE = Role.FOLLOWER, Role.LEADER, Role.STOPPED, Role.IDLE

__all__ = ["FOLLOWER", "IDLE", "LEADER", "STOPPED", "Core", "Role"]


class Core:
    """One node's protocol state, as its driver sees it. Not thread-safe: one driver thread
    feeds it (and reads it between calls)."""

    def __init__(
        self, node_id: str, config: ProtocolConfig, *, incarnation: int = 0, named: bool = False
    ) -> None:
        self.config = config
        self.node = NodeState(node_id, config, incarnation, named=named)
        self.machine = Transitions(self.node)
        #: ``now`` at which this node last became a member that is not joined to a leader (a
        #: follower waiting for its Join to be acknowledged, or for an election); ``None`` while
        #: joined or leading. The driver, which owns the clock, decides when that is too long.
        self.joining_since: float | None = None

    def handle(self, now: float, event: ev.Event) -> list[ev.Action]:
        """Feed one event; get the actions to perform, in order."""
        node, machine = self.node, self.machine
        machine.fx.begin(now)
        if node.role == STOPPED or (node.role == IDLE and not isinstance(event, ev.Start)):
            return []  # not started yet, or gone
        lead = machine.leadership
        if lead is not None and now >= lead.authority_until:
            machine.step_down(now, "authority_lapsed")  # first: a resumed zombie acts on nothing
        machine.dispatch(now, event)
        machine.tick(now)
        if machine.leadership is not None:
            machine.leadership.flush()
        if self.is_member():
            self.joining_since = None
        elif self.joining_since is None and node.role == FOLLOWER:
            self.joining_since = now
        return machine.fx.take()

    def is_member(self) -> bool:
        """Joined to a leader that acknowledged us, or leading: a member of the cluster."""
        return self.leadership is not None or (self.node.role == FOLLOWER and self.joined)

    def claimable(self, now: float) -> dict[int, int]:
        """Partitions (-> epoch) this node may claim from at ``now``; empty when self-fenced.

        ``held`` while the leader's authority (or our lease from its Acks) runs; past that, in
        degraded mode, the part of ``held`` our last read of the partitions table confirmed at
        the same epochs, while our database-derived lease runs."""
        lead = self.leadership
        if lead is not None:
            until = min(lead.authority_until, self.machine.following.touch_until)
            return dict(self.held) if now < until else {}
        return self.machine.following.claimable(now)

    def claim_deadline(self) -> float:
        """When ``claimable`` next changes by time alone, as of the last ``handle()``: the
        leader's authority, the follower's lease from Acks (after which it shrinks to the
        degraded set), or its database-derived lease, each cut at ``touch_until`` (``-inf``
        when not joined to a leader)."""
        lead = self.leadership
        if lead is not None:
            return min(lead.authority_until, self.machine.following.touch_until)
        return self.machine.following.claim_deadline(self.machine.fx.now)

    @property
    def degraded(self) -> bool:
        """Claiming on the database-derived lease alone (cut off from the leader's Acks)."""
        return self.leadership is None and self.machine.following.degraded(self.machine.fx.now)

    def next_deadline(self) -> float:
        """The earliest ``now`` at which the core wants a :class:`Tick` (``inf``: none)."""
        node, machine = self.node, self.machine
        if node.role in (STOPPED, IDLE):
            return math.inf
        times = [machine.leave.next_send, node.leave_started + node.leave_budget()]
        if machine.leadership is not None:
            times += machine.leadership.deadlines()
        else:
            times += machine.following.deadlines()
        # Whatever is due now has been acted on by the last handle(); what is still <= now
        # waits for an event (a referee answer), not for time.
        return min((t for t in times if t > machine.fx.now), default=math.inf)

    def view(self) -> dict[str, object]:
        """A snapshot for status output and logs."""
        lead, node = self.leadership, self.node
        return {
            "node": node.node_id,
            "incarnation": node.incarnation,
            "role": node.role.value,
            "term": node.term,
            "leader": node.leader,
            "held": dict(sorted(self.held.items())),
            "draining": sorted(self.machine.share.draining),
            "lease_until": self.lease_until,
            "joined": self.is_member(),
            "joining_since": self.joining_since,
            "degraded_until": self.db_lease_until,
            "members": sorted(lead.members) if lead else None,
            "rebalances": lead.rebalances if lead else None,
        }

    # ========================================== the parts' state, as drivers and checks read it

    @property
    def leadership(self) -> Leadership | None:
        """The term we lead, while we lead one."""
        return self.machine.leadership

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def incarnation(self) -> int:
        return self.node.incarnation

    @property
    def role(self) -> Role:
        return self.node.role

    @property
    def term(self) -> int:
        return self.node.term

    @property
    def leader(self) -> str | None:
        return self.node.leader

    @property
    def leaving(self) -> bool:
        return self.node.leaving

    @property
    def held(self) -> dict[int, int]:
        """Our share, as the leader last told us: partition -> epoch."""
        return self.machine.share.held

    @property
    def joined(self) -> bool:
        return self.machine.following.joined

    @property
    def db_lease_until(self) -> float:
        """Degraded mode: the lease from our own registry touches."""
        return self.machine.following.db_lease_until

    @property
    def db_owned(self) -> dict[int, int]:
        """Degraded mode: what that lease covers (partition -> epoch)."""
        return self.machine.following.db_owned

    @property
    def touch_until(self) -> float:
        """Claims end here whatever the leases say: ``session_timeout - lease_margin`` after
        the issue of our last poll whose registry touch succeeded."""
        return self.machine.following.touch_until

    @property
    def lease_until(self) -> float:
        """The follower's lease from the leader's Acks."""
        return self.machine.following.lease_until

    @lease_until.setter
    def lease_until(self, value: float) -> None:
        self.machine.following.lease_until = value

    @property
    def next_poll(self) -> float:
        """When the follower polls the referee next."""
        return self.machine.following.next_poll

    @next_poll.setter
    def next_poll(self, value: float) -> None:
        self.machine.following.next_poll = value
