"""Noticing that a node cannot join its cluster, and saying why in words an operator can act on.

A node that registered in the database but cannot talk to its leader (a wrong or missing CURVE
key, a firewall, a wrong ``--advertise``) used to look like a healthy follower with nothing to
do. The node driver feeds a :class:`JoinWatch` the core's view (member or not, and since when it
has been trying) on its protocol thread; past ``ALARM_AFTER`` session timeouts the watch asks
for an error, then again every ``ALARM_EVERY`` while it lasts. The reason comes from
:class:`Link`, what the ZeroMQ socket monitor said about the connection to the leader.

No zmq here, and no clock: the driver translates monitor events into :class:`Link` fields
(:mod:`ringwork.node.peers`) and passes the time in. Protocol thread only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ringwork.log import log_event

#: Session timeouts of failing to join before the first error (a failover or a rebalance after
#: a start takes one or two), and between repeats while it lasts.
ALARM_AFTER = 3.0
ALARM_EVERY = 10.0


@dataclass
class Link:
    """What the socket monitor reported about our DEALER to one peer's ROUTER."""

    endpoint: str
    connected: bool = False
    secured: bool = False  # a ZMTP handshake (CURVE or plain) completed
    failure: str | None = None  # the last handshake failure, until a handshake succeeds
    refused: int = 0  # connection attempts that failed before any TCP connection was made

    def connection_made(self) -> None:
        self.connected = True

    def connection_lost(self) -> None:
        self.connected = False
        self.secured = False

    def retrying(self) -> None:
        if not self.connected:
            self.refused += 1

    def handshake_succeeded(self) -> None:
        self.secured = True
        self.failure = None
        self.refused = 0

    def handshake_failed(self, failure: str) -> None:
        self.secured = False
        self.failure = failure


def reason(leader: str | None, link: Link | None) -> str:
    """Why we are not a member, as far as this node can see."""
    if leader is None:
        return "no live leader in the registry yet (an election is pending or keeps failing)"
    if link is None:
        return f"the leader {leader} has no endpoint in the registry yet"
    at = link.endpoint
    if link.failure is not None:
        return f"{link.failure} with {at}"
    if link.refused and not link.connected:
        return (
            f"cannot connect to the leader at {at} (refused or unreachable: is the port open "
            "and --advertise an address other hosts can reach?)"
        )
    return f"no answer from the leader at {at}"


class JoinWatch:
    """Decides when a node that is not a member should say so (driver side: owns no clock)."""

    def __init__(self, session_timeout: float) -> None:
        self.after = ALARM_AFTER * session_timeout
        self.every = ALARM_EVERY * session_timeout
        self._next_alarm: float | None = None
        self.alarmed = False

    def update(self, now: float, member: bool, joining_since: float | None) -> str | None:
        """``"alarm"`` when an error is due now, ``"joined"`` when a node that alarmed has
        joined at last, else ``None``."""
        if member or joining_since is None:
            self._next_alarm = None
            if self.alarmed and member:
                self.alarmed = False
                return "joined"
            return None
        if self._next_alarm is None:
            self._next_alarm = joining_since + self.after
        if now >= self._next_alarm:
            self._next_alarm = now + self.every
            self.alarmed = True
            return "alarm"
        return None

    def report(
        self,
        now: float,
        node_id: str,
        member: bool,
        joining_since: float | None,
        leader: str | None,
        link: Link | None,
    ) -> None:
        """:meth:`update`, and log what it decided: ``join_failed`` (an error, with the reason
        from ``link``, what we know of the connection to ``leader``) or ``join_completed``."""
        verdict = self.update(now, member, joining_since)
        if verdict == "alarm":
            waited = f"{now - joining_since:.1f}" if joining_since is not None else "?"
            log_event("join_failed", logging.ERROR, node=node_id, leader=leader, waited=waited,
                      reason=f"cannot join the cluster: {reason(leader, link)}")
        elif verdict == "joined":
            log_event("join_completed", node=node_id, leader=leader)
