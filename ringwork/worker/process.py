"""The worker process: its parts put together, signals, the stop, the grace and the exit code.

One asyncio loop drives everything that is not a handler: the claim loop (:mod:`.pump`),
ownership events (:mod:`.ownership`), wake-ups (:mod:`.wakeups`), cancel requests
(:mod:`.cancels`), callbacks and signals. A stop (SIGTERM/SIGINT or
:meth:`Worker.request_stop`) starts the node's clean leave at once -- every partition moves to
another worker within about a heartbeat, since its running jobs keep their claims (fenced by
job) -- and the pump finishes what is in flight for at most ``shutdown_grace`` seconds, while
the node keeps our registry row fresh so that nobody re-queues those jobs. Then the node
unregisters and the loop ends. A named worker
(``--node-name``, static membership) does all of that but the leave: its partitions stay its own,
unclaimed, until its next process joins under the same name or session_timeout passes.

What bounds the exit after the grace: jobs still running are handed back to the queue
(each counted as an attempt, "abandoned at shutdown after the grace period"), async handlers
are cancelled, and every thread we start is a daemon, so the interpreter's exit never
waits for a handler (see :mod:`.threads`). The exit code is 0 for a stop, grace expired or not
(logged as ``event=grace_expired``); :data:`~ringwork.coordinator.NODE_FAILED_EXIT` (70) when
the cluster node failed. A second signal exits at once with 1.

Threads: the loop runs all of this; ``request_stop`` may be called from any thread.
``wait_ready`` and ``failure`` are read from other threads (an Event; a str set once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from typing import Any

from ringwork.app import App
from ringwork.coordinator import NODE_FAILED_EXIT, Coordinator
from ringwork.log import log_event
from ringwork.protocol.config import ProtocolConfig
from ringwork.settings import Settings
from ringwork.store.retention import RetentionPolicy
from ringwork.tracing import AttemptSpans
from ringwork.wakeup import WakeReceiver
from ringwork.worker.cancels import CancelWatch
from ringwork.worker.database import Database
from ringwork.worker.executor import Callbacks, Executor
from ringwork.worker.ledger import Ledger, Stats
from ringwork.worker.ownership import Ownership
from ringwork.worker.pump import Pump
from ringwork.worker.transactional import Transactions
from ringwork.worker.wakeups import Wakeups

#: How long callbacks queued by the leave (``on_revoked``) may still run once the node is gone.
CALLBACK_DRAIN = 2.0


def protocol_config(settings: Settings) -> ProtocolConfig:
    """The protocol timings for these settings (the translation lives in the protocol)."""
    return ProtocolConfig.for_session(
        cluster=settings.cluster,
        partitions=settings.partitions,
        heartbeat_interval=settings.heartbeat_interval,
        session_timeout=settings.session_timeout,
        revoke_timeout=settings.revoke_timeout,
    )


def retention_policy(settings: Settings) -> RetentionPolicy:
    """What the node prunes while it leads (see :mod:`ringwork.node.housekeeping`)."""
    return RetentionPolicy(
        succeeded=settings.retain_succeeded,
        cancelled=settings.retain_cancelled,
        dead=settings.retain_dead,
        nodes=settings.retain_nodes,
        interval=settings.housekeeping_interval,
    )


def cluster_node(app: App, *, process: bool = True) -> Coordinator:
    """The ZeroMQ cluster member for ``app``, configured from its settings.

    By default it runs in a process of its own (:mod:`ringwork.node.process`), so that no
    handler, however CPU-bound, can keep the protocol from the interpreter. ``process=False``
    keeps it on a thread of this process (tests that inject faults into the app's store).
    """
    from ringwork.node import CurveKeys, Node, NodeProcess

    s = app.settings
    curve = CurveKeys.load(s.curve_key_file) if s.curve_key_file else None  # errors here
    name = s.node_name or None
    if not process:
        return Node(app.store, protocol_config(s), bind=s.bind, advertise=s.advertise or None,
                    curve=curve, pub_port=s.pub_port, retention=retention_policy(s),
                    periodic=tuple(app.schedules.values()), name=name,
                    concurrency=s.concurrency)
    return NodeProcess(app.store, protocol_config(s), bind=s.bind,
                       advertise=s.advertise or None, curve_key_file=s.curve_key_file or None,
                       pub_port=s.pub_port, retention=retention_policy(s),
                       periodic=tuple(app.schedules.values()), name=name,
                       concurrency=s.concurrency)


class Worker:
    """Runs one worker process until it is told to stop."""

    def __init__(self, app: App, coordinator: Coordinator | None = None) -> None:
        self.app = app
        self.settings = s = app.settings
        self.store = app.store
        self.coordinator: Coordinator = coordinator or cluster_node(app)
        self.node_id = node_id = self.coordinator.node_id
        self.stats = Stats()
        self._ledger = Ledger(self.stats)
        self._wakeups = Wakeups(node_id, s.db_backoff_max)
        self._db = Database(node_id, s.db_backoff_max, self.stats.measures.db)
        self._callbacks = Callbacks(app, node_id)
        self._ownership = Ownership(self.coordinator, self._ledger, self._wakeups,
                                    self._callbacks)
        transactional = any(t.transactional for t in app.tasks.values())
        self._transactions = Transactions(self.store, node_id, s.concurrency) if transactional \
            else None
        self._spans = AttemptSpans.if_enabled(node_id)  # None unless the app set up tracing
        self._executor = Executor(app, s, node_id, on_outcome=lambda job, v: None,
                                  transactions=self._transactions,
                                  measures=self.stats.measures, spans=self._spans)
        #: Where job outcomes and claims are written: the node process when there is one (its
        #: transactions never wait for the GIL behind our handlers), else the app's store.
        writes = getattr(self.coordinator, "store_proxy", None) or self.store
        self._pump = Pump(app, s, self.coordinator, writes, self._ledger, self._ownership,
                          self._executor, self._wakeups, self._db)
        self._executor.on_outcome = self._pump.outcome
        self._executor.on_freed = self._pump.slot_freed
        self._cancels = CancelWatch(node_id, self.store, self._executor, self._db)
        self._signals = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The port ``/metrics`` is served on, once it is (``None``: not serving).
        self.metrics_port: int | None = None

    # -- public --------------------------------------------------------------------------------

    @property
    def writes(self) -> Any:
        """The store's job operations the worker writes through (tests may wrap them)."""
        return self._pump.writes

    @writes.setter
    def writes(self, writes: Any) -> None:
        self._pump.writes = writes

    def run(self, *, install_signals: bool = True) -> int:
        """Run until stopped; returns the process exit code (0 after a stop)."""
        try:
            return asyncio.run(self._main(install_signals))
        finally:
            self._executor.close()
            self._db.close()

    def request_stop(self) -> None:
        """Thread-safe: begin a graceful stop (what SIGTERM does)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._begin_stop)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def failure(self) -> str | None:
        """Why the worker stopped on its own (its coordinator failed), or ``None``."""
        return self._pump.failure

    # -- the run -------------------------------------------------------------------------------

    async def _main(self, install_signals: bool) -> int:
        loop = self._loop = asyncio.get_running_loop()
        pump, s = self._pump, self.settings
        self._ownership.bind(loop)
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        receiver = WakeReceiver(self.store.cluster, s.bind_host, s.advertise_host)
        self._wakeups.listen_udp(receiver)
        try:
            await self._db.with_retry("start", lambda: pump.stopping, self.coordinator.start,
                                      self._ownership.listener, receiver.endpoint)
            if pump.stopping:
                return 0
            if self.store.dialect == "postgresql":
                self._wakeups.listen_postgres(self.store, lambda: pump.stopping)
                pump.claimer = self.store.claimer()
            if s.metrics_port >= 0:
                self._serve_metrics()
            log_event("worker_started", node=self.node_id, cluster=self.store.cluster,
                      concurrency=s.concurrency, dialect=self.store.dialect)
            self._ready.set()
            self._cancels.start()
            await pump.run()
        finally:
            await self._shut_down()
        st = self.stats
        log_event("worker_stopped", node=self.node_id, succeeded=st.succeeded,
                  retried=st.retried, dead=st.dead, fenced=st.fenced)
        return 0 if pump.failure is None else NODE_FAILED_EXIT

    async def _shut_down(self) -> None:
        await self._cancels.close()
        self._wakeups.close()
        if self._pump.claimer is not None:
            await self._pump.claimer.close()
        await self._db.call(self.coordinator.stop)
        await self._callbacks.drain(CALLBACK_DRAIN)
        if self._transactions is not None:
            await self._transactions.close()
        if self._spans is not None:
            self._spans.close()

    # -- stopping ------------------------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        inflight = len(self._ledger.inflight)
        if self._signals > 1:
            log_event("worker_killed", node=self.node_id, signal=sig.name, inflight=inflight)
            os._exit(1)
        log_event("worker_stopping", node=self.node_id, signal=sig.name, inflight=inflight)
        self._begin_stop()

    def _begin_stop(self) -> None:
        if not self._pump.stopping and not getattr(self.coordinator, "named", False):
            # Partitions move at once; their running jobs finish here under their claims.
            # A named node keeps them: they wait for its next process (static membership).
            self.coordinator.begin_leave()
        self._pump.begin_stop()

    def _serve_metrics(self) -> None:
        from ringwork.metrics import BacklogCache, Sources, WorkerCollector, serve

        ledger, executor, coordinator = self._ledger, self._executor, self.coordinator
        sources = Sources(  # every callable runs on the metrics server's thread
            stats=self.stats,
            node_view=getattr(coordinator, "view", dict),
            inflight=lambda: len(ledger.inflight),
            running=executor.running_by_task,
            concurrency=self.settings.concurrency,
            task_limits=dict(self._pump.limits),
            owned=lambda: list(coordinator.claimable()),
            backlog=BacklogCache(self.store.owned_backlog),
        )
        port = serve(self.settings.metrics_port, self.settings.bind_host,
                     WorkerCollector(sources))
        self.metrics_port = port
        log_event("metrics_serving", node=self.node_id, port=port)
