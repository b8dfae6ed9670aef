"""The ring protocol as a pure state machine: ``Core.handle(now, event) -> [actions]``.

The core reads no clock and opens no socket (h11-style sans-IO): the driver passes ``now`` (its
monotonic clock, in seconds), performs the returned actions and feeds their results back. The
runtime asks :meth:`Core.claimable` before every claim. Following and elections live in
:mod:`ringwork.protocol.election`, leader-only logic in :mod:`ringwork.protocol.leader`.

Roles::

      Start
        │
        v            Ack (lease)                 lease runs out, no Ack, but our own
    FOLLOWER ───────────────────> following ───────────────────────────> degraded
    (no leader) <─┐   ^   Join   (claimable = held)   registry touches       (claimable = held
        │         │   │                               succeed, the leader's   ∩ partitions table)
        │         │   │<────────────── Ack ───────────row is fresh ──────────────┘  │
        │         │   │                                                             │ database
        │         │   └──────────── Announce / poll names a leader ──────┐          │ lease runs
        │         │                                                      │          v out
        │ poll: leader dead, my rank's turn       silence >= session_timeout   suspended
        v         │                               and the referee row of the  (claimable = {})
    ClaimLeadership(seen_term) ──lost──> poll        leader is stale ────────┘
        │ won
        v
     LEADER ──(write refused or failed, poll shows another term, authority lapsed,
        │      higher term seen)──> FOLLOWER (keeps ``held``, suspended until it rejoins)
        │ LeaveRequested: revoke own partitions, hand them over
        v
     Resign ──> STOPPED

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
  claim (revoked and released, timed out past every lease, or orphaned).

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
from collections.abc import Callable
from typing import TypeVar

from ringwork.protocol import events as ev
from ringwork.protocol import messages as msgs
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.election import FOLLOWER, IDLE, LEADER, STOPPED, Elections
from ringwork.protocol.leader import Leadership
from ringwork.protocol.referee import NodeRecord, TermRecord

_A = TypeVar("_A", bound=ev.RefereeAction)

#: Joins held at most at once for a registry check (forged ones beyond this are dropped).
MAX_HELD_JOINS = 256

__all__ = ["FOLLOWER", "IDLE", "LEADER", "STOPPED", "Core"]


class Core(Elections):
    """One node's protocol state. Not thread-safe: one driver thread feeds it."""

    def __init__(self, node_id: str, config: ProtocolConfig, *, incarnation: int = 0) -> None:
        self.node_id = node_id
        self.config = config
        #: Bumped each time this node rejoins after being declared dead. A process that reuses a
        #: node id must start above every earlier incarnation (e.g. pass its registered_seq).
        self.incarnation = incarnation
        self.role = IDLE
        self.term = 0
        self.leader: str | None = None
        self.leadership: Leadership | None = None
        # Our share, as the leader last told us: partition -> epoch.
        self.held: dict[int, int] = {}
        self.draining: dict[int, int] = {}  # revoked; the runtime is finishing in-flight jobs
        self.released: dict[int, int] = {}  # drained; reported until the leader hands them over
        self.applied_version = -1
        # Follower state.
        self.joined = False
        #: ``now`` at which this node last became a member that is not joined to a leader (a
        #: follower waiting for its Join to be acknowledged, or for an election); ``None`` while
        #: joined or leading. The driver, which owns the clock, decides when that is too long.
        self.joining_since: float | None = None
        self.lease_until = -math.inf
        # Degraded mode: a lease from our own successful registry touches, over the partitions
        # of ``held`` that our last read of the partitions table confirmed (partition -> epoch).
        self.db_lease_until = -math.inf
        self.db_owned: dict[int, int] = {}
        self._degraded_noted = False
        self.last_contact = -math.inf
        self.seq = 0
        self.next_heartbeat = math.inf
        self.resigned: tuple[int, str] | None = None
        self.cluster_state: msgs.ClusterState | None = None
        self._state_requested_at = -math.inf
        # The referee, as last polled.
        self.term_record = TermRecord(term=0, leader=None)
        self.nodes: dict[str, NodeRecord] = {}
        #: Leader: Joins from nodes missing from ``nodes``, held until the next poll shows them.
        self._unregistered_joins: dict[str, tuple[float, msgs.Join]] = {}
        self.next_poll = math.inf
        self.last_poll_issued = -math.inf
        # When the referee last answered, and the last silence of it longer than session_timeout
        # (start, end): during such a silence nobody could touch a registry row, so a stale row
        # says nothing about whether its node is alive (see _become_leader).
        self.referee_answered_at = -math.inf
        self.referee_silence = (-math.inf, -math.inf)
        self.nodes_polled_at = -math.inf  # when the poll that read ``nodes`` was issued
        self._ops: dict[int, tuple[str, float]] = {}
        self._op_seq = 0
        self.election_since: float | None = None
        self.last_authority_until = -math.inf
        # Leaving.
        self.leaving = False
        self.leave_started = math.inf
        self.next_leave_send = math.inf
        self._claim_prev: str | None = None
        self._out: list[ev.Action] = []
        self._now = 0.0

    # ================================================================== the driver's interface

    def handle(self, now: float, event: ev.Event) -> list[ev.Action]:
        """Feed one event; get the actions to perform, in order."""
        self._out = []
        self._now = now
        if self.role == STOPPED or (self.role == IDLE and not isinstance(event, ev.Start)):
            return []  # not started yet, or gone
        lead = self.leadership
        if lead is not None and now >= lead.authority_until:
            self._step_down(now, "authority_lapsed")  # first: a resumed zombie acts on nothing
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, now, event)
        self._tick(now)
        if self.leadership is not None:
            self.leadership.flush()
        if self.is_member():
            self.joining_since = None
        elif self.joining_since is None and self.role == FOLLOWER:
            self.joining_since = now
        out, self._out = self._out, []
        return out

    def is_member(self) -> bool:
        """Joined to a leader that acknowledged us, or leading: a member of the cluster."""
        return self.leadership is not None or (self.role == FOLLOWER and self.joined)

    def claimable(self, now: float) -> dict[int, int]:
        """Partitions (-> epoch) this node may claim from at ``now``; empty when self-fenced.

        ``held`` while the leader's authority (or our lease from its Acks) runs; past that, in
        degraded mode, the part of ``held`` our last read of the partitions table confirmed at
        the same epochs, while our database-derived lease runs."""
        if self.leadership is not None:
            return dict(self.held) if now < self.leadership.authority_until else {}
        if self.role != FOLLOWER or not self.joined:
            return {}
        if now < self.lease_until:
            return dict(self.held)
        if now < self.db_lease_until:
            return {p: e for p, e in self.held.items() if self.db_owned.get(p) == e}
        return {}

    def claim_deadline(self) -> float:
        """When ``claimable`` next changes by time alone, as of the last ``handle()``: the
        leader's authority, the follower's lease from Acks (after which it shrinks to the
        degraded set), or its database-derived lease (``-inf`` when not joined to a leader)."""
        if self.leadership is not None:
            return self.leadership.authority_until
        if self.role == FOLLOWER and self.joined:
            if self._now < self.lease_until:
                return self.lease_until
            return self.db_lease_until
        return -math.inf

    @property
    def degraded(self) -> bool:
        """Claiming on the database-derived lease alone (cut off from the leader's Acks)."""
        return (
            self.leadership is None
            and self.joined
            and self.lease_until <= self._now < self.db_lease_until
        )

    def next_deadline(self) -> float:
        """The earliest ``now`` at which the core wants a :class:`Tick` (``inf``: none)."""
        if self.role in (STOPPED, IDLE):
            return math.inf
        times = [self.next_leave_send, self.leave_started + self._leave_budget()]
        if self.leadership is not None:
            times += self.leadership.deadlines()
        else:
            if not self._pending("Poll"):
                times.append(self.next_poll)
            if self.leader is not None:
                times += [self.next_heartbeat, self.last_contact + self.config.session_timeout]
            if self.joined:
                times += [self.lease_until, self.db_lease_until]  # claimable() shrinks there
        # Whatever is due now has been acted on by the last handle(); what is still <= now
        # waits for an event (a referee answer), not for time.
        return min((t for t in times if t > self._now), default=math.inf)

    def view(self) -> dict[str, object]:
        """A snapshot for status output and logs."""
        lead = self.leadership
        return {
            "node": self.node_id,
            "incarnation": self.incarnation,
            "role": self.role,
            "term": self.term,
            "leader": self.leader,
            "held": dict(sorted(self.held.items())),
            "draining": sorted(self.draining),
            "lease_until": self.lease_until,
            "joined": self.is_member(),
            "joining_since": self.joining_since,
            "degraded_until": self.db_lease_until,
            "members": sorted(lead.members) if lead else None,
            "rebalances": lead.rebalances if lead else None,
        }

    # ============================================================================== plumbing

    def send(self, to: str, message: msgs.Message) -> None:
        self._out.append(ev.Send(to=to, message=message))

    def broadcast(self, message: msgs.Message) -> None:
        self._out.append(ev.Broadcast(message=message))

    def referee_op(self, build: Callable[[int], _A]) -> int:
        self._op_seq += 1
        action = build(self._op_seq)
        self._ops[self._op_seq] = (type(action).__name__, self._now)
        self._out.append(action)
        return self._op_seq

    def notice(self, event: str, **detail: object) -> None:
        self._out.append(ev.Notice(event=event, detail={"term": self.term, **detail}))

    def poll(self) -> int:
        self.last_poll_issued = self._now
        follower = self.leadership is None
        return self.referee_op(lambda op: ev.Poll(op_id=op, partitions=follower))

    def _pending(self, kind: str) -> bool:
        return any(k == kind for k, _ in self._ops.values())

    def _leave_budget(self) -> float:
        return self.config.revoke_timeout + self.config.leave_timeout

    # ================================================================ partitions and events

    def apply_grant(self, version: int, grant: msgs.Pairs, revoking: tuple[int, ...]) -> None:
        """Adopt the leader's word on our share; tell the runtime what changed."""
        if version <= self.applied_version:
            return  # reordered or duplicated: we already know better
        self.applied_version = version
        if self.leaving and self.leadership is None:
            return  # a leaving follower revoked everything itself; nothing new is taken on
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
            self._out.append(ev.Lost(partitions=frozenset(lost)))
        if revoked:
            self._out.append(ev.Revoked(partitions=frozenset(revoked)))
        if assigned:
            self._out.append(ev.Assigned(partitions=assigned))

    def _lose_everything(self) -> None:
        gone = set(self.held) | set(self.draining) | set(self.released)
        self.held, self.draining, self.released = {}, {}, {}
        if gone:
            self._out.append(ev.Lost(partitions=frozenset(gone)))

    # =================================================================== event handlers

    def _on_start(self, now: float, event: ev.Start) -> None:
        if self.role == IDLE:
            self.role = FOLLOWER
            self.next_poll = now
            self.referee_answered_at = now

    def _referee_answered(self, now: float) -> None:
        if now - self.referee_answered_at > self.config.session_timeout:
            self.referee_silence = (self.referee_answered_at, now)
        self.referee_answered_at = now

    def _on_poll(self, now: float, result: ev.PollResult) -> None:
        _, issued = self._ops.pop(result.op_id, ("", -math.inf))
        self._referee_answered(now)
        self.nodes = {n.node_id: n for n in result.nodes}
        self.nodes_polled_at = issued
        record = result.term
        lead = self.leadership
        if lead is not None:
            current, issued = result.op_id == lead.poll_op, lead.poll_issued
            if not lead.poll_result(now, result.op_id, record.term, record.leader):
                self._unregistered_joins = {}
                self.term_record = record
                self._step_down(now, "term_moved")
                self._after_poll(now, record)
            elif current and self._unregistered_joins:
                self._admit_held_joins(now, issued)
            return
        self._after_poll(now, record)
        self._renew_from_db(now, issued, result)

    def _renew_from_db(self, now: float, issued: float, result: ev.PollResult) -> None:
        """Degraded mode: extend our lease through the database when the leader's Acks do not
        reach us but our own registry touches do (see the module docstring for why it is safe).

        Only a follower joined to the leader the referee still names, whose row that leader
        would see fresh, renews; only from a poll answered within ``degraded_poll_budget``
        (so its touch is known to be recent), and only while a lease still runs (a lapsed one
        is never renewed: the leader may have evicted us, and only an Ack says otherwise)."""
        cfg = self.config
        if self.leadership is not None or self.role != FOLLOWER or not self.joined:
            return
        if self.leaving or now - issued > cfg.degraded_poll_budget:
            return
        if issued >= max(self.lease_until, self.db_lease_until):
            return
        record = result.term
        if record.term != self.term or record.leader != self.leader:
            return
        if self.node_id not in self.nodes or not self._alive(self.leader):
            return
        self.db_owned = {
            p: row.epoch for p, row in result.partitions.items() if row.owner == self.node_id
        }
        self.db_lease_until = max(self.db_lease_until, issued + cfg.follower_lease)

    def _on_assign(self, now: float, result: ev.AssignResult) -> None:
        self._ops.pop(result.op_id, None)
        self._referee_answered(now)
        lead = self.leadership
        if lead is None or not lead.pending_write(result.op_id):
            return
        if result.epochs is None:
            self._step_down(now, "assign_refused")  # the referee says our term is over
        else:
            lead.write_result(now, result.op_id, result.epochs)

    def _on_failed(self, now: float, event: ev.RefereeFailed) -> None:
        self._ops.pop(event.op_id, None)
        lead = self.leadership
        if lead is None:
            return
        if lead.pending_write(event.op_id):
            self._step_down(now, "assign_failed")  # a failed write may still have applied
        else:
            lead.poll_failed(event.op_id)

    def _on_revoke_confirmed(self, now: float, event: ev.RevokeConfirmed) -> None:
        for p in event.partitions:
            if p in self.draining:
                self.released[p] = self.draining.pop(p)
                if self.leadership is not None:
                    self.leadership.release(self.node_id, p, self.released[p])
        if self.leadership is None and self.joined and not self.leaving:
            self._heartbeat(now)  # report the release now rather than at the next beat

    def _on_leave(self, now: float, event: ev.LeaveRequested) -> None:
        if self.leaving:
            return
        self.leaving = True
        self.leave_started = now
        if self.leadership is not None:
            self.leadership.members[self.node_id].leaving = True
            self.leadership._membership_changed(now)
        else:
            self._begin_leave(now)

    def _begin_leave(self, now: float) -> None:
        """A leaving follower stops claiming everything at once and drains it."""
        if self.held:
            self.draining.update(self.held)
            self._out.append(ev.Revoked(partitions=frozenset(self.held)))
            self.held = {}
        self.next_leave_send = now

    def _on_message(self, now: float, event: ev.MessageReceived) -> None:
        m = event.message
        handler = _MESSAGE_HANDLERS.get(type(m))
        if handler is not None:
            handler(self, now, m)

    # ----------------------------------------------------------------- messages to a leader

    def _leader_for(self, now: float, m: msgs.Message) -> Leadership | None:
        """The leadership if ``m`` is for our term; tell stale senders who leads now."""
        lead = self.leadership
        if lead is None:
            return None
        if m.term < lead.term:
            self.send(m.sender, msgs.Announce(sender=self.node_id, term=lead.term))
            return None
        if m.term > lead.term:
            # A message naming a newer term proves nothing (anyone who reaches our port can
            # write one): ask the referee now; its answer steps us down if the term moved.
            lead.next_poll = min(lead.next_poll, self._hinted_poll(lead.poll_issued, now))
            return None
        return lead

    def _msg_join(self, now: float, m: msgs.Join) -> None:
        lead = self._leader_for(now, m)
        if lead is None or m.sender == self.node_id:
            return
        if m.sender in self.nodes or m.sender in lead.members:
            lead.admit(now, m)
            return
        # Not in the registry as we last read it. A node registers before it joins, so either
        # our read is older than its registration, or no such node exists (a forged Join must
        # not win partitions for a phantom). Hold it until a poll issued after it answers.
        if len(self._unregistered_joins) < MAX_HELD_JOINS or m.sender in self._unregistered_joins:
            self._unregistered_joins[m.sender] = (now, m)
        lead.next_poll = min(lead.next_poll, self._hinted_poll(lead.poll_issued, now))

    def _admit_held_joins(self, now: float, issued: float) -> None:
        """After a leader's poll issued at ``issued``: admit the held Joins of nodes it lists,
        forget those it does not (they arrived before the poll was issued: unregistered)."""
        lead = self.leadership
        held, self._unregistered_joins = self._unregistered_joins, {}
        for sender, (received, m) in held.items():
            if lead is not None and sender in self.nodes and m.term == lead.term:
                lead.admit(now, m)
            elif received >= issued:
                self._unregistered_joins[sender] = (received, m)  # the next poll decides

    def _msg_heartbeat(self, now: float, m: msgs.Heartbeat) -> None:
        lead = self._leader_for(now, m)
        if lead is not None:
            lead.heartbeat(now, m)

    def _msg_leave(self, now: float, m: msgs.Leave) -> None:
        lead = self._leader_for(now, m)
        if lead is not None:
            lead.leave(now, m)

    def _msg_state_request(self, now: float, m: msgs.StateRequest) -> None:
        lead = self._leader_for(now, m)
        if lead is not None:
            self.send(m.sender, lead.state())

    # --------------------------------------------------------------- messages to a follower

    def _from_my_leader(self, m: msgs.Message) -> bool:
        return self.leadership is None and m.sender == self.leader and m.term == self.term

    def _msg_announce(self, now: float, m: msgs.Announce) -> None:
        """A hint that the term moved, checked with the referee before it is believed: a forged
        Announce (of a term nobody won) would otherwise leave us following a phantom."""
        newer = m.term > self.term or (m.term == self.term and self.leader is None)
        if newer and m.sender != self.node_id:
            lead = self.leadership
            if lead is not None:
                lead.next_poll = min(lead.next_poll, self._hinted_poll(lead.poll_issued, now))
            else:
                self.next_poll = min(self.next_poll, self._hinted_poll(self.last_poll_issued, now))

    def _hinted_poll(self, last_issued: float, now: float) -> float:
        """When to poll for a hint of a newer term: now, but a flood of forged hints costs the
        referee at most one poll per quarter heartbeat interval."""
        return max(now, last_issued + self.config.heartbeat_interval / 4)

    def _msg_ack(self, now: float, m: msgs.Ack) -> None:
        if not self._from_my_leader(m) or m.incarnation != self.incarnation:
            return
        cfg = self.config
        self.joined = True
        self.last_contact = now
        self.resigned = None
        lease = min(cfg.session_timeout, m.authority) - cfg.lease_margin
        self.lease_until = max(self.lease_until, m.sent_at + lease)
        self.apply_grant(m.version, m.grant, m.revoking)
        known = self.cluster_state.version if self.cluster_state else -1
        if known < m.version and now - self._state_requested_at >= cfg.heartbeat_interval:
            self._state_requested_at = now
            self.send(m.sender, msgs.StateRequest(sender=self.node_id, term=self.term))

    def _msg_grant(self, now: float, m: msgs.Grant) -> None:
        if self._from_my_leader(m) and m.incarnation == self.incarnation:
            self.apply_grant(m.version, m.grant, m.revoking)

    def _msg_rejoin(self, now: float, m: msgs.Rejoin) -> None:
        """Declared dead while away: everything we held has been (or will be) fenced."""
        if not self._from_my_leader(m) or m.incarnation != self.incarnation or self.leaving:
            return
        self._lose_everything()
        self.incarnation += 1
        self.joined = False
        self.lease_until = self.db_lease_until = -math.inf
        self.applied_version = -1
        self._send_join(now)

    def _msg_leave_ack(self, now: float, m: msgs.LeaveAck) -> None:
        if self.leaving and m.incarnation == self.incarnation and m.sender == self.leader:
            self._stop()

    def _msg_resign(self, now: float, m: msgs.Resign) -> None:
        if self._from_my_leader(m):
            self.resigned = (m.term, m.sender)
            self.next_poll = now

    def _msg_state(self, now: float, m: msgs.ClusterState) -> None:
        if self._from_my_leader(m) and (
            self.cluster_state is None or m.version > self.cluster_state.version
        ):
            self.cluster_state = m

    # ================================================================================ timers

    def _tick(self, now: float) -> None:
        cfg = self.config
        if self.role not in (FOLLOWER, LEADER):
            return
        self._expire_ops(now)
        lead = self.leadership
        if lead is not None:
            lead.tick(now)
            if self.leaving and lead.resign_ready():
                for member in lead.members:
                    if member != self.node_id:
                        self.send(member, msgs.Resign(sender=self.node_id, term=lead.term))
                self._stop()
            return
        if self.leaving:
            self._leave_tick(now)
            if self.role == STOPPED:
                return
        # The moment the leader falls silent for session_timeout, look at the referee at once
        # rather than at the next slow poll: a failover should not wait for a timer's phase.
        suspect_at = self.last_contact + cfg.session_timeout if self.leader else math.inf
        fresh_suspicion = now >= suspect_at and self.last_poll_issued < suspect_at
        if (now >= self.next_poll or fresh_suspicion) and not self._pending("Poll"):
            self.poll()
            fast = self._suspicious(now) or not self.joined
            self.next_poll = now + (cfg.heartbeat_interval if fast else cfg.poll_interval)
        if self.leader is not None and now >= self.next_heartbeat:
            if self.joined:
                self._heartbeat(now)
            elif not self.leaving:
                self._send_join(now)
        self._note_degraded(now)

    def _note_degraded(self, now: float) -> None:
        """Log entering and leaving degraded mode (an operator's first hint of a network cut)."""
        if self.degraded and not self._degraded_noted:
            self._degraded_noted = True
            self.notice("degraded", leader=self.leader, partitions=len(self.claimable(now)))
        elif not self.degraded and self._degraded_noted:
            self._degraded_noted = False
            ended = "ack" if self.joined and now < self.lease_until else "lease_lapsed"
            self.notice("degraded_ended", reason=ended)

    def _heartbeat(self, now: float) -> None:
        assert self.leader is not None
        self.seq += 1
        self.send(
            self.leader,
            msgs.Heartbeat(
                sender=self.node_id,
                term=self.term,
                incarnation=self.incarnation,
                seq=self.seq,
                sent_at=now,
                released=tuple(sorted(self.released.items())),
                version=self.applied_version,
            ),
        )
        self.next_heartbeat = now + self.config.heartbeat_interval

    def _expire_ops(self, now: float) -> None:
        """Forget referee operations the driver never answered (it should; be robust anyway)."""
        horizon = now - self.config.session_timeout
        for op, (kind, issued) in list(self._ops.items()):
            if kind != "WriteAssignment" and issued < horizon:
                del self._ops[op]
                if self.leadership is not None:
                    self.leadership.poll_failed(op)

    def _leave_tick(self, now: float) -> None:
        drained = not self.draining or now - self.leave_started >= self.config.revoke_timeout
        if now - self.leave_started >= self._leave_budget() or (drained and self.leader is None):
            self._stop()
        elif drained and now >= self.next_leave_send and self.leader is not None:
            self.send(
                self.leader,
                msgs.Leave(
                    sender=self.node_id,
                    term=self.term,
                    incarnation=self.incarnation,
                    released=tuple(sorted({**self.draining, **self.released}.items())),
                ),
            )
            self.next_leave_send = now + self.config.heartbeat_interval

    def _stop(self) -> None:
        self.role = STOPPED
        self.leadership = None
        self.held = {}
        self._out.append(ev.RoleChanged(role=STOPPED, term=self.term, leader=None))
        self._out.append(ev.Left())


_HANDLERS: dict[type[ev.Event], Callable[[Core, float, ev.Event], None]] = {
    ev.Start: Core._on_start,  # type: ignore[dict-item]
    ev.Tick: lambda core, now, event: None,
    ev.MessageReceived: Core._on_message,  # type: ignore[dict-item]
    ev.PollResult: Core._on_poll,  # type: ignore[dict-item]
    ev.LeadershipResult: Core._on_leadership,  # type: ignore[dict-item]
    ev.AssignResult: Core._on_assign,  # type: ignore[dict-item]
    ev.RefereeFailed: Core._on_failed,  # type: ignore[dict-item]
    ev.RevokeConfirmed: Core._on_revoke_confirmed,  # type: ignore[dict-item]
    ev.LeaveRequested: Core._on_leave,  # type: ignore[dict-item]
}

_MESSAGE_HANDLERS: dict[type[msgs.Message], Callable[[Core, float, msgs.Message], None]] = {
    msgs.Join: Core._msg_join,  # type: ignore[dict-item]
    msgs.Heartbeat: Core._msg_heartbeat,  # type: ignore[dict-item]
    msgs.Leave: Core._msg_leave,  # type: ignore[dict-item]
    msgs.StateRequest: Core._msg_state_request,  # type: ignore[dict-item]
    msgs.Announce: Core._msg_announce,  # type: ignore[dict-item]
    msgs.Ack: Core._msg_ack,  # type: ignore[dict-item]
    msgs.Grant: Core._msg_grant,  # type: ignore[dict-item]
    msgs.Rejoin: Core._msg_rejoin,  # type: ignore[dict-item]
    msgs.LeaveAck: Core._msg_leave_ack,  # type: ignore[dict-item]
    msgs.Resign: Core._msg_resign,  # type: ignore[dict-item]
    msgs.ClusterState: Core._msg_state,  # type: ignore[dict-item]
}
