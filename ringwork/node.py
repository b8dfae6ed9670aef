"""The node driver: the only module that imports zmq. It owns the sockets and the clock.

A :class:`Node` runs the sans-IO protocol core on a thread of its own, so heartbeats never wait
behind handler work (not even CPU-bound handlers: the GIL is released in zmq's poll and the
thread is woken at every deadline). It performs the core's actions:

* ``Send(to, m)``: a DEALER per peer, connected to the peer's ROUTER endpoint from the node
  registry (``IMMEDIATE`` so nothing queues for a peer that is not connected, a small send
  high-water mark and non-blocking sends, so heartbeats never pile up for a dead peer);
* ``Broadcast(m)``: our PUB socket; followers SUB to the current leader's PUB. State messages are
  numbered, so a follower that missed one (a slow joiner, a high-water-mark drop) asks again;
* referee operations: on a separate thread (:mod:`ringwork.protocol.operations` over the SQL
  store), their results fed back as events -- a slow database never stalls the heartbeat loop;
* partition events: forwarded to the worker runtime's listener.

Everything that arrives is decoded by the protocol codec, which drops (and counts) malformed,
oversized, foreign-cluster and wrong-version input; a message whose claimed sender differs from
the socket identity that delivered it is dropped as ``spoofed``.

Nothing a peer sends may stop this thread. Each frame is handled inside a guard: a failure while
handling it is counted by reason (``view()["errors"]``), logged (rate-limited) and the loop goes
on. Memory is bounded by socket options: a frame larger than ``max_message_bytes`` makes zmq
drop the connection (``MAXMSGSIZE``), and at most ``RCVHWM`` messages wait per connected peer
(docs/operations.md gives the figure). If the loop dies anyway (a bug), :meth:`Node.failure`
says why and every partition is reported lost; the runtime then ends the process (exit 70), so a
supervisor restarts it, rather than leave a member that no longer takes part.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
from zmq.utils.monitor import recv_monitor_message

from ringwork.addresses import NEXT_PORT, BindAddress, bind_error, socket_ports
from ringwork.coordinator import PartitionListener, new_node_id
from ringwork.errors import ConfigurationError, RingworkError
from ringwork.faults import FaultLog, reason_of
from ringwork.joinwatch import JoinWatch, Link
from ringwork.joinwatch import reason as join_problem
from ringwork.log import log_event
from ringwork.protocol import events as ev
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.core import Core
from ringwork.protocol.messages import Codec, Message, MessageTooLarge
from ringwork.protocol.operations import perform
from ringwork.protocol.referee import NodeRecord
from ringwork.settings import host_of

if TYPE_CHECKING:
    from ringwork.store import Store

#: Upper bound on one poll, so queued inbox events (revoke confirmations) are seen promptly.
MAX_POLL = 0.05
SNDHWM = 100
#: How long a message to a peer we cannot reach yet is held, how many, and how often retried.
HOLD_FOR = 1.0
NODE_COUNTERS = ("dropped_frames", "send_dropped", "publish_dropped")
HOLD_MAX = 20
HELD_POLL = 0.002
#: Messages queued per connected peer on the ROUTER and SUB before zmq stops reading from that
#: peer (TCP back-pressure, nothing dropped). A peer sends a few messages per heartbeat interval
#: and the loop drains continuously, so a handful is plenty; it bounds what one peer can make us
#: hold to about ``(RCVHWM + 2) * max_message_bytes`` (docs/operations.md).
RCVHWM = 4
#: At most this many frames, or this many seconds, per drain of a socket: a flood on one socket
#: must not keep the loop from its timers (renewing the leader's authority, the heartcheck).
DRAIN_FRAMES = 64
DRAIN_TIME = 0.005
#: Messages queued per subscriber on our PUB: a subscriber that does not read (or a hostile one)
#: costs at most this many state messages; a follower that misses one asks again.
PUB_SNDHWM = 8
#: How often the protocol thread checks whether this node is (still) a member.
WATCH_EVERY = 0.25
#: What the socket monitor of a DEALER to a peer reports (connection and handshake outcomes).
MONITORED = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


@dataclass(frozen=True)
class CurveKeys:
    """The cluster's shared CURVE key pair (Z85 text). Every node is both server and client."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> CurveKeys:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def load(cls, path: str | Path) -> CurveKeys:
        """Read a file written by ``ringwork keys`` (``public=...`` and ``secret=...`` lines)."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise ConfigurationError(
                f"CURVE key file {path} does not exist: fix --curve-key-file, or make the "
                "cluster's key with `ringwork keys -o FILE` and give every worker that file"
            ) from None
        except PermissionError:
            raise ConfigurationError(
                f"cannot read CURVE key file {path}: permission denied (let this user read it)"
            ) from None
        except IsADirectoryError:
            raise ConfigurationError(f"{path} is a directory: name the CURVE key file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read CURVE key file {path}: {exc}") from None
        fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        public = fields.get("public", "").strip().encode()
        secret = fields.get("secret", "").strip().encode()
        if len(public) != 40 or len(secret) != 40:
            raise ConfigurationError(
                f"{path} is not a CURVE key file (expected public= and secret= lines of 40 "
                "Z85 characters, as `ringwork keys -o FILE` writes)"
            )
        keys = cls(public, secret)
        return keys

    def dump(self) -> str:
        return f"public={self.public.decode()}\nsecret={self.secret.decode()}\n"

    def server(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def client(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.public


class SqlRegistry:
    """The protocol's registry view over the SQL store; remembers each node's PUB endpoint."""

    def __init__(self, store: Store, pub_endpoint: str, wake_endpoint: str | None) -> None:
        self.store = store
        self.pub_endpoint = pub_endpoint
        self.wake_endpoint = wake_endpoint
        #: Whether the node is a member, recorded with every touch (set by the protocol thread).
        self.joined = False
        self.pub_endpoints: dict[str, str] = {}
        self.router_endpoints: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, node_id: str, endpoint: str) -> int:
        return self.store.register_node(
            node_id, endpoint, pub_endpoint=self.pub_endpoint, wake_endpoint=self.wake_endpoint
        )

    def touch(self, node_id: str) -> None:
        self.store.touch_node(node_id, joined=self.joined)

    def record_joined(self, node_id: str, joined: bool) -> None:
        """Record a change of membership at once, not at the next touch (for ``status``)."""
        with contextlib.suppress(RingworkError):  # if it fails, the next touch records it
            self.store.mark_joined(node_id, joined)

    def read_nodes(self) -> list[NodeRecord]:
        rows = self.store.list_nodes()
        with self._lock:
            for row in rows:
                self.router_endpoints[row.node_id] = row.endpoint
                if row.pub_endpoint:
                    self.pub_endpoints[row.node_id] = row.pub_endpoint
        return [NodeRecord(r.node_id, r.endpoint, r.registered_seq, r.age) for r in rows]

    def unregister(self, node_id: str) -> None:
        self.store.deregister_node(node_id)

    def endpoints(self, node_id: str) -> tuple[str | None, str | None]:
        with self._lock:
            return self.router_endpoints.get(node_id), self.pub_endpoints.get(node_id)


class Node:
    """One cluster member: implements the runtime's :class:`~ringwork.coordinator.Coordinator`."""

    def __init__(
        self,
        store: Store,
        config: ProtocolConfig,
        *,
        bind: str = "tcp://127.0.0.1:*",
        advertise: str | None = None,
        curve: CurveKeys | None = None,
        node_id: str | None = None,
        pub_port: int = NEXT_PORT,
    ) -> None:
        self.store = store
        self.config = config
        self.node_id = node_id or new_node_id()
        self.curve = curve
        self._bind = bind
        self._advertise = advertise
        self._pub_port = pub_port
        self.codec = Codec(
            config.cluster, max_bytes=config.max_message_bytes, partitions=config.partitions
        )
        self.codec.dropped["spoofed"] += 0
        # Every key exists from the start: the metrics thread reads these while we count.
        self.counters: Counter[str] = Counter(dict.fromkeys(NODE_COUNTERS, 0))
        #: Failures while handling one peer's input (by reason): logged, counted, survived.
        self.faults = FaultLog("peer_input_failed", self.node_id)
        #: Frames dropped (by the codec's reason): logged rate-limited, counted in ``dropped``.
        self._drops = FaultLog("frame_dropped", self.node_id, interval=60.0, level=logging.INFO)
        self._failure: str | None = None
        self.role = "idle"
        self.endpoint = ""
        self.pub_endpoint = ""
        self._ctx = zmq.Context()
        self._core_lock = threading.Lock()
        self._core: Core | None = None
        self._inbox: queue.SimpleQueue[ev.Event] = queue.SimpleQueue()
        self._referee_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringwork-ref")
        self._ops: list[Future[ev.Event | None]] = []
        self._refreshing = False
        self._peers: dict[str, zmq.Socket] = {}
        self._held: dict[str, list[tuple[float, bytes]]] = {}
        self._sub_target: str | None = None
        self._listener: PartitionListener | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._left = threading.Event()
        self._registry: SqlRegistry | None = None
        self._watch = JoinWatch(config.session_timeout)
        self._next_watch = 0.0
        self._links: dict[str, Link] = {}
        self._monitors: dict[str, zmq.Socket] = {}

    # -- Coordinator interface -----------------------------------------------------------------

    def start(self, listener: PartitionListener, wake_endpoint: str | None) -> None:
        """Bind, register in the database, and start the protocol thread.

        The runtime retries this while the database is unreachable; the sockets are made once.
        """
        self._listener = listener
        if not self.endpoint:
            self._open_sockets()
        self._registry = SqlRegistry(self.store, self.pub_endpoint, wake_endpoint)
        seq = self._registry.register(self.node_id, self.endpoint)
        core = Core(self.node_id, self.config, incarnation=seq)
        with self._core_lock:
            self._core = core
        log_event(
            "node_registered",
            node=self.node_id,
            endpoint=self.endpoint,
            pub=self.pub_endpoint,
            seq=seq,
        )
        self._running.set()
        self._feed(time.monotonic(), ev.Start())
        self._thread = threading.Thread(target=self._loop, name="ringwork-node", daemon=True)
        self._thread.start()

    def _open_sockets(self) -> None:
        # MAXMSGSIZE is per frame: zmq disconnects a peer that announces a larger one before
        # reading it, which keeps it out of memory. 1 KiB over the codec's limit, so a frame just
        # over it still reaches the codec and is counted as ``oversized``.
        limit = self.config.max_message_bytes + 1024
        self._router = self._socket(zmq.ROUTER, server=True)
        self._router.setsockopt(zmq.RCVHWM, RCVHWM)
        self._router.setsockopt(zmq.MAXMSGSIZE, limit)
        self._pub = self._socket(zmq.PUB, server=True)
        self._pub.setsockopt(zmq.SNDHWM, PUB_SNDHWM)
        self._sub = self._socket(zmq.SUB, server=False)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.setsockopt(zmq.RCVHWM, RCVHWM)
        self._sub.setsockopt(zmq.MAXMSGSIZE, limit)
        # Both listening ports are predictable (ROUTER on the --bind port, PUB on the next one
        # or --pub-port), so a firewall can be written before the worker starts.
        address = BindAddress.parse(self._bind)
        router_port, pub_port = socket_ports(address, self._pub_port)
        self.endpoint = self._bind_socket(self._router, address, router_port, "--bind")
        self.pub_endpoint = self._bind_socket(self._pub, address, pub_port, "PUB, --pub-port")

    def claimable(self) -> Mapping[int, int]:
        with self._core_lock:
            if self._core is None:
                return {}
            return self._core.claimable(time.monotonic())

    def revoke_done(self, partitions: frozenset[int]) -> None:
        self._inbox.put(ev.RevokeConfirmed(partitions=partitions))

    def begin_leave(self) -> None:
        """Ask the leader to move our partitions now (the runtime drains them meanwhile)."""
        self._inbox.put(ev.LeaveRequested())

    def stop(self) -> None:
        """Leave cleanly (bounded), then unregister and close every socket with linger 0."""
        if self._thread is not None and self._thread.is_alive():
            self.begin_leave()
            budget = self.config.revoke_timeout + self.config.leave_timeout + 1.0
            if not self._left.wait(budget):
                log_event("leave_timed_out", node=self.node_id)
        self._running.clear()
        if self._thread is not None:
            self._thread.join(5)
        self._referee_pool.shutdown(wait=True, cancel_futures=True)
        try:
            if self._registry is not None:
                self._registry.unregister(self.node_id)
        except RingworkError as exc:
            log_event("unregister_failed", node=self.node_id, error=exc)
        for node_id, monitor in self._monitors.items():
            with contextlib.suppress(zmq.ZMQError):
                self._peers[node_id].disable_monitor()
            monitor.close(linger=0)
        self._monitors.clear()
        for sock in [
            *self._peers.values(),
            getattr(self, "_router", None),
            getattr(self, "_pub", None),
            getattr(self, "_sub", None),
        ]:
            if sock is not None:
                sock.close(linger=0)
        self._peers.clear()
        self._ctx.term()

    def failure(self) -> str | None:
        """``None`` while the protocol thread runs; else why it stopped (it will not restart)."""
        return self._failure

    def view(self) -> dict[str, object]:
        """The core's own snapshot plus the drop and error counters (for status and metrics)."""
        with self._core_lock:
            data = self._core.view() if self._core is not None else {}
        data["dropped"] = dict(self.codec.dropped)
        data["errors"] = dict(self.faults.counts)
        data.update({k: v for k, v in self.counters.items()})
        if self._failure is not None:
            data["failure"] = self._failure
        return data

    # -- sockets -------------------------------------------------------------------------------

    def _socket(self, kind: int, *, server: bool) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            (self.curve.server if server else self.curve.client)(sock)
        return sock

    def _bind_socket(
        self, sock: zmq.Socket, address: BindAddress, port: int | None, what: str
    ) -> str:
        try:
            if port is None:
                port = sock.bind_to_random_port(f"tcp://{address.host}")
            else:
                sock.bind(address.url(port))
        except zmq.ZMQError as exc:
            raise bind_error(what, address.host, port, exc) from None
        if self._advertise:
            return f"tcp://{host_of(self._advertise)}:{port}"
        if address.socket_host in ("0.0.0.0", "::"):
            raise ConfigurationError("--bind on all interfaces needs --advertise HOST")
        return address.url(port)

    def _peer(self, node_id: str) -> zmq.Socket | None:
        sock = self._peers.get(node_id)
        if sock is not None:
            return sock
        assert self._registry is not None
        endpoint, _ = self._registry.endpoints(node_id)
        if endpoint is None:
            # A peer newer than our last registry read: look it up; the protocol resends.
            if not self._refreshing:
                self._refreshing = True
                self._ops.append(self._referee_pool.submit(self._refresh_registry))
            return None
        sock = self._socket(zmq.DEALER, server=False)
        sock.setsockopt(zmq.IDENTITY, self.node_id.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        # The monitor tells a node that cannot join why (refused, key mismatch...): see _watch.
        self._monitors[node_id] = sock.get_monitor_socket(MONITORED)
        self._links[node_id] = Link(endpoint)
        sock.connect(endpoint)
        self._peers[node_id] = sock
        return sock

    def _read_monitor(self, node_id: str) -> None:
        """Apply the monitor's pending events for ``node_id`` to its :class:`Link`."""
        link, monitor = self._links.get(node_id), self._monitors.get(node_id)
        if link is None or monitor is None:
            return
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_CONNECTED:
                link.connection_made()
            elif kind == zmq.EVENT_DISCONNECTED:
                link.connection_lost()
            elif kind == zmq.EVENT_CONNECT_RETRIED:
                link.retrying()
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.handshake_succeeded()
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == getattr(
                zmq, "PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH", 0x11000002
            ):
                link.handshake_failed(
                    "security mismatch (one side has a CURVE key and the other none: give "
                    "every worker the same --curve-key-file)"
                )
            elif kind & (
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            ):
                link.handshake_failed(
                    "CURVE handshake failed (key mismatch? give every worker the same "
                    "--curve-key-file)"
                )

    def _watch_membership(self, now: float) -> None:
        """Record membership changes in the registry and complain while we cannot join."""
        registry = self._registry
        if registry is None:
            return
        with self._core_lock:
            if self._core is None:
                return
            member, since = self._core.is_member(), self._core.joining_since
            leader = self._core.leader
        if member != registry.joined:  # at once, so status does not lag behind the truth
            registry.joined = member
            self._ops.append(
                self._referee_pool.submit(registry.record_joined, self.node_id, member)
            )
        if now < self._next_watch:
            return
        self._next_watch = now + WATCH_EVERY
        for node_id in self._monitors:  # keep every link's state current and its queue short
            self._read_monitor(node_id)
        verdict = self._watch.update(now, member, since)
        if verdict == "alarm":
            link = self._links.get(leader) if leader is not None else None
            log_event(
                "join_failed",
                logging.ERROR,
                node=self.node_id,
                leader=leader,
                waited=f"{now - since:.1f}" if since is not None else "?",
                reason=f"cannot join the cluster: {join_problem(leader, link)}",
            )
        elif verdict == "joined":
            log_event("join_completed", node=self.node_id, leader=leader)

    def _send_to(self, node_id: str, data: bytes) -> bool:
        sock = self._peer(node_id)
        if sock is None:
            return False
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            return False  # not connected (yet), or its queue is full
        return True

    def _flush_held(self) -> None:
        """Retry held messages; drop those older than ``HOLD_FOR`` (the protocol resends)."""
        now = time.monotonic()
        for node_id in list(self._held):
            held = self._held[node_id]
            while held and (held[0][0] < now or self._send_to(node_id, held[0][1])):
                if held[0][0] < now:
                    self.counters["send_dropped"] += 1
                held.pop(0)
            if not held:
                del self._held[node_id]

    def _follow_pub(self, leader: str | None) -> None:
        """Subscribe to the leader's PUB (and only the leader's)."""
        target = None
        if leader is not None and leader != self.node_id and self._registry is not None:
            target = self._registry.endpoints(leader)[1]
        if target == self._sub_target:
            return
        if self._sub_target is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._sub.disconnect(self._sub_target)
        if target is not None:
            self._sub.connect(target)
        self._sub_target = target

    # -- the protocol thread -------------------------------------------------------------------

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._sub, zmq.POLLIN)
        try:
            while self._running.is_set():
                now = time.monotonic()
                with self._core_lock:
                    assert self._core is not None
                    deadline = self._core.next_deadline()
                timeout = min(HELD_POLL if self._held else MAX_POLL, max(0.0, deadline - now))
                ready = dict(poller.poll(math.ceil(timeout * 1000)))
                if self._router in ready:
                    self._drain_router()
                if self._sub in ready:
                    self._drain_sub()
                self._drain_inbox()
                self._collect_ops()
                if self._held:
                    self._flush_held()
                now = time.monotonic()
                self._watch_membership(now)
                if now >= deadline:
                    self._feed(now, ev.Tick())
        except BaseException as exc:  # never die silently: fence ourselves and say why
            logging.getLogger("ringwork").exception("node loop crashed")
            text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line, bounded
            self._fail(f"node loop crashed: {text}"[:500])
            if not isinstance(exc, Exception):
                raise

    def _fail(self, reason: str) -> None:
        """The protocol thread stops for good: nothing may be claimed, the runtime must exit."""
        log_event("node_crashed", logging.ERROR, node=self.node_id, error=reason)
        with self._core_lock:
            self._core = None
        self._failure = reason
        if self._listener is not None:
            self._listener("lost", frozenset(range(self.config.partitions)))
        self._left.set()

    def _drain_router(self) -> None:
        until = time.monotonic() + DRAIN_TIME
        for _ in range(DRAIN_FRAMES):
            if time.monotonic() > until:
                return  # more is waiting: the next round of the loop, after the timers
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_router_frames(frames)
            except Exception as exc:  # whatever a peer sent, the next frame is handled
                self.faults.record(reason_of("router", exc), exc)

    def _on_router_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.counters["dropped_frames"] += 1
            self._drops.record("frames")
            return
        identity, data = frames
        message = self._decode(data)
        if message is None:
            return
        if message.sender.encode("utf-8", "surrogatepass") != identity:
            self.codec.dropped["spoofed"] += 1
            self._drops.record("spoofed")
            return
        self._feed(time.monotonic(), ev.MessageReceived(message=message))

    def _drain_sub(self) -> None:
        until = time.monotonic() + DRAIN_TIME
        for _ in range(DRAIN_FRAMES):
            if time.monotonic() > until:
                return
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) != 1:
                    self.counters["dropped_frames"] += 1
                    self._drops.record("frames")
                    continue
                message = self._decode(frames[0])
                if message is not None:
                    self._feed(time.monotonic(), ev.MessageReceived(message=message))
            except Exception as exc:
                self.faults.record(reason_of("sub", exc), exc)

    def _decode(self, data: bytes) -> Message | None:
        message = self.codec.decode(data)
        if message is None:
            self._drops.record(self.codec.last_drop or "unknown")
        return message

    def _drain_inbox(self) -> None:
        while True:
            try:
                event = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._feed(time.monotonic(), event)

    def _collect_ops(self) -> None:
        done = [f for f in self._ops if f.done()]
        if not done:
            return
        self._ops = [f for f in self._ops if not f.done()]
        for future in done:
            try:
                event = future.result()
                if event is not None:
                    self._feed(time.monotonic(), event)
            except Exception as exc:  # one failed referee call (or its handling) is not fatal:
                self.faults.record(reason_of("referee", exc), exc)  # the core times it out

    def _feed(self, now: float, event: ev.Event) -> None:
        with self._core_lock:
            if self._core is None:
                return
            actions = self._core.handle(now, event)
        for action in actions:
            self._perform(action)

    def _perform(self, action: ev.Action) -> None:
        if isinstance(action, ev.Send):
            try:
                data = self.codec.encode(action.message)
            except MessageTooLarge as exc:
                log_event("message_too_large", logging.ERROR, node=self.node_id, error=exc)
                return
            if not self._send_to(action.to, data):
                # A peer we just met: its endpoint is being looked up or its connection is still
                # being made. Hold the message briefly rather than make the protocol wait for
                # its next retry (a lost Join would cost a heartbeat interval and a rebalance).
                held = self._held.setdefault(action.to, [])
                held.append((time.monotonic() + HOLD_FOR, data))
                del held[:-HOLD_MAX]
        elif isinstance(action, ev.Broadcast):
            try:
                self._pub.send(self.codec.encode(action.message), zmq.NOBLOCK)
            except zmq.Again:
                self.counters["publish_dropped"] += 1
        elif isinstance(action, ev.RefereeAction):
            self._ops.append(self._referee_pool.submit(self._referee, action))
        elif isinstance(action, ev.Assigned):
            self._emit("assigned", frozenset(action.partitions), epochs=action.partitions)
        elif isinstance(action, ev.Revoked):
            self._emit("revoked", action.partitions)
        elif isinstance(action, ev.Lost):
            self._emit("lost", action.partitions)
        elif isinstance(action, ev.RoleChanged):
            self.role = action.role
            self._follow_pub(action.leader)
            log_event(
                "role_changed",
                node=self.node_id,
                role=action.role,
                term=action.term,
                leader=action.leader,
            )
        elif isinstance(action, ev.Left):
            self._left.set()
        elif isinstance(action, ev.Notice):
            log_event(action.event, **{"node": self.node_id, **dict(action.detail)})

    def _refresh_registry(self) -> ev.Event | None:
        assert self._registry is not None
        try:
            self._registry.read_nodes()
        except RingworkError:
            pass  # the next poll refreshes it
        finally:
            self._refreshing = False
        return None

    def _referee(self, action: ev.RefereeAction) -> ev.Event:
        assert self._registry is not None
        try:
            return perform(action, self.node_id, self.store, self._registry)
        except RingworkError as exc:  # not transient: still never kill the protocol thread
            return ev.RefereeFailed(op_id=action.op_id, error=str(exc))

    def _emit(self, kind: str, partitions: frozenset[int], epochs: object = None) -> None:
        log_event(
            f"partition_{kind}",
            node=self.node_id,
            count=len(partitions),
            partitions=_ranges(partitions),
        )
        if self._listener is not None and partitions:
            self._listener(kind, partitions)


def _ranges(partitions: frozenset[int]) -> str:
    """``{0,1,2,5}`` -> ``0-2,5`` for compact logs."""
    out: list[str] = []
    for p in sorted(partitions):
        if out and out[-1].split("-")[-1] == str(p - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{p}"
        else:
            out.append(str(p))
    return ",".join(out)
