"""A node's role in the ring, and the few facts about itself that every part of the core reads.

Pure data: no part of the protocol lives here, so following, elections and leading can all
import it without importing one another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ringwork.protocol.config import ProtocolConfig


class Role(str, Enum):
    """What a node is to the cluster. Only :class:`~ringwork.protocol.transitions.Transitions`
    changes it.

    ::

                  Start
        IDLE ──────────────> FOLLOWER ───┐  a poll (or an Announce, checked by a poll)
                              │   ^  ^───┘  names another leader: follow it
          ClaimLeadership won │   │
          (a poll showed the  │   │ step down: a write refused or failed, a poll shows
          leader gone, and it │   │ another term, or the authority lapsed
          was my rank's turn) v   │
                             LEADER
                              │
             leaving, and     │              LeaveAck, drained with no leader to tell,
             owns nothing:    │              or the leave budget spent
             Resign           v
                             STOPPED <────────────────── FOLLOWER (leaving)

    Within FOLLOWER (see :mod:`ringwork.protocol.follower`): *joining* until the leader's first
    Ack (suspended: claims nothing); *following* while the lease from its Acks runs; *degraded*
    while only the lease from our own registry touches does; *suspended* when both have run
    out (``held`` is kept, kazoo's SUSPENDED); an election is a ClaimLeadership in flight (a lost
    one polls again at once). *Leaving* is not a role: a leaving follower drains and hands back
    everything, a leaving leader moves its own partitions away and then resigns; a leaving
    leader whose authority lapses finishes its leave as a follower.
    """

    IDLE = "idle"
    FOLLOWER = "follower"
    LEADER = "leader"
    STOPPED = "stopped"

    def __str__(self) -> str:  # "leader", not "Role.LEADER", in messages and logs
        return self.value

    def __format__(self, spec: str) -> str:
        return self.value.__format__(spec)


@dataclass
class NodeState:
    """Who this node is and where it stands: read by every part of the core, changed by the
    core's transitions (and ``incarnation`` by a follower told to rejoin)."""

    node_id: str
    config: ProtocolConfig
    #: Bumped each time this node rejoins after being declared dead. A process that reuses a
    #: node id must start above every earlier incarnation (e.g. pass its registered_seq).
    incarnation: int = 0
    role: Role = Role.IDLE
    term: int = 0
    leader: str | None = None
    leaving: bool = False
    leave_started: float = math.inf
    #: A named node (static membership): it says so in its Joins and, leading, its Acks.
    named: bool = False

    def leave_budget(self) -> float:
        """How long a leave may take in all before the node stops regardless."""
        return self.config.revoke_timeout + self.config.leave_timeout
