"""Perform the core's referee actions against a real referee: the one place that knows the order.

The driver (and the simulator) call :func:`perform` on the thread that owns the database session
and feed the returned event back to the core. The order of the calls is part of the protocol:

* ``Poll``: touch our registry row *before* reading the term. A leader renews its authority from
  a poll, so a successor that reads our row after its CAS sees a ``last_seen`` no older than any
  read that renewed us -- which bounds how long our authority (and every lease we granted) runs.
  A follower's poll also reads the partitions table, after the touch and the term: a degraded
  follower's lease starts before the touch, and what it may claim is what that read confirmed.
  The reads after the touch may be one (a :class:`~ringwork.protocol.referee.PollReader`: one
  statement, one snapshot); the touch never joins them, since it must commit first.
* ``ClaimLeadership``: the CAS first, then touch and read. The touch after a won CAS marks the new
  leader's authority start for *its* successor; the reads after the CAS are the takeover snapshot.
* Any :class:`~ringwork.errors.DatabaseUnavailable` becomes :class:`RefereeFailed`: the core treats
  the operation as not done (a leader steps down, since a failed write may still have applied).
"""

from __future__ import annotations

from ringwork.errors import DatabaseUnavailable
from ringwork.protocol import events as ev
from ringwork.protocol.referee import PollReader, Referee, Registry


def perform(
    action: ev.RefereeAction, node_id: str, referee: Referee, registry: Registry
) -> ev.Event:
    try:
        if isinstance(action, ev.Poll):
            registry.touch(node_id)  # committed before the reads: see the module docstring
            if isinstance(registry, PollReader):  # the reads in one round trip
                term, found, owned = registry.read_poll(action.partitions)
                return ev.PollResult(op_id=action.op_id, term=term, nodes=tuple(found),
                                     partitions=owned)
            term = referee.read_term()
            nodes = tuple(registry.read_nodes())
            owned = referee.read_partitions() if action.partitions else {}
            return ev.PollResult(op_id=action.op_id, term=term, nodes=nodes, partitions=owned)
        if isinstance(action, ev.ClaimLeadership):
            won = referee.claim_leadership(node_id, action.seen_term)
            if won is None:
                return ev.LeadershipResult(op_id=action.op_id, term=None)
            registry.touch(node_id)
            return ev.LeadershipResult(
                op_id=action.op_id,
                term=won,
                partitions=referee.read_partitions(),
                nodes=tuple(registry.read_nodes()),
            )
        if isinstance(action, ev.WriteAssignment):
            epochs = referee.assign(node_id, action.term, action.owners, action.keep,
                                    action.stale_after)
            return ev.AssignResult(op_id=action.op_id, epochs=epochs)
        if isinstance(action, ev.SweepOrphans):
            count = referee.requeue_orphans(node_id, action.term, action.keep, action.stale_after)
            return ev.SweepResult(op_id=action.op_id, requeued=count)
    except DatabaseUnavailable as exc:
        return ev.RefereeFailed(op_id=action.op_id, error=str(exc) or type(exc).__name__)
    raise TypeError(f"not a referee action: {action!r}")
