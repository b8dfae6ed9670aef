"""Following a leader: joining it, heartbeats, the lease, degraded mode, and a follower's leave.

* A node follows the leader the referee (or an ``Announce`` it then checks) names, and joins it
  reporting what it holds; its lease is per leader, so it is suspended until the first ``Ack``.
* Each ``Ack`` extends the lease to ``sent_at + min(session_timeout, authority) - lease_margin``
  from the heartbeat it answers; a ``Grant`` (or the grant in an Ack) replaces our share.
* Degraded mode: cut off from the Acks but not from the database, our own successful registry
  touches extend a lease over the part of ``held`` the partitions table confirms (why that is
  safe: :mod:`ringwork.protocol.core`).
* Fast suspicion: a leader whose link confirms it dead (:mod:`ringwork.protocol.links`) is
  suspected at once, not after session_timeout of silence (a named leader never is).
* A leaving follower revokes everything itself, drains it, and sends ``Leave`` until the leader
  acknowledges (or the leave budget is spent).

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

import math

from ringwork.protocol import events as ev
from ringwork.protocol import messages as msgs
from ringwork.protocol.effects import Effects
from ringwork.protocol.links import Links
from ringwork.protocol.referee_view import RefereeView, hinted_poll
from ringwork.protocol.roles import NodeState, Role
from ringwork.protocol.share import Share


class Following:
    """A follower's state towards its leader (kept, but idle, while this node leads)."""

    HANDLES = (msgs.Ack, msgs.Grant, msgs.Rejoin, msgs.Resign, msgs.ClusterState)

    def __init__(
        self, node: NodeState, fx: Effects, referee: RefereeView, share: Share, links: Links
    ) -> None:
        self.node = node
        self.config = node.config
        self.fx = fx
        self.referee = referee
        self.share = share
        self.links = links  # fast suspicion of the leader (read only)
        self.joined = False  # acknowledged by the leader we follow (always, while leading)
        self.lease_until = -math.inf
        # Degraded mode: a lease from our own successful registry touches, over the partitions
        # of ``held`` that our last read of the partitions table confirmed (partition -> epoch).
        self.db_lease_until = -math.inf
        self.db_owned: dict[int, int] = {}
        # Claims also end ``session_timeout - lease_margin`` after the issue of our last poll
        # whose registry touch succeeded, whatever the leader's Acks say: so once the referee
        # sees our row ``session_timeout`` old we have stopped claiming, and the jobs we still
        # hold may be re-queued (fenced by job; see ringwork.protocol.referee).
        self.touch_until = -math.inf
        self._degraded_noted = False
        self.last_contact = -math.inf
        self.seq = 0
        self.next_heartbeat = math.inf
        self.next_poll = math.inf
        self.resigned: tuple[int, str] | None = None  # (term, leader) of a Resign we heard
        self.leader_named = False  # its Acks say it is a named node: no fast suspicion of it
        self.cluster_state: msgs.ClusterState | None = None
        self._state_requested_at = -math.inf

    # =================================================================== what we may claim

    def claimable(self, now: float) -> dict[int, int]:
        if self.node.role != Role.FOLLOWER or not self.joined:
            return {}
        held = self.share.held
        if now >= self.touch_until:
            return {}
        if now < self.lease_until:
            return dict(held)
        if now < self.db_lease_until:
            return {p: e for p, e in held.items() if self.db_owned.get(p) == e}
        return {}

    def claim_deadline(self, now: float) -> float:
        if self.node.role == Role.FOLLOWER and self.joined:
            lease = self.lease_until if now < self.lease_until else self.db_lease_until
            return min(lease, self.touch_until)
        return -math.inf

    def touched(self, issued: float) -> None:
        """A poll issued at ``issued`` touched our registry row: claims may go on until the row
        could look stale to anyone (less the margin for clock-rate drift)."""
        cfg = self.config
        self.touch_until = max(self.touch_until, issued + cfg.session_timeout - cfg.lease_margin)

    def degraded(self, now: float) -> bool:
        return (
            self.node.role != Role.LEADER
            and self.joined
            and self.lease_until <= now < self.db_lease_until
        )

    def deadlines(self) -> list[float]:
        times = []
        if not self.fx.pending("Poll"):
            times.append(self.next_poll)
        if self.node.leader is not None:
            times += [self.next_heartbeat, self.last_contact + self.config.session_timeout]
            times += self.links.deadlines()
        if self.joined:
            # claimable() shrinks there
            times += [self.lease_until, self.db_lease_until, self.touch_until]
        return times

    def suspicious(self, now: float) -> bool:
        """No word from a leader for session_timeout (or no leader, or it resigned, or its
        link confirms it dead: :mod:`ringwork.protocol.links`)."""
        node = self.node
        if node.leader is None:
            return True
        if self.resigned == (node.term, node.leader):
            return True
        if self.link_dead(now):
            return True
        return now - self.last_contact >= self.config.session_timeout

    def link_dead(self, now: float) -> bool:
        """Our leader's link confirms it dead (and it is not a named node, whose partitions
        wait for its next process)."""
        return not self.leader_named and self.links.dead(now, self.node.leader)

    def _suspect_at(self, now: float) -> float:
        """When we started (or will start) suspecting our leader: session_timeout of silence,
        or the moment its link confirmed it dead, whichever is first."""
        leader = self.node.leader
        if leader is None:
            return math.inf
        at = self.last_contact + self.config.session_timeout
        if self.link_dead(now):
            at = min(at, self.links.down_since(leader) + self.config.link_confirm)
        return at

    # =============================================================== joining and reporting

    def start_following(self, now: float) -> None:
        """A new leader (``node.leader``): leases are per leader, none yet from this one (a
        degraded lease needs an Ack first); it is joined at once."""
        self.joined = False
        self.lease_until = self.db_lease_until = -math.inf
        self.last_contact = now
        self.cluster_state = None
        self.leader_named = False
        self.send_join(now)

    def leader_lost(self, now: float) -> None:
        """We stepped down: no leader, no lease; poll at once to find the next one."""
        self.joined = False
        self.lease_until = self.db_lease_until = -math.inf
        self.last_contact = -math.inf
        self.next_poll = now

    def send_join(self, now: float) -> None:
        node, share = self.node, self.share
        assert node.leader is not None
        self.seq += 1
        self.fx.send(
            node.leader,
            msgs.Join(
                sender=node.node_id,
                term=node.term,
                incarnation=node.incarnation,
                seq=self.seq,
                sent_at=now,
                held=tuple(sorted(share.held.items())),
                draining=tuple(sorted(share.draining)),
                named=int(node.named),
            ),
        )
        self.next_heartbeat = now + self.config.heartbeat_interval

    def heartbeat(self, now: float) -> None:
        node = self.node
        assert node.leader is not None
        self.seq += 1
        self.fx.send(
            node.leader,
            msgs.Heartbeat(
                sender=node.node_id,
                term=node.term,
                incarnation=node.incarnation,
                seq=self.seq,
                sent_at=now,
                released=tuple(sorted(self.share.released.items())),
                version=self.share.applied_version,
            ),
        )
        self.next_heartbeat = now + self.config.heartbeat_interval

    def renew_from_db(self, now: float, issued: float, result: ev.PollResult) -> None:
        """Degraded mode: extend our lease through the database when the leader's Acks do not
        reach us but our own registry touches do (see :mod:`ringwork.protocol.core` for why
        it is safe).

        Only a follower joined to the leader the referee still names, whose row that leader
        would see fresh, renews; only from a poll answered within ``degraded_poll_budget``
        (so its touch is known to be recent), and only while a lease still runs (a lapsed one
        is never renewed: the leader may have evicted us, and only an Ack says otherwise)."""
        cfg, node = self.config, self.node
        if node.role != Role.FOLLOWER or not self.joined:
            return
        if node.leaving or now - issued > cfg.degraded_poll_budget:
            return
        if issued >= max(self.lease_until, self.db_lease_until):
            return
        record = result.term
        if record.term != node.term or record.leader != node.leader:
            return
        if node.node_id not in self.referee.nodes or not self.referee.alive(node.leader):
            return
        self.db_owned = {
            p: row.epoch for p, row in result.partitions.items() if row.owner == node.node_id
        }
        self.db_lease_until = max(self.db_lease_until, issued + cfg.follower_lease)

    # ================================================================ messages from a leader

    def receive(self, now: float, m: msgs.Message) -> None:
        if isinstance(m, msgs.Ack):
            self.on_ack(now, m)
        elif isinstance(m, msgs.Grant):
            self.on_grant(now, m)
        elif isinstance(m, msgs.Rejoin):
            self.on_rejoin(now, m)
        elif isinstance(m, msgs.Resign):
            self.on_resign(now, m)
        elif isinstance(m, msgs.ClusterState):
            self.on_state(now, m)

    def from_my_leader(self, m: msgs.Message) -> bool:
        node = self.node
        return node.role != Role.LEADER and m.sender == node.leader and m.term == node.term

    def on_ack(self, now: float, m: msgs.Ack) -> None:
        node, cfg = self.node, self.config
        if not self.from_my_leader(m) or m.incarnation != node.incarnation:
            return
        self.joined = True
        self.last_contact = now
        self.resigned = None
        self.leader_named = bool(m.named)
        lease = min(cfg.session_timeout, m.authority) - cfg.lease_margin
        self.lease_until = max(self.lease_until, m.sent_at + lease)
        self.share.apply(self.fx, m.version, m.grant, m.revoking, frozen=node.leaving)
        known = self.cluster_state.version if self.cluster_state else -1
        if known < m.version and now - self._state_requested_at >= cfg.heartbeat_interval:
            self._state_requested_at = now
            self.fx.send(m.sender, msgs.StateRequest(sender=node.node_id, term=node.term))

    def on_grant(self, now: float, m: msgs.Grant) -> None:
        if self.from_my_leader(m) and m.incarnation == self.node.incarnation:
            self.share.apply(self.fx, m.version, m.grant, m.revoking, frozen=self.node.leaving)

    def on_rejoin(self, now: float, m: msgs.Rejoin) -> None:
        """Declared dead while away: everything we held has been (or will be) fenced."""
        node = self.node
        if not self.from_my_leader(m) or m.incarnation != node.incarnation or node.leaving:
            return
        self.share.lose_everything(self.fx)
        node.incarnation += 1
        self.joined = False
        self.lease_until = self.db_lease_until = -math.inf
        self.share.applied_version = -1
        self.send_join(now)

    def on_resign(self, now: float, m: msgs.Resign) -> None:
        if self.from_my_leader(m):
            self.resigned = (m.term, m.sender)
            self.next_poll = now

    def on_state(self, now: float, m: msgs.ClusterState) -> None:
        if self.from_my_leader(m) and (
            self.cluster_state is None or m.version > self.cluster_state.version
        ):
            self.cluster_state = m

    def on_announce(self, now: float) -> None:
        """A hint that the term moved: look at the referee soon (see Core's Announce)."""
        self.next_poll = min(
            self.next_poll,
            hinted_poll(self.referee.last_poll_issued, now, self.config.heartbeat_interval),
        )

    # ================================================================================ timers

    def tick(self, now: float) -> None:
        cfg, node = self.config, self.node
        # The moment the leader falls silent for session_timeout, look at the referee at once
        # rather than at the next slow poll: a failover should not wait for a timer's phase.
        suspect_at = self._suspect_at(now)
        fresh_suspicion = now >= suspect_at and self.referee.last_poll_issued < suspect_at
        if (now >= self.next_poll or fresh_suspicion) and not self.fx.pending("Poll"):
            self.referee.poll(self.fx, partitions=True)
            fast = self.suspicious(now) or not self.joined
            self.next_poll = now + (cfg.heartbeat_interval if fast else cfg.poll_interval)
        if node.leader is not None and now >= self.next_heartbeat:
            if self.joined:
                self.heartbeat(now)
            elif not node.leaving:
                self.send_join(now)
        self._note_degraded(now)

    def _note_degraded(self, now: float) -> None:
        """Log entering and leaving degraded mode (an operator's first hint of a network cut)."""
        degraded = self.degraded(now)
        if degraded and not self._degraded_noted:
            self._degraded_noted = True
            held = len(self.claimable(now))
            self.fx.notice(self.node.term, "degraded", leader=self.node.leader, partitions=held)
        elif not degraded and self._degraded_noted:
            self._degraded_noted = False
            ended = "ack" if self.joined and now < self.lease_until else "lease_lapsed"
            self.fx.notice(self.node.term, "degraded_ended", reason=ended)


class Leaving:
    """A follower's clean leave: revoke everything at once, drain, then ``Leave`` until the
    leader's ``LeaveAck`` (or the leave budget is spent). A leader leaves by moving its own
    partitions away first (:meth:`~ringwork.protocol.leader.Leadership.leave_self`)."""

    def __init__(self, node: NodeState, fx: Effects, share: Share) -> None:
        self.node = node
        self.config = node.config
        self.fx = fx
        self.share = share
        self.next_send = math.inf  # when to (re)send Leave

    def begin(self, now: float) -> None:
        """A leaving follower stops claiming everything at once and drains it."""
        self.share.revoke_all(self.fx)
        self.next_send = now

    def tick(self, now: float) -> bool:
        """Send ``Leave`` once drained; ``True`` when it is time to stop (done or given up)."""
        node, share = self.node, self.share
        drained = not share.draining or now - node.leave_started >= self.config.revoke_timeout
        if now - node.leave_started >= node.leave_budget() or (drained and node.leader is None):
            return True
        if drained and now >= self.next_send and node.leader is not None:
            self.fx.send(
                node.leader,
                msgs.Leave(
                    sender=node.node_id,
                    term=node.term,
                    incarnation=node.incarnation,
                    released=tuple(sorted({**share.draining, **share.released}.items())),
                ),
            )
            self.next_send = now + self.config.heartbeat_interval
        return False
