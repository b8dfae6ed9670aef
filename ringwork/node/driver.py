"""The node driver: the protocol thread, which owns the sockets and the clock and feeds the core.

A :class:`Node` runs the sans-IO protocol core (:class:`~ringwork.protocol.core.Core`) on a thread
of its own, *the protocol thread* (``ringwork-node``), so heartbeats never wait behind handler
work: the GIL is released in zmq's poll, and the thread is woken at every deadline the core names
and by every input that is not a socket (:mod:`ringwork.node.wake`). Each round it reads what
peers sent (:mod:`ringwork.node.inbound`), what other threads handed it (the inbox) and the
referee's answers (:mod:`ringwork.node.referee_calls`), then performs the core's actions:

* ``Send(to, m)``: a DEALER per peer (:mod:`ringwork.node.peers`);
* ``Broadcast(m)``: our PUB socket; followers SUB to the current leader's PUB
  (:mod:`ringwork.node.sockets`). State messages are numbered, so a follower that missed one (a
  slow joiner, a high-water-mark drop) asks again;
* referee operations: on the referee pool thread, their results fed back as events -- a slow
  database never stalls the heartbeat loop;
* partition events: passed to the runtime's listener, called on the protocol thread.

Threads. The protocol thread runs :meth:`Node._loop` and everything it calls. Any thread may call
:meth:`claimable`, :meth:`claimable_snapshot`, :meth:`view` and :meth:`failure` (they read the
core under ``_core_lock``; ``counters``, ``role`` and ``_failure`` are written by the protocol
thread and read whole), and :meth:`revoke_done`, :meth:`begin_leave`, :meth:`freeze` and
:meth:`thaw` (an inbox put or an event, then a wake-up). :meth:`start` and :meth:`stop` come
from one caller, before the protocol thread starts and after it has ended.

If the loop dies anyway (a bug), :meth:`Node.failure` says why and every partition is reported
lost; the runtime then ends the process (exit 70), so a supervisor restarts it, rather than leave
a member that no longer takes part.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import zmq

from ringwork.addresses import NEXT_PORT
from ringwork.coordinator import PartitionListener, new_node_id
from ringwork.errors import RingworkError
from ringwork.faults import FaultLog, reason_of
from ringwork.log import log_event
from ringwork.node.actions import Actions
from ringwork.node.cron import cron_chore
from ringwork.node.curve import CurveKeys
from ringwork.node.housekeeping import Housekeeping, retention_chores
from ringwork.node.inbound import Inbound
from ringwork.node.joinwatch import JoinWatch
from ringwork.node.peers import Peers
from ringwork.node.referee_calls import RefereeCalls
from ringwork.node.registry import SqlRegistry
from ringwork.node.sockets import OwnSockets, SocketMaker
from ringwork.node.wake import Wake
from ringwork.protocol import events as ev
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.core import Core
from ringwork.protocol.messages import Codec, Message

if TYPE_CHECKING:
    from ringwork.periodic import Schedule
    from ringwork.store import Store
    from ringwork.store.retention import RetentionPolicy

#: Longest the protocol thread sleeps: how late its chores with no deadline of their own (the
#: membership watch, reading the link monitors) may run. Inputs from other threads wake it.
MAX_POLL = 0.05
#: The poll while messages wait for a peer's connection (see :mod:`ringwork.node.peers`).
HELD_POLL = 0.002
#: How often the protocol thread checks whether this node is (still) a member.
WATCH_EVERY = 0.25
NODE_COUNTERS = ("dropped_frames", "send_dropped", "publish_dropped", "term_changes")
#: A process's first incarnation is the cluster's registration counter shifted by this many
#: bits: the core adds one for every rejoin, and a named node's next process (a higher counter)
#: must start above all of them (2**24 rejoins: one per session_timeout for over a year).
INCARNATION_BITS = 24


def first_incarnation(counter: int) -> int:
    """The incarnation a process starts with, from the counter its registration bumped.

    Why the counter and not a clock: it is one row in the database, bumped under a row lock by
    every registration, so it only grows -- a clock stepped back (NTP, a VM restored) or two
    hosts' clocks disagreeing cannot make a new process of a named node look older than its
    predecessor, whose Joins the leader would then take for its own delayed ones.
    """
    return counter << INCARNATION_BITS


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
        name: str | None = None,
        pub_port: int = NEXT_PORT,
        retention: RetentionPolicy | None = None,
        periodic: Sequence[Schedule] = (),
        concurrency: int | None = None,
    ) -> None:
        """``concurrency``: the worker's job slots, recorded in the registry.
        ``name``: static membership (``--node-name``): the name is the node id, a stop does
        not hand the partitions over (the leader keeps them for a restart under the same name
        within session_timeout), and a start re-queues what the previous process left running.
        """
        self.store = store
        #: Whether this node is a named (static) member.
        self.named = bool(name)
        #: What the node prunes while it leads (None: nothing; see :mod:`.housekeeping`).
        self.retention = retention
        #: The periodic tasks it enqueues while it leads (:mod:`.cron`).
        self.periodic = tuple(periodic)
        self.concurrency = concurrency
        self._housekeeping: Housekeeping | None = None
        self.config = config
        self.node_id = name or node_id or new_node_id()
        self.curve = curve
        self._bind, self._advertise, self._pub_port = bind, advertise, pub_port
        self.codec = Codec(
            config.cluster, max_bytes=config.max_message_bytes, partitions=config.partitions
        )
        # Every key exists from the start: the metrics thread reads these while we count.
        self.counters: Counter[str] = Counter(dict.fromkeys(NODE_COUNTERS, 0))
        #: Failures while handling one peer's input or a referee answer (by reason).
        self.faults = FaultLog("peer_input_failed", self.node_id)
        self._inbound = Inbound(self.codec, self.node_id, self.counters, self.faults)
        self._failure: str | None = None
        self.endpoint = ""
        self.pub_endpoint = ""
        self._ctx = zmq.Context()
        self._make = SocketMaker(self._ctx, curve)
        self._own: OwnSockets | None = None
        self._core_lock = threading.Lock()
        self._core: Core | None = None
        self._inbox: queue.SimpleQueue[ev.Event] = queue.SimpleQueue()
        self._wake = Wake()  # set after every inbox put and every finished referee call
        self._registry: SqlRegistry | None = None
        self._calls: RefereeCalls | None = None
        self._peers: Peers | None = None
        self._actions: Actions | None = None
        self._listener: PartitionListener | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._awake = threading.Event()  # cleared while frozen (see freeze)
        self._awake.set()
        self._left = threading.Event()
        self._next_touch = 0.0  # after the leave: when to touch our registry row next
        self._watch = JoinWatch(config.session_timeout)
        self._next_watch = 0.0

    # -- Coordinator interface -----------------------------------------------------------------

    def start(self, listener: PartitionListener, wake_endpoint: str | None) -> None:
        """Bind, register in the database, and start the protocol thread.

        The runtime retries this while the database is unreachable; the sockets are made once.
        """
        self._listener = listener
        if self._own is None:
            self._own = OwnSockets(self._make, self.config.max_message_bytes)
        if not self.endpoint:
            self.endpoint, self.pub_endpoint = self._own.bind(
                self._bind, self._advertise, self._pub_port
            )
        self._registry = registry = SqlRegistry(self.store, self.pub_endpoint, wake_endpoint,
                                               self.concurrency)
        seq, counter = registry.register_counted(self.node_id, self.endpoint)
        if self.named:
            # Whatever runs under our name was our previous process's: it will never finish.
            requeued = self.store.requeue_restarted(self.node_id)
            if requeued:
                log_event("restart_requeued", logging.WARNING, node=self.node_id, jobs=requeued)
        self._calls = RefereeCalls(self.node_id, self.store, registry, self._wake, self.faults)
        self._peers = Peers(
            self._make, self.node_id, registry.router_endpoint, self._calls.refresh, self.counters,
            on_link=self._link_changed,
        )
        self._actions = Actions(self.node_id, self.codec, self._own, self._peers, self._calls,
                                registry, listener, self.counters, self._left)
        incarnation = first_incarnation(counter)
        core = Core(self.node_id, self.config, incarnation=incarnation, named=self.named)
        with self._core_lock:
            self._core = core
        log_event("node_registered", node=self.node_id, endpoint=self.endpoint,
                  pub=self.pub_endpoint, seq=seq, incarnation=incarnation, named=self.named)
        self._running.set()
        self._feed(time.monotonic(), ev.Start())
        self._thread = threading.Thread(target=self._loop, name="ringwork-node", daemon=True)
        self._thread.start()
        if (self.retention is not None or self.periodic) and self._housekeeping is None:
            hk = Housekeeping(self.node_id, lambda: self.role == "leader", [])
            if self.retention is not None:
                hk.chores = retention_chores(self.store, self.node_id, self.retention, hk.pause)
            if self.periodic:
                hk.chores.append(cron_chore(self.store, self.node_id, self.periodic))
            self._housekeeping = hk
            hk.start()

    def claimable(self) -> Mapping[int, int]:
        with self._core_lock:
            if self._core is None:
                return {}
            return self._core.claimable(time.monotonic())

    def claimable_snapshot(self) -> tuple[dict[int, int], float]:
        """What we hold and until when (monotonic) we may claim it: ``claimable()`` for a
        process that asks from afar (see :mod:`ringwork.node.process`)."""
        with self._core_lock:
            if self._core is None:
                return {}, -1.0
            now = time.monotonic()
            # claimable(now) holds until claim_deadline(); past it the core may grant a
            # different set (or none), which the next snapshot carries.
            return dict(self._core.claimable(now)), self._core.claim_deadline()

    def freeze(self) -> None:
        """Stop acting at all (no heartbeat, no poll) until :meth:`thaw`: what a paused process
        does. The node process uses it when the worker it serves is stopped."""
        self._awake.clear()
        self._wake.set()  # a poll under way ends now, and the loop acts on nothing it returned

    def thaw(self) -> None:
        self._awake.set()

    def revoke_done(self, partitions: frozenset[int]) -> None:
        self._post(ev.RevokeConfirmed(partitions=partitions))

    def begin_leave(self) -> None:
        """Ask the leader to move our partitions now (the runtime drains them meanwhile).

        A named node does not: its partitions wait for its next process (see :meth:`stop`)."""
        if not self.named:
            self._post(ev.LeaveRequested())

    def stop(self) -> None:
        """Leave cleanly (bounded), then unregister and close every socket with linger 0.

        A named node neither leaves nor unregisters: it falls silent, as a crashed one would,
        and the leader keeps its partitions for it until session_timeout has passed with its
        registry row untouched; a process under the same name that joins before then gets them
        back at a new epoch, with nothing moved. Its runtime has stopped claiming and written
        (or abandoned) its jobs by now."""
        if self._housekeeping is not None:
            self._housekeeping.stop()
        if self._thread is not None and self._thread.is_alive() and not self.named:
            self.begin_leave()
            budget = self.config.revoke_timeout + self.config.leave_timeout + 1.0
            if not self._left.wait(budget):
                log_event("leave_timed_out", node=self.node_id)
        self._running.clear()
        self._awake.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._calls is not None:
            self._calls.shutdown()
        try:
            if self._registry is not None and not self.named:
                self._registry.unregister(self.node_id)
        except RingworkError as exc:
            log_event("unregister_failed", node=self.node_id, error=exc)
        if self._peers is not None:
            self._peers.close()
        if self._own is not None:
            self._own.close()
        self._wake.close()
        self._ctx.term()

    @property
    def role(self) -> str:
        """The role the core last announced (``idle`` before it has one)."""
        return self._actions.role if self._actions is not None else "idle"

    def failure(self) -> str | None:
        """``None`` while the protocol thread runs; else why it stopped (it will not restart)."""
        return self._failure

    def view(self) -> dict[str, object]:
        """The core's own snapshot plus the drop and error counters (for status and metrics)."""
        with self._core_lock:
            data = self._core.view() if self._core is not None else {}
        data["dropped"] = dict(self.codec.dropped)
        data["errors"] = dict(self.faults.counts)
        data.update(self.counters)
        if self._failure is not None:
            data["failure"] = self._failure
        return data

    def _post(self, event: ev.Event) -> None:
        """Hand ``event`` to the protocol thread (from any thread) and wake it."""
        self._inbox.put(event)
        self._wake.set()

    # -- the protocol thread -------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._own is not None and self._peers is not None
        own, peers, wake = self._own, self._peers, self._wake.fileno()
        poller = zmq.Poller()
        poller.register(own.router, zmq.POLLIN)
        poller.register(own.sub, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        monitors: set[zmq.Socket] = set()  # the peers' socket monitors the poller watches
        try:
            while self._running.is_set():
                self._awake.wait()
                peers.sync_poller(poller, monitors)
                now = time.monotonic()
                with self._core_lock:
                    assert self._core is not None
                    deadline = self._core.next_deadline()
                timeout = min(HELD_POLL if peers.holding else MAX_POLL, max(0.0, deadline - now))
                ready = dict(poller.poll(math.ceil(timeout * 1000)))
                if not self._awake.is_set():
                    continue  # frozen while we polled: act on nothing until thawed
                if wake in ready:
                    self._wake.clear()  # before the inbox and the answers: see Wake.clear
                if own.router in ready:
                    self._inbound.drain_router(own.router, self._deliver)
                if own.sub in ready:
                    self._inbound.drain_sub(own.sub, self._deliver)
                if any(sock in ready for sock in monitors):
                    peers.read_monitors()  # a link closed or was refused: tell the core now
                self._drain_inbox()
                self._collect_answers()
                if peers.holding:
                    peers.flush_held()
                now = time.monotonic()
                self._watch_membership(now)
                if now >= deadline:
                    self._feed(now, ev.Tick())
                if self._left.is_set() and now >= self._next_touch and self._calls is not None:
                    # Left, but the worker may still be finishing jobs that kept their claims
                    # (fenced by job): a fresh row is what keeps them from being re-queued.
                    self._next_touch = now + self.config.poll_interval
                    self._calls.touch()
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

    def _link_changed(self, peer: str, change: str) -> None:
        self._feed(time.monotonic(), ev.LinkChanged(peer=peer, change=change))

    def _deliver(self, message: Message) -> None:
        self._feed(time.monotonic(), ev.MessageReceived(message=message))

    def _drain_inbox(self) -> None:
        while True:
            try:
                event = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._feed(time.monotonic(), event)

    def _collect_answers(self) -> None:
        assert self._calls is not None
        for event in self._calls.answers():
            try:
                self._feed(time.monotonic(), event)
            except Exception as exc:  # its handling failed: not fatal, the core times it out
                self.faults.record(reason_of("referee", exc), exc)

    def _watch_membership(self, now: float) -> None:
        """Record membership changes in the registry and complain while we cannot join."""
        assert self._registry is not None and self._calls is not None and self._peers is not None
        with self._core_lock:
            if self._core is None:
                return
            member, since = self._core.is_member(), self._core.joining_since
            leader = self._core.leader
        if member != self._registry.joined:  # at once, so status does not lag behind the truth
            self._registry.joined = member
            self._calls.record_joined(member)
        if now < self._next_watch:
            return
        self._next_watch = now + WATCH_EVERY
        assert self._actions is not None
        self._actions.refollow()
        self._peers.read_monitors()
        link = self._peers.links.get(leader) if leader is not None else None
        self._watch.report(now, self.node_id, member, since, leader, link)

    def _feed(self, now: float, event: ev.Event) -> None:
        with self._core_lock:
            if self._core is None:
                return
            actions = self._core.handle(now, event)
        assert self._actions is not None
        for action in actions:
            self._actions.perform(action)
