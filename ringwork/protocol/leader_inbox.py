"""Messages addressed to a leader, checked before the leadership sees them.

A message for an older term gets an ``Announce`` back; one naming a newer term is only a hint
to poll the referee (anyone who reaches our port can write one). A ``Join`` from a node missing
from the registry as we last read it is held until a poll issued after it arrived answers: a
node registers before it joins, so either our read is older than its registration, or no such
node exists, and a forged Join must not win partitions for a phantom.

The held Joins outlive a leadership (a later one drops them by their term), so they are kept by
the core, here, rather than by :class:`~ringwork.protocol.leader.Leadership`.

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

from ringwork.protocol import messages as msgs
from ringwork.protocol.effects import Effects
from ringwork.protocol.leader import Leadership
from ringwork.protocol.referee_view import RefereeView, hinted_poll

#: Joins held at most at once for a registry check (forged ones beyond this are dropped).
MAX_HELD_JOINS = 256


class LeaderInbox:
    """Routes Join, Heartbeat, Leave and StateRequest to the leadership of their term."""

    HANDLES = (msgs.Join, msgs.Heartbeat, msgs.Leave, msgs.StateRequest)

    def __init__(
        self, node_id: str, heartbeat_interval: float, fx: Effects, referee: RefereeView
    ) -> None:
        self.node_id = node_id
        self.heartbeat_interval = heartbeat_interval
        self.fx = fx
        self.referee = referee
        #: Joins from nodes missing from the registry, held until the next poll shows them.
        self.held_joins: dict[str, tuple[float, msgs.Join]] = {}

    def receive(self, now: float, m: msgs.Message, lead: Leadership | None) -> None:
        lead = self._for_term(now, m, lead)
        if lead is None:
            return
        if isinstance(m, msgs.Join):
            self._join(now, m, lead)
        elif isinstance(m, msgs.Heartbeat):
            lead.heartbeat(now, m)
        elif isinstance(m, msgs.Leave):
            lead.leave(now, m)
        elif isinstance(m, msgs.StateRequest):
            self.fx.send(m.sender, lead.state())

    def hint(self, now: float, lead: Leadership) -> None:
        """A newer term may exist: poll soon (at most once per quarter heartbeat interval)."""
        lead.next_poll = min(
            lead.next_poll, hinted_poll(lead.poll_issued, now, self.heartbeat_interval)
        )

    def _for_term(self, now: float, m: msgs.Message, lead: Leadership | None) -> Leadership | None:
        """The leadership if ``m`` is for our term; tell stale senders who leads now."""
        if lead is None:
            return None
        if m.term < lead.term:
            self.fx.send(m.sender, msgs.Announce(sender=self.node_id, term=lead.term))
            return None
        if m.term > lead.term:
            # A message naming a newer term proves nothing: ask the referee now; its answer
            # steps us down if the term moved.
            self.hint(now, lead)
            return None
        return lead

    def _join(self, now: float, m: msgs.Join, lead: Leadership) -> None:
        if m.sender == self.node_id:
            return
        if m.sender in self.referee.nodes or m.sender in lead.members:
            lead.admit(now, m)
            return
        if len(self.held_joins) < MAX_HELD_JOINS or m.sender in self.held_joins:
            self.held_joins[m.sender] = (now, m)
        self.hint(now, lead)

    def admit_held(self, now: float, issued: float, lead: Leadership) -> None:
        """After a leader's poll issued at ``issued``: admit the held Joins of nodes it lists,
        forget those it does not (they arrived before the poll was issued: unregistered)."""
        held, self.held_joins = self.held_joins, {}
        for sender, (received, m) in held.items():
            if sender in self.referee.nodes and m.term == lead.term:
                lead.admit(now, m)
            elif received >= issued:
                self.held_joins[sender] = (received, m)  # the next poll decides
