"""The core's role changes, and the events that cause them.

:class:`Transitions` owns the parts of a node's protocol state and the current
:class:`~ringwork.protocol.leader.Leadership`, routes each event to the part it concerns, and is
the only place that changes the node's :class:`~ringwork.protocol.roles.Role` (follow, lead,
step down, stop). :class:`~ringwork.protocol.core.Core` wraps it for the driver.

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ringwork.protocol import events as ev
from ringwork.protocol import messages as msgs
from ringwork.protocol.effects import Effects
from ringwork.protocol.election import Election
from ringwork.protocol.follower import Following, Leaving
from ringwork.protocol.leader import Leadership
from ringwork.protocol.leader_inbox import LeaderInbox
from ringwork.protocol.links import Links
from ringwork.protocol.referee import TermRecord
from ringwork.protocol.referee_view import RefereeView
from ringwork.protocol.roles import NodeState, Role
from ringwork.protocol.share import Share


class Transitions:
    """Event routing and role changes over the parts of one node's protocol state."""

    def __init__(self, node: NodeState) -> None:
        self.node = node
        self.config = node.config
        self.fx = Effects()
        self.referee = RefereeView(node.config.session_timeout)
        self.share = Share()
        self.links = Links(node.config.link_confirm)
        self.following = Following(node, self.fx, self.referee, self.share, self.links)
        self.election = Election(node, self.fx, self.referee)
        self.leave = Leaving(node, self.fx, self.share)
        beat = self.config.heartbeat_interval
        self.inbox = LeaderInbox(node.node_id, beat, self.fx, self.referee)
        self.leadership: Leadership | None = None

    def dispatch(self, now: float, event: ev.Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, now, event)

    # ========================================================================= role changes

    def follow(self, now: float, term: int, leader: str) -> None:
        """Adopt ``leader`` for ``term``: suspended until its first Ack, then resume."""
        if self.leadership is not None:
            self.step_down(now, "newer_term")
        node = self.node
        node.role, node.term, node.leader = Role.FOLLOWER, term, leader
        self.share.applied_version = -1
        self.share.released = {}  # drained and not claimed: the new leader may move them at once
        self.election.since = None
        self.fx.emit(ev.RoleChanged(role=Role.FOLLOWER.value, term=term, leader=leader))
        self.following.start_following(now)

    def step_down(self, now: float, reason: str) -> None:
        lead, node = self.leadership, self.node
        assert lead is not None
        self.fx.notice(node.term, "stepped_down", reason=reason)
        self.election.last_authority_until = lead.authority_until
        self.leadership = None
        node.role, node.leader = Role.FOLLOWER, None
        self.following.leader_lost(now)
        self.fx.keep_only("Poll")
        self.fx.emit(ev.RoleChanged(role=Role.FOLLOWER.value, term=node.term, leader=None))
        if node.leaving:
            self.leave.begin(now)

    def _lead(self, now: float, result: ev.LeadershipResult, issued: float) -> None:
        assert result.term is not None
        cfg, node, referee, share = self.config, self.node, self.referee, self.share
        referee.read_nodes(result.nodes, issued)  # read after the CAS, which was issued then
        self.following.touched(issued)  # the touch after a won CAS (protocol/operations.py)
        takeover, alive = self.election.won(now, result)
        node.role, node.term, node.leader = Role.LEADER, result.term, node.node_id
        referee.term_record = TermRecord(term=result.term, leader=node.node_id)
        self.following.joined = True
        self.following.db_lease_until = -math.inf
        share.applied_version = -1  # versions are per leadership
        lead = self.leadership = Leadership(
            node.node_id,
            cfg,
            self.fx,
            referee,
            share,
            now,
            result.term,
            issued + cfg.leader_lease,
            takeover,
            result.partitions,
            alive,
            takeover=self.election.claim_prev is not None,
            links=self.links,
        )
        self.fx.emit(ev.RoleChanged(role=Role.LEADER.value, term=result.term, leader=node.node_id))
        self.fx.notice(node.term, "leader_elected", takeover_wait=round(takeover - now, 3))
        lead.admit_self(now, node.incarnation, dict(share.held), list(share.draining),
                        node.named)
        lead.announce(n for n in referee.nodes if referee.alive(n))
        if node.leaving:
            lead.members[node.node_id].leaving = True

    def _stop(self) -> None:
        node = self.node
        node.role = Role.STOPPED
        self.leadership = None
        self.share.held = {}
        self.fx.emit(ev.RoleChanged(role=Role.STOPPED.value, term=node.term, leader=None))
        self.fx.emit(ev.Left())

    # ======================================================================= event handlers

    def _on_start(self, now: float, event: ev.Start) -> None:
        if self.node.role == Role.IDLE:
            self.node.role = Role.FOLLOWER
            self.following.next_poll = now
            self.referee.answered_at = now

    def _on_poll(self, now: float, result: ev.PollResult) -> None:
        _, issued = self.fx.answered(result.op_id, ("", -math.inf))
        self.referee.answered(now)
        self.referee.read_nodes(result.nodes, issued)
        self.following.touched(issued)  # a poll's touch came first (protocol/operations.py)
        record = result.term
        lead = self.leadership
        if lead is not None:
            current, issued = result.op_id == lead.poll_op, lead.poll_issued
            if not lead.poll_result(now, result.op_id, record.term, record.leader):
                self.inbox.held_joins = {}
                self.referee.term_record = record
                self.step_down(now, "term_moved")
                self._after_poll(now, record)
            elif current and self.inbox.held_joins:
                self.inbox.admit_held(now, issued, lead)
            return
        self._after_poll(now, record)
        self.following.renew_from_db(now, issued, result)

    def _after_poll(self, now: float, record: TermRecord) -> None:
        """A follower's reading of a fresh term record: follow, wait, or consider an election."""
        node, referee = self.node, self.referee
        if record.term < referee.term_record.term:
            return  # an older read overtaken by a newer one
        referee.term_record = record
        if node.leaving and node.leader is None:
            return
        newer = record.term > node.term or (record.term == node.term and node.leader is None)
        other = record.leader is not None and record.leader != node.node_id
        if newer and other and (record.leader != node.leader or record.term != node.term):
            assert record.leader is not None
            self.follow(now, record.term, record.leader)
            return
        if record.term > node.term and record.leader is None:
            node.term, node.leader = record.term, None
        following = self.following
        if following.suspicious(now):
            dead = frozenset(self.links.confirmed(now))
            if following.leader_named and record.leader == node.leader:
                dead -= {record.leader}
            poll_by = self.election.consider(now, following.resigned, dead)
            if poll_by is not None:
                following.next_poll = min(following.next_poll, poll_by)

    def _on_leadership(self, now: float, result: ev.LeadershipResult) -> None:
        kind, issued = self.fx.answered(result.op_id, ("", 0.0))
        self.referee.answered(now)
        if kind != "ClaimLeadership":
            return
        if result.term is None:
            self.following.next_poll = now  # someone else moved the term: find out who
            return
        self._lead(now, result, issued)

    def _on_assign(self, now: float, result: ev.AssignResult) -> None:
        self.fx.answered(result.op_id, ("", 0.0))
        self.referee.answered(now)
        lead = self.leadership
        if lead is None or not lead.pending_write(result.op_id):
            return
        if result.epochs is None:
            self.step_down(now, "assign_refused")  # the referee says our term is over
        else:
            lead.write_result(now, result.op_id, result.epochs)

    def _on_sweep(self, now: float, result: ev.SweepResult) -> None:
        self.fx.answered(result.op_id, ("", 0.0))
        self.referee.answered(now)
        if self.leadership is not None:
            self.leadership.sweep_result(result.op_id, result.requeued)

    def _on_failed(self, now: float, event: ev.RefereeFailed) -> None:
        self.fx.answered(event.op_id, ("", 0.0))
        lead = self.leadership
        if lead is None:
            return
        if lead.pending_write(event.op_id):
            self.step_down(now, "assign_failed")  # a failed write may still have applied
        else:
            lead.poll_failed(event.op_id)

    def _on_revoke_confirmed(self, now: float, event: ev.RevokeConfirmed) -> None:
        released = self.share.confirm_drained(event.partitions)
        if self.leadership is not None:
            for p, epoch in released:
                self.leadership.release(self.node.node_id, p, epoch)
        elif self.following.joined and not self.node.leaving:
            self.following.heartbeat(now)  # report the release now rather than at the next beat

    def _on_leave(self, now: float, event: ev.LeaveRequested) -> None:
        node = self.node
        if node.leaving:
            return
        node.leaving = True
        node.leave_started = now
        if self.leadership is not None:
            self.leadership.leave_self(now)
        else:
            self.leave.begin(now)

    def _on_link(self, now: float, event: ev.LinkChanged) -> None:
        if event.peer != self.node.node_id:
            self.links.changed(now, event.peer, event.change)

    def _on_message(self, now: float, event: ev.MessageReceived) -> None:
        m = event.message
        self.links.heard(now, m.sender)  # it was alive when it sent this: suspicion starts over
        if type(m) in LeaderInbox.HANDLES:
            self.inbox.receive(now, m, self.leadership)
        elif type(m) in Following.HANDLES:
            self.following.receive(now, m)
        elif isinstance(m, msgs.Announce):
            self._on_announce(now, m)
        elif isinstance(m, msgs.LeaveAck):
            node = self.node
            if node.leaving and m.incarnation == node.incarnation and m.sender == node.leader:
                self._stop()

    def _on_announce(self, now: float, m: msgs.Announce) -> None:
        """A hint that the term moved, checked with the referee before it is believed: a forged
        Announce (of a term nobody won) would otherwise leave us following a phantom."""
        node = self.node
        newer = m.term > node.term or (m.term == node.term and node.leader is None)
        if newer and m.sender != node.node_id:
            if self.leadership is not None:
                self.inbox.hint(now, self.leadership)
            else:
                self.following.on_announce(now)

    # ================================================================================ timers

    def tick(self, now: float) -> None:
        node = self.node
        if node.role not in (Role.FOLLOWER, Role.LEADER):
            return
        for op in self.fx.expire(now - self.config.session_timeout):
            if self.leadership is not None:
                self.leadership.poll_failed(op)
        lead = self.leadership
        if lead is not None:
            lead.tick(now)
            if node.leaving and lead.resign_ready():
                for member in lead.members:
                    if member != node.node_id:
                        self.fx.send(member, msgs.Resign(sender=node.node_id, term=lead.term))
                self._stop()
            return
        if node.leaving and self.leave.tick(now):
            self._stop()
            return
        self.following.tick(now)


_HANDLERS: dict[type[ev.Event], Callable[[Transitions, float, ev.Event], None]] = {
    ev.Start: Transitions._on_start,  # type: ignore[dict-item]
    ev.Tick: lambda machine, now, event: None,
    ev.MessageReceived: Transitions._on_message,  # type: ignore[dict-item]
    ev.PollResult: Transitions._on_poll,  # type: ignore[dict-item]
    ev.LeadershipResult: Transitions._on_leadership,  # type: ignore[dict-item]
    ev.AssignResult: Transitions._on_assign,  # type: ignore[dict-item]
    ev.SweepResult: Transitions._on_sweep,  # type: ignore[dict-item]
    ev.RefereeFailed: Transitions._on_failed,  # type: ignore[dict-item]
    ev.RevokeConfirmed: Transitions._on_revoke_confirmed,  # type: ignore[dict-item]
    ev.LeaveRequested: Transitions._on_leave,  # type: ignore[dict-item]
    ev.LinkChanged: Transitions._on_link,  # type: ignore[dict-item]
}
