"""Roles and elections: how a node follows a leader, suspects it, and takes over from it.

Mixed into :class:`ringwork.protocol.core.Core` (which owns the state); kept apart so that each
module reads as one part of the protocol.

* A node follows the leader the referee (or an ``Announce``) names, and joins it reporting what
  it holds; its lease is per leader, so it is suspended until the first ``Ack``.
* It starts an election only when it is suspicious (no word from a leader for session_timeout,
  none known, or a ``Resign``) *and* the referee shows the recorded leader gone: its registry row
  is session_timeout old. A live leader is never usurped because one node cannot reach it.
* Candidates are the live registry nodes in ``registered_seq`` order; rank ``r`` waits
  ``r * election_backoff`` before the term CAS (``ClaimLeadership``); at most one wins a term.
* The winner waits, before touching the partitions of owners that have not joined it, until the
  previous leader's authority -- and so every lease it granted -- has surely run out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from ringwork.protocol import events as ev
from ringwork.protocol import messages as msgs
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.leader import Leadership
from ringwork.protocol.referee import NodeRecord, TermRecord

FOLLOWER, LEADER, STOPPED, IDLE = "follower", "leader", "stopped", "idle"

if TYPE_CHECKING:
    from ringwork.protocol.core import Core

_A = TypeVar("_A", bound=ev.RefereeAction)


class Elections:
    """Following, stepping down, suspecting, electing and taking over (a mixin of Core)."""

    if TYPE_CHECKING:  # state and helpers that live in Core
        node_id: str
        config: ProtocolConfig
        incarnation: int
        role: str
        term: int
        leader: str | None
        leadership: Leadership | None
        held: dict[int, int]
        draining: dict[int, int]
        released: dict[int, int]
        applied_version: int
        joined: bool
        lease_until: float
        db_lease_until: float
        last_contact: float
        referee_silence: tuple[float, float]
        next_poll: float
        next_heartbeat: float
        seq: int
        resigned: tuple[int, str] | None
        cluster_state: msgs.ClusterState | None
        term_record: TermRecord
        nodes: dict[str, NodeRecord]
        nodes_polled_at: float
        election_since: float | None
        last_authority_until: float
        leaving: bool
        _ops: dict[int, tuple[str, float]]
        _claim_prev: str | None
        _out: list[ev.Action]

        def send(self, to: str, message: msgs.Message) -> None: ...
        def notice(self, event: str, **detail: object) -> None: ...
        def referee_op(self, build: Callable[[int], _A]) -> int: ...
        def _pending(self, kind: str) -> bool: ...
        def _begin_leave(self, now: float) -> None: ...
        def _referee_answered(self, now: float) -> None: ...

    def _follow(self, now: float, term: int, leader: str) -> None:
        """Adopt ``leader`` for ``term``: suspended until its first Ack, then resume."""
        if self.leadership is not None:
            self._step_down(now, "newer_term")
        self.role, self.term, self.leader = FOLLOWER, term, leader
        self.joined = False
        # Leases are per leader: none yet from this one (a degraded lease needs an Ack first).
        self.lease_until = self.db_lease_until = -math.inf
        self.last_contact = now
        self.applied_version = -1
        self.election_since = None
        self.released = {}  # drained and not claimed: the new leader may move them at once
        self.cluster_state = None
        self._out.append(ev.RoleChanged(role=FOLLOWER, term=term, leader=leader))
        self._send_join(now)

    def _send_join(self, now: float) -> None:
        assert self.leader is not None
        self.seq += 1
        self.send(
            self.leader,
            msgs.Join(
                sender=self.node_id,
                term=self.term,
                incarnation=self.incarnation,
                seq=self.seq,
                sent_at=now,
                held=tuple(sorted(self.held.items())),
                draining=tuple(sorted(self.draining)),
            ),
        )
        self.next_heartbeat = now + self.config.heartbeat_interval

    def _step_down(self, now: float, reason: str) -> None:
        lead = self.leadership
        assert lead is not None
        self.notice("stepped_down", reason=reason)
        self.last_authority_until = lead.authority_until
        self.leadership = None
        self.role, self.leader, self.joined = FOLLOWER, None, False
        self.lease_until = self.db_lease_until = -math.inf
        self.last_contact = -math.inf
        self.next_poll = now
        self._ops = {k: v for k, v in self._ops.items() if v[0] == "Poll"}
        self._out.append(ev.RoleChanged(role=FOLLOWER, term=self.term, leader=None))
        if self.leaving:
            self._begin_leave(now)

    def _become_leader(self, now: float, result: ev.LeadershipResult, issued: float) -> None:
        assert result.term is not None
        cfg = self.config
        previous = self._claim_prev
        if previous is None:
            takeover = now  # genesis: nobody ever granted a lease
        elif previous == self.node_id and self.last_authority_until > -math.inf:
            takeover = max(now, self.last_authority_until)  # our own, remembered
        else:
            # Its authority ran at most leader_lease past its last registry touch, which the
            # driver read after our CAS; unknown (unregistered, forgotten): assume just now.
            record = next((n for n in result.nodes if n.node_id == previous), None)
            age = record.age if record is not None and previous != self.node_id else 0.0
            takeover = now + max(0.0, cfg.leader_lease - age)
        self.role, self.term, self.leader = LEADER, result.term, self.node_id
        self.term_record = TermRecord(term=result.term, leader=self.node_id)
        self.joined = True
        self.election_since = None
        self.applied_version = -1  # versions are per leadership
        self.nodes = {n.node_id: n for n in result.nodes}
        self.nodes_polled_at = issued  # read after the CAS, which was issued then
        self.db_lease_until = -math.inf
        alive = [n for n in self.nodes if self._alive(n) and n != previous]
        silence_from, silence_to = self.referee_silence
        if now - silence_to < cfg.session_timeout:
            # Back from a referee outage longer than the session timeout: every row went stale
            # because nobody could touch it, and the others may not have touched theirs again
            # yet. Give every node that was alive when the silence began (the previous leader
            # too: it stepped down only because its authority lapsed) the join deadline, rather
            # than take a live node's partitions at once. Waiting only delays; it is never unsafe.
            grace = cfg.session_timeout + (silence_to - silence_from)
            alive = [n.node_id for n in result.nodes if n.age < grace]
        self.leadership = Leadership(
            cast("Core", self),
            now,
            result.term,
            issued + cfg.leader_lease,
            takeover,
            result.partitions,
            alive,
            takeover=previous is not None,
        )
        self._out.append(ev.RoleChanged(role=LEADER, term=result.term, leader=self.node_id))
        self.notice("leader_elected", takeover_wait=round(takeover - now, 3))
        self.leadership.admit_self(now, dict(self.held), list(self.draining))
        self.leadership.announce(n for n in self.nodes if self._alive(n))
        if self.leaving:
            self.leadership.members[self.node_id].leaving = True

    def _alive(self, node: str | None) -> bool:
        record = self.nodes.get(node) if node is not None else None
        return record is not None and record.age < self.config.session_timeout

    def _suspicious(self, now: float) -> bool:
        """No word from a leader for session_timeout (or no leader, or it resigned)."""
        if self.leader is None:
            return True
        if self.resigned == (self.term, self.leader):
            return True
        return now - self.last_contact >= self.config.session_timeout

    def _consider_election(self, now: float) -> None:
        """Called with a fresh poll while suspicious: follow, wait, or try the term CAS."""
        record = self.term_record
        suspect = record.leader
        if suspect == self.node_id:
            self._claim(now)  # the referee still names us but we stepped down: re-claim
            return
        leader_gone = (
            suspect is None or not self._alive(suspect) or self.resigned == (record.term, suspect)
        )
        if not leader_gone:
            # It touched the referee lately: keep trying it, stay suspended, and look again the
            # moment its row would be stale (not a whole poll interval later).
            row = self.nodes.get(suspect) if suspect is not None else None
            if row is not None:
                stale_in = self.config.session_timeout - row.age
                self.next_poll = min(self.next_poll, now + max(stale_in, 0.01))
            return
        candidates = sorted(
            (n for n in self.nodes.values() if self._alive(n.node_id) and n.node_id != suspect),
            key=lambda n: (n.registered_seq, n.node_id),
        )
        ids = [n.node_id for n in candidates]
        rank = ids.index(self.node_id) if self.node_id in ids else len(ids)
        if self.election_since is None:
            self.election_since = now
        if now - self.election_since >= rank * self.config.election_backoff:
            self._claim(now)

    def _claim(self, now: float) -> None:
        if self._pending("ClaimLeadership") or self.leaving:
            return
        seen = self.term_record.term
        self._claim_prev = self.term_record.leader
        self.referee_op(lambda op: ev.ClaimLeadership(op_id=op, seen_term=seen))

    def _after_poll(self, now: float, record: TermRecord) -> None:
        if record.term < self.term_record.term:
            return  # an older read overtaken by a newer one
        self.term_record = record
        if self.leaving and self.leader is None:
            return
        newer = record.term > self.term or (record.term == self.term and self.leader is None)
        other = record.leader is not None and record.leader != self.node_id
        if newer and other and (record.leader != self.leader or record.term != self.term):
            assert record.leader is not None
            self._follow(now, record.term, record.leader)
            return
        if record.term > self.term and record.leader is None:
            self.term, self.leader = record.term, None
        if self._suspicious(now):
            self._consider_election(now)

    def _on_leadership(self, now: float, result: ev.LeadershipResult) -> None:
        kind, issued = self._ops.pop(result.op_id, ("", 0.0))
        self._referee_answered(now)
        if kind != "ClaimLeadership":
            return
        if result.term is None:
            self.next_poll = now  # someone else moved the term: find out who
            return
        self._become_leader(now, result, issued)
