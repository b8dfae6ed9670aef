"""Connections to the other members: one DEALER per peer, and what we hold for peers not yet
reachable.

Protocol thread only: the sockets are made, used and read there, and closed by
:meth:`Node.stop <ringwork.node.driver.Node.stop>` once that thread has ended.

Each DEALER dials the peer's ROUTER endpoint from the node registry with ``IMMEDIATE`` (nothing
queues for a peer that is not connected), a small send high-water mark and non-blocking sends,
so heartbeats never pile up for a dead peer. A message to a peer we just met (its endpoint being
looked up, its connection still being made) is held for up to ``HOLD_FOR`` rather than dropped:
a lost Join would cost a heartbeat interval and a rebalance. A socket monitor on each DEALER
feeds a :class:`~ringwork.node.joinwatch.Link`, so a node that cannot join can say why, and
reports each peer's connection closing, a reconnect refused and a connection made again to the
protocol core (``on_link``: fast suspicion, :mod:`ringwork.protocol.links`); reconnects start
``RECONNECT_IVL`` after a drop and back off to ``RECONNECT_IVL_MAX``, so a dead peer's refusals
come within tens of milliseconds and then cost little. A
peer whose registry row names another endpoint than the one dialled is dialled again: a named
node (static membership) comes back under the same id at a new address.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from ringwork.node.joinwatch import Link
from ringwork.node.sockets import SocketMaker

SNDHWM = 100
#: Reconnect to a peer this soon after its connection dropped (ms; ZeroMQ adds up to as much
#: again at random), doubling up to the max while refused: the first two refusals of a dead
#: peer arrive within about 0.1 s.
RECONNECT_IVL = 20
RECONNECT_IVL_MAX = 500
#: How long a message to a peer we cannot reach yet is held, and how many per peer.
HOLD_FOR = 1.0
HOLD_MAX = 20
#: What the socket monitor of a DEALER to a peer reports (connection and handshake outcomes).
MONITORED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CLOSED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_MECHANISM_MISMATCH = getattr(zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002)
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class Peers:
    """The DEALERs to other nodes, their monitors and links, and the messages held for them."""

    def __init__(
        self,
        make: SocketMaker,
        node_id: str,
        endpoint_of: Callable[[str], str | None],
        look_up: Callable[[], None],
        counters: Counter[str],
        on_link: Callable[[str, str], None] = lambda peer, change: None,
    ) -> None:
        self._make = make
        self._identity = node_id.encode()
        self._endpoint_of = endpoint_of  # the peer's ROUTER endpoint, as last read
        self._look_up = look_up  # re-read the registry: a peer newer than our last read
        self._counters = counters  # ``send_dropped`` (read by the metrics thread)
        self._on_link = on_link  # (peer, "closed" | "refused" | "connected"): to the core
        self._sockets: dict[str, zmq.Socket] = {}
        self._monitors: dict[str, zmq.Socket] = {}
        self.links: dict[str, Link] = {}
        self._held: dict[str, list[tuple[float, bytes]]] = {}

    @property
    def holding(self) -> bool:
        """Messages wait for a peer: the loop should retry them soon."""
        return bool(self._held)

    def send_or_hold(self, node_id: str, data: bytes) -> None:
        if not self._send(node_id, data):
            held = self._held.setdefault(node_id, [])
            held.append((time.monotonic() + HOLD_FOR, data))
            del held[:-HOLD_MAX]

    def flush_held(self) -> None:
        """Retry held messages; drop those older than ``HOLD_FOR`` (the protocol resends)."""
        now = time.monotonic()
        for node_id in list(self._held):
            held = self._held[node_id]
            while held and (held[0][0] < now or self._send(node_id, held[0][1])):
                if held[0][0] < now:
                    self._counters["send_dropped"] += 1
                held.pop(0)
            if not held:
                del self._held[node_id]

    def read_monitors(self) -> None:
        """Keep every link's state current and its monitor's queue short."""
        for node_id in list(self._monitors):
            self._read_monitor(node_id)

    def sync_poller(self, poller: zmq.Poller, registered: set[zmq.Socket]) -> None:
        """Keep ``poller`` watching exactly our monitors (``registered``: what it watches), so
        a peer's connection closing wakes the protocol thread at once."""
        current = set(self._monitors.values())
        for sock in registered - current:
            poller.unregister(sock)
        for sock in current - registered:
            poller.register(sock, zmq.POLLIN)
        registered.clear()
        registered.update(current)

    def close(self) -> None:
        for node_id, monitor in self._monitors.items():
            with contextlib.suppress(zmq.ZMQError):
                self._sockets[node_id].disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()

    def _send(self, node_id: str, data: bytes) -> bool:
        sock = self._socket(node_id)
        if sock is None:
            return False
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            return False  # not connected (yet), or its queue is full
        return True

    def _socket(self, node_id: str) -> zmq.Socket | None:
        sock = self._sockets.get(node_id)
        endpoint = self._endpoint_of(node_id)
        if sock is not None:
            if endpoint is None or endpoint == self.links[node_id].endpoint:
                return sock
            # The registry moved it: a named node restarted under the same id at another
            # address (static membership). Dial the new one; the old process is gone.
            self._drop(node_id)
        if endpoint is None:
            self._look_up()  # the message is held meanwhile, and the protocol resends
            return None
        sock = self._make(zmq.DEALER, server=False)
        sock.setsockopt(zmq.IDENTITY, self._identity)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX)
        self._monitors[node_id] = sock.get_monitor_socket(MONITORED)
        self.links[node_id] = Link(endpoint)
        sock.connect(endpoint)
        self._sockets[node_id] = sock
        return sock

    def _drop(self, node_id: str) -> None:
        """Close the DEALER to ``node_id`` and its monitor (its link is replaced on redial)."""
        sock, monitor = self._sockets.pop(node_id), self._monitors.pop(node_id)
        with contextlib.suppress(zmq.ZMQError):
            sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)

    def _read_monitor(self, node_id: str) -> None:
        """Apply the monitor's pending events for ``node_id`` to its :class:`Link`."""
        link, monitor = self.links[node_id], self._monitors[node_id]
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_CONNECTED:
                link.connection_made()
                self._on_link(node_id, "connected")
            elif kind == zmq.EVENT_DISCONNECTED:
                link.connection_lost()
                self._on_link(node_id, "closed")
            elif kind == zmq.EVENT_CLOSED:
                if not link.connected:  # a reconnect attempt failed (refused, unreachable)
                    self._on_link(node_id, "refused")
            elif kind == zmq.EVENT_CONNECT_RETRIED:
                link.retrying()
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.handshake_succeeded()
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
                link.handshake_failed(
                    "security mismatch (one side has a CURVE key and the other none: give "
                    "every worker the same --curve-key-file)"
                )
            elif kind & _HANDSHAKE_FAILED:
                link.handshake_failed(
                    "CURVE handshake failed (key mismatch? give every worker the same "
                    "--curve-key-file)"
                )

