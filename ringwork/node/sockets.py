"""The node's own sockets: a ROUTER for requests, a PUB for cluster state, a SUB to the leader's.

Made and bound by :meth:`Node.start <ringwork.node.driver.Node.start>` on the thread that calls
it, before the protocol thread exists; from then on only the protocol thread uses them, until
:meth:`Node.stop` closes them after that thread has ended (zmq sockets are not thread-safe).

The options bound what a peer can make us hold: a frame larger than ``max_message_bytes`` (plus
1 KiB) makes zmq drop the connection (``MAXMSGSIZE``), and at most ``RCVHWM`` messages wait per
connected peer on the ROUTER and SUB (docs/operations.md gives the figure). Every socket closes
with linger 0, so a stopping node never waits for a peer that is gone.
"""

from __future__ import annotations

import contextlib

import zmq

from ringwork.addresses import BindAddress, bind_error, socket_ports
from ringwork.errors import ConfigurationError
from ringwork.node.curve import CurveKeys
from ringwork.settings import host_of

#: Messages queued per connected peer on the ROUTER and SUB before zmq stops reading from that
#: peer (TCP back-pressure, nothing dropped). A peer sends a few messages per heartbeat interval
#: and the loop drains continuously, so a handful is plenty; it bounds what one peer can make us
#: hold to about ``(RCVHWM + 2) * max_message_bytes`` (docs/operations.md).
RCVHWM = 4
#: Messages queued per subscriber on our PUB: a subscriber that does not read (or a hostile one)
#: costs at most this many state messages; a follower that misses one asks again.
PUB_SNDHWM = 8


class SocketMaker:
    """Makes sockets of one context with linger 0 and, when the cluster has one, its CURVE key."""

    def __init__(self, ctx: zmq.Context, curve: CurveKeys | None) -> None:
        self.ctx = ctx
        self.curve = curve

    def __call__(self, kind: int, *, server: bool) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            (self.curve.server if server else self.curve.client)(sock)
        return sock


class OwnSockets:
    """The ROUTER, PUB and SUB of one node, and the endpoints peers reach them at."""

    def __init__(self, make: SocketMaker, max_message_bytes: int) -> None:
        # MAXMSGSIZE is per frame: zmq disconnects a peer that announces a larger one before
        # reading it, which keeps it out of memory. 1 KiB over the codec's limit, so a frame just
        # over it still reaches the codec and is counted as ``oversized``.
        limit = max_message_bytes + 1024
        self.router = make(zmq.ROUTER, server=True)
        self.router.setsockopt(zmq.RCVHWM, RCVHWM)
        self.router.setsockopt(zmq.MAXMSGSIZE, limit)
        # A peer's DEALER has its node id as identity; a named node's next process (static
        # membership) connects under the same one while the old connection may linger (a kill,
        # a cut): the new connection takes the identity over instead of being refused.
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.pub = make(zmq.PUB, server=True)
        self.pub.setsockopt(zmq.SNDHWM, PUB_SNDHWM)
        self.sub = make(zmq.SUB, server=False)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, RCVHWM)
        self.sub.setsockopt(zmq.MAXMSGSIZE, limit)
        self._sub_target: str | None = None  # the PUB endpoint the SUB is connected to

    def bind(self, bind: str, advertise: str | None, pub_port: int) -> tuple[str, str]:
        """Bind the ROUTER and the PUB; their endpoints as peers must dial them.

        Both listening ports are predictable (ROUTER on the --bind port, PUB on the next one or
        --pub-port), so a firewall can be written before the worker starts.
        """
        address = BindAddress.parse(bind)
        router_port, pub = socket_ports(address, pub_port)
        endpoint = _bind(self.router, address, router_port, "--bind", advertise)
        return endpoint, _bind(self.pub, address, pub, "PUB, --pub-port", advertise)

    def follow(self, target: str | None) -> None:
        """Subscribe to the PUB at ``target`` (the leader's) and to nothing else."""
        if target == self._sub_target:
            return
        if self._sub_target is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.sub.disconnect(self._sub_target)
        if target is not None:
            self.sub.connect(target)
        self._sub_target = target

    def close(self) -> None:
        for sock in (self.router, self.pub, self.sub):
            sock.close(linger=0)


def _bind(
    sock: zmq.Socket, address: BindAddress, port: int | None, what: str, advertise: str | None
) -> str:
    try:
        if port is None:
            port = sock.bind_to_random_port(f"tcp://{address.host}")
        else:
            sock.bind(address.url(port))
    except zmq.ZMQError as exc:
        raise bind_error(what, address.host, port, exc) from None
    if advertise:
        return f"tcp://{host_of(advertise)}:{port}"
    if address.socket_host in ("0.0.0.0", "::"):
        raise ConfigurationError("--bind on all interfaces needs --advertise HOST")
    return address.url(port)
