"""Elections: when a follower tries the term CAS, and what the winner may touch at once.

* A node starts an election only when it is suspicious (no word from a leader for
  session_timeout, none known, a ``Resign``, or its link confirmed dead) *and* the recorded
  leader is gone: its registry row is session_timeout old, or its link confirmed it dead (the
  connection closed and every reconnect refused: :mod:`ringwork.protocol.links`). A live leader
  is never usurped because one node cannot reach it: a cut or a pause refuses nothing.
* Candidates are the live registry nodes in ``registered_seq`` order; rank ``r`` waits
  ``r * election_backoff`` before the term CAS (``ClaimLeadership``); at most one wins a term.
* The winner waits, before touching the partitions of owners that have not joined it, until the
  previous leader's authority -- and so every lease it granted -- has surely run out; not at
  all for a previous leader whose link confirmed it dead (its own claims died with it; the
  leases it granted to live followers are theirs, and wait for them to join as always).

Following a leader is :mod:`ringwork.protocol.follower`; the role changes themselves (follow,
lead, step down) are :class:`~ringwork.protocol.transitions.Transitions`'. Runs on the driver's
thread, inside ``Core.handle``, like all of the core.
"""

from __future__ import annotations

import math

from ringwork.protocol import events as ev
from ringwork.protocol.effects import Effects
from ringwork.protocol.referee_view import RefereeView
from ringwork.protocol.roles import NodeState


class Election:
    """Deciding to claim a term, and what is known when the claim is won."""

    def __init__(self, node: NodeState, fx: Effects, referee: RefereeView) -> None:
        self.node = node
        self.fx = fx
        self.referee = referee
        #: When this node first found itself a candidate in the current election (``None``:
        #: no election under way); its rank's backoff counts from here.
        self.since: float | None = None
        #: Until when our own last leadership's authority ran (``-inf``: never led).
        self.last_authority_until = -math.inf
        #: The leader the referee named when we issued our last ClaimLeadership ...
        self.claim_prev: str | None = None
        #: ... and whether its link had confirmed it dead then.
        self.claim_prev_dead = False

    def consider(
        self, now: float, resigned: tuple[int, str] | None, dead: frozenset[str] = frozenset()
    ) -> float | None:
        """Called with a fresh poll while suspicious: wait, or try the term CAS. Returns when
        to poll again at the latest, if that should be sooner than planned. ``dead``: the nodes
        whose links confirm them dead (fast suspicion): gone, whatever their rows say."""
        node, referee = self.node, self.referee
        record = referee.term_record
        suspect = record.leader
        if suspect == node.node_id:
            self.claim()  # the referee still names us but we stepped down: re-claim
            return None
        candidates = sorted(
            (n for n in referee.nodes.values() if referee.alive(n.node_id)),
            key=lambda n: (n.registered_seq, n.node_id),
        )
        ids = [n.node_id for n in candidates if n.node_id != suspect and n.node_id not in dead]
        rank = ids.index(node.node_id) if node.node_id in ids else len(ids)
        row_gone = (
            suspect is None
            or not referee.alive(suspect)
            or resigned == (record.term, suspect)
        )
        # One node's link is its own evidence, not the cluster's: only the first in line acts
        # on it. A live leader whose port refuses one follower alone (a one-way firewall rule)
        # is then never usurped by that follower; the others wait for its row to go stale.
        link_dead = suspect in dead and rank == 0 and not row_gone
        leader_gone = row_gone or link_dead
        if not leader_gone:
            # It touched the referee lately: keep trying it, stay suspended, and look again the
            # moment its row would be stale (not a whole poll interval later).
            row = referee.nodes.get(suspect) if suspect is not None else None
            if row is not None:
                stale_in = node.config.session_timeout - row.age
                return now + max(stale_in, 0.01)
            return None
        if self.since is None:
            self.since = now
        if now - self.since >= rank * node.config.election_backoff:
            self.claim(link_dead)
        return None

    def claim(self, prev_dead: bool = False) -> None:
        if self.fx.pending("ClaimLeadership") or self.node.leaving:
            return
        seen = self.referee.term_record.term
        self.claim_prev = self.referee.term_record.leader
        self.claim_prev_dead = prev_dead
        self.fx.referee_op(lambda op: ev.ClaimLeadership(op_id=op, seen_term=seen))

    def won(self, now: float, result: ev.LeadershipResult) -> tuple[float, list[str]]:
        """The claim won; the registry read after the CAS is already adopted. Returns until
        when the previous leader's leases may still run, and the nodes the registry shows
        alive whose partitions wait for them to join rather than being taken at once."""
        cfg = self.node.config
        previous = self.claim_prev
        if previous is None:
            takeover = now  # genesis: nobody ever granted a lease
        elif previous == self.node.node_id and self.last_authority_until > -math.inf:
            takeover = max(now, self.last_authority_until)  # our own, remembered
        elif self.claim_prev_dead:
            takeover = now  # its process is gone (fast suspicion): it claims nothing more
        else:
            # Its authority ran at most leader_lease past its last registry touch, which the
            # driver read after our CAS; unknown (unregistered, forgotten): assume just now.
            record = next((n for n in result.nodes if n.node_id == previous), None)
            age = record.age if record is not None and previous != self.node.node_id else 0.0
            takeover = now + max(0.0, cfg.leader_lease - age)
        self.since = None
        referee = self.referee
        alive = [n for n in referee.nodes if referee.alive(n) and n != previous]
        silence_from, silence_to = referee.silence
        if now - silence_to < cfg.session_timeout:
            # Back from a referee outage longer than the session timeout: every row went stale
            # because nobody could touch it, and the others may not have touched theirs again
            # yet. Give every node that was alive when the silence began (the previous leader
            # too: it stepped down only because its authority lapsed) the join deadline, rather
            # than take a live node's partitions at once. Waiting only delays; it is never unsafe.
            grace = cfg.session_timeout + (silence_to - silence_from)
            alive = [n.node_id for n in result.nodes if n.age < grace]
        return takeover, alive
