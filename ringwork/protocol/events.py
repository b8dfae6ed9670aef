"""What goes into the protocol core (events) and what comes out of it (actions).

The core is fed ``core.handle(now, event)`` and answers with a list of actions; the driver (the
zmq node, or the simulator) performs them and feeds their results back as events. Referee
operations carry an ``op_id`` that their result event must echo.

Driver contract for the referee operations (see :mod:`ringwork.protocol.operations`, which
implements it over any :class:`Referee` + :class:`Registry`):

* :class:`Poll`: touch this node's registry row (committed), then read the term and the registry
  (and the partitions table if ``partitions``); answer :class:`PollResult`.
* :class:`ClaimLeadership`: ``claim_leadership(node, seen_term)``; on success touch this node's row
  and read the registry and the partitions (all after the CAS); answer :class:`LeadershipResult`.
* :class:`WriteAssignment`: ``assign(leader, term, owners, keep, stale_after)``; answer
  :class:`AssignResult`.
* :class:`SweepOrphans`: ``requeue_orphans(leader, term, keep, stale_after)``; answer
  :class:`SweepResult`.
* Any transient failure: answer :class:`RefereeFailed` (the core treats the write as not done).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ringwork.protocol.messages import Message
from ringwork.protocol.referee import NodeRecord, Ownership, TermRecord

# --------------------------------------------------------------------------------------- events


@dataclass(frozen=True, kw_only=True)
class Event:
    pass


@dataclass(frozen=True, kw_only=True)
class Start(Event):
    """Begin: find the cluster through the referee and join it (or lead it)."""


@dataclass(frozen=True, kw_only=True)
class Tick(Event):
    """Time has passed; the core fires whatever timers are due (see ``Core.next_deadline``)."""


@dataclass(frozen=True, kw_only=True)
class MessageReceived(Event):
    """A decoded message from a peer (the codec already dropped anything malformed)."""

    message: Message


@dataclass(frozen=True, kw_only=True)
class PollResult(Event):
    op_id: int
    term: TermRecord
    nodes: tuple[NodeRecord, ...]
    #: Read after the touch when the Poll asked for it (a follower's degraded-mode lease).
    partitions: Mapping[int, Ownership] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class LeadershipResult(Event):
    """Result of :class:`ClaimLeadership`: ``term`` is ``None`` if someone else moved the term."""

    op_id: int
    term: int | None
    partitions: Mapping[int, Ownership] = field(default_factory=dict)
    nodes: tuple[NodeRecord, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AssignResult(Event):
    """Result of :class:`WriteAssignment`: new epochs, or ``None`` if the term was stale."""

    op_id: int
    epochs: Mapping[int, int] | None


@dataclass(frozen=True, kw_only=True)
class SweepResult(Event):
    """Result of :class:`SweepOrphans`: jobs re-queued, or ``None`` if the term was stale."""

    op_id: int
    requeued: int | None


@dataclass(frozen=True, kw_only=True)
class RefereeFailed(Event):
    op_id: int
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class RevokeConfirmed(Event):
    """The runtime claims nothing more from these revoked partitions (no claim round is out).
    Their running jobs need not be done: they keep their claims (fenced by job)."""

    partitions: frozenset[int]


@dataclass(frozen=True, kw_only=True)
class LinkChanged(Event):
    """What the operating system said about our connection to ``peer`` (the driver's socket
    monitor): ``closed`` (the peer closed an established connection), ``refused`` (a reconnect
    attempt failed), ``connected`` (a connection is up again). See
    :mod:`ringwork.protocol.links`: the core suspects, confirms, and decides."""

    peer: str
    change: str  # "closed" | "refused" | "connected"


@dataclass(frozen=True, kw_only=True)
class LeaveRequested(Event):
    """Leave the cluster cleanly: stop claiming, drain, hand everything over, then stop."""


# -------------------------------------------------------------------------------------- actions


@dataclass(frozen=True, kw_only=True)
class Action:
    pass


@dataclass(frozen=True, kw_only=True)
class Send(Action):
    """Send ``message`` to node ``to`` (its ROUTER endpoint, from the registry)."""

    to: str
    message: Message


@dataclass(frozen=True, kw_only=True)
class Broadcast(Action):
    """Publish ``message`` to every member (the leader's PUB socket)."""

    message: Message


@dataclass(frozen=True, kw_only=True)
class RefereeAction(Action):
    op_id: int


@dataclass(frozen=True, kw_only=True)
class Poll(RefereeAction):
    #: Also read the partitions table (followers do: it backs their degraded-mode lease).
    partitions: bool = False


@dataclass(frozen=True, kw_only=True)
class ClaimLeadership(RefereeAction):
    seen_term: int


@dataclass(frozen=True, kw_only=True)
class WriteAssignment(RefereeAction):
    """Move ``owners`` under ``term``. Jobs still running in a moved partition keep their claim
    unless their claimer is dead: not in ``keep`` (the members) and its registry row is
    ``stale_after`` seconds old or gone (see :mod:`ringwork.protocol.referee`)."""

    term: int
    owners: Mapping[int, str | None]
    keep: tuple[str, ...] = ()
    stale_after: float = math.inf


@dataclass(frozen=True, kw_only=True)
class SweepOrphans(RefereeAction):
    """Re-queue the running jobs of dead claimers (the rule of :class:`WriteAssignment`) in
    partitions that have moved since they were claimed: jobs a node carried past a rebalance
    and then died with, which no later move of their partition would find."""

    term: int
    keep: tuple[str, ...]
    stale_after: float


@dataclass(frozen=True, kw_only=True)
class Assigned(Action):
    """These partitions are now ours, at these epochs (partition -> epoch). The runtime may claim
    from them whenever ``core.claimable(now)`` lists them. Jobs of them that earlier owners still
    run keep their claims; the ordered-key head check keeps a key's next job behind them."""

    partitions: Mapping[int, int]


@dataclass(frozen=True, kw_only=True)
class Revoked(Action):
    """Clean hand-off: stop claiming these now and confirm with :class:`RevokeConfirmed` once no
    claim round is out (the leader hands them over at the latest after revoke_timeout). Jobs
    in flight run on: their claims survive the move."""

    partitions: frozenset[int]


@dataclass(frozen=True, kw_only=True)
class Lost(Action):
    """Taken away without a clean hand-off (we were fenced or declared dead): claim nothing more
    from these. Outcomes of jobs claimed there are still written: the store accepts each under
    its own claim unless the job was re-queued meanwhile (then it is refused, "fenced")."""

    partitions: frozenset[int]


@dataclass(frozen=True, kw_only=True)
class RoleChanged(Action):
    """Informational: ``role`` is ``"leader"``, ``"follower"`` or ``"stopped"``."""

    role: str
    term: int
    leader: str | None


@dataclass(frozen=True, kw_only=True)
class Left(Action):
    """The clean leave is complete (or gave up): the driver may unregister and exit."""


@dataclass(frozen=True, kw_only=True)
class Notice(Action):
    """Something worth a structured log line (``event`` is a stable name, e.g. ``member_dead``)."""

    event: str
    detail: Mapping[str, object] = field(default_factory=dict)
