"""The referee as this node last read it: the term, the registry, and when it last answered.

Following, elections and leading all decide from the same read; this object is that read, so
none of them has to ask another for it.

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

import math

from ringwork.protocol import events as ev
from ringwork.protocol.effects import Effects
from ringwork.protocol.referee import NodeRecord, TermRecord


class RefereeView:
    """The last term and registry read, and the timing of our polls and of the answers."""

    def __init__(self, session_timeout: float) -> None:
        self.session_timeout = session_timeout
        self.term_record = TermRecord(term=0, leader=None)
        self.nodes: dict[str, NodeRecord] = {}
        self.nodes_polled_at = -math.inf  # when the poll that read ``nodes`` was issued
        self.last_poll_issued = -math.inf
        # When the referee last answered, and the last silence of it longer than session_timeout
        # (start, end): during such a silence nobody could touch a registry row, so a stale row
        # says nothing about whether its node is alive (see Election.won).
        self.answered_at = -math.inf
        self.silence = (-math.inf, -math.inf)

    def alive(self, node: str | None) -> bool:
        """Whether ``node``'s registry row was fresh (younger than session_timeout)."""
        record = self.nodes.get(node) if node is not None else None
        return record is not None and record.age < self.session_timeout

    def answered(self, now: float) -> None:
        if now - self.answered_at > self.session_timeout:
            self.silence = (self.answered_at, now)
        self.answered_at = now

    def read_nodes(self, nodes: tuple[NodeRecord, ...], issued: float) -> None:
        """Adopt a registry read made by an operation issued at ``issued``."""
        self.nodes = {n.node_id: n for n in nodes}
        self.nodes_polled_at = issued

    def poll(self, fx: Effects, *, partitions: bool) -> int:
        """Issue a poll (``partitions``: read the partitions table too, as followers do)."""
        self.last_poll_issued = fx.now
        return fx.referee_op(lambda op: ev.Poll(op_id=op, partitions=partitions))


def hinted_poll(last_issued: float, now: float, heartbeat_interval: float) -> float:
    """When to poll for a hint of a newer term: now, but a flood of forged hints costs the
    referee at most one poll per quarter heartbeat interval."""
    return max(now, last_issued + heartbeat_interval / 4)
