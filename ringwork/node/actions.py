"""Performing what the protocol core decided: sends, broadcasts, referee calls, events.

Protocol thread only (and :meth:`Node.start <ringwork.node.driver.Node.start>`, which feeds the
core its first event before that thread exists). The core returns actions; an :class:`Actions`
turns each into I/O: a message to one peer (held briefly if that peer is not reachable yet, see
:mod:`ringwork.node.peers`), a state message on our PUB (dropped and counted at the high-water
mark: a follower that misses one asks again), a referee call on the pool thread, a partition
event for the runtime's listener (called on this thread), or a change of role, which also moves
our SUB to the new leader's PUB.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import zmq

from ringwork.coordinator import PartitionListener
from ringwork.log import log_event
from ringwork.node.peers import Peers
from ringwork.node.referee_calls import RefereeCalls
from ringwork.node.registry import SqlRegistry
from ringwork.node.sockets import OwnSockets
from ringwork.protocol import events as ev
from ringwork.protocol.messages import Codec, MessageTooLarge


class Actions:
    """Performs the core's actions for one node."""

    def __init__(
        self,
        node_id: str,
        codec: Codec,
        own: OwnSockets,
        peers: Peers,
        calls: RefereeCalls,
        registry: SqlRegistry,
        listener: PartitionListener | None,
        counters: Counter[str],
        left: threading.Event,
    ) -> None:
        self.node_id = node_id
        self.codec = codec
        self._own = own
        self._peers = peers
        self._calls = calls
        self._registry = registry
        self._listener = listener
        #: ``publish_dropped``, ``term_changes`` (read by the metrics thread)
        self._counters = counters
        self._left = left  # set once the core says we have left (stop() waits for it)
        #: The role the core last announced (read whole by any thread).
        self.role = "idle"
        self.leader: str | None = None  # as the last RoleChanged named it
        self._term: int | None = None  # as the last RoleChanged named it (term_changes)

    def perform(self, action: ev.Action) -> None:
        if isinstance(action, ev.Send):
            try:
                data = self.codec.encode(action.message)
            except MessageTooLarge as exc:
                log_event("message_too_large", logging.ERROR, node=self.node_id, error=exc)
                return
            self._peers.send_or_hold(action.to, data)
        elif isinstance(action, ev.Broadcast):
            try:
                self._own.pub.send(self.codec.encode(action.message), zmq.NOBLOCK)
            except zmq.Again:
                self._counters["publish_dropped"] += 1
        elif isinstance(action, ev.RefereeAction):
            self._calls.perform(action)
        elif isinstance(action, ev.Assigned):
            self._emit("assigned", frozenset(action.partitions))
        elif isinstance(action, ev.Revoked):
            self._emit("revoked", action.partitions)
        elif isinstance(action, ev.Lost):
            self._emit("lost", action.partitions)
        elif isinstance(action, ev.RoleChanged):
            if action.term != self._term:
                if self._term is not None:
                    self._counters["term_changes"] += 1  # a new term seen after the first
                self._term = action.term
            self.role = action.role
            self.leader = action.leader
            self._follow_pub(action.leader)
            log_event("role_changed", node=self.node_id, role=action.role, term=action.term,
                      leader=action.leader)
        elif isinstance(action, ev.Left):
            self._left.set()
        elif isinstance(action, ev.Notice):
            log_event(action.event, **{"node": self.node_id, **dict(action.detail)})

    def refollow(self) -> None:
        """Follow the leader's PUB where the registry now says it is: a named leader restarted
        under the same id listens at a new address (static membership)."""
        self._follow_pub(self.leader)

    def _follow_pub(self, leader: str | None) -> None:
        """Subscribe to the leader's PUB (and only the leader's)."""
        target = None
        if leader is not None and leader != self.node_id:
            target = self._registry.pub_endpoint_of(leader)
        self._own.follow(target)

    def _emit(self, kind: str, partitions: frozenset[int]) -> None:
        log_event(f"partition_{kind}", node=self.node_id, count=len(partitions),
                  partitions=ranges(partitions))
        if self._listener is not None and partitions:
            self._listener(kind, partitions)


def ranges(partitions: frozenset[int]) -> str:
    """``{0,1,2,5}`` -> ``0-2,5`` for compact logs."""
    out: list[str] = []
    for p in sorted(partitions):
        if out and out[-1].split("-")[-1] == str(p - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ",".join(out)
