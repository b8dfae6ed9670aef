"""The worker process: claim loop, bounded executor, batched completions, graceful shutdown.

One asyncio loop drives everything that is not a handler: claiming, completion flushes, wake-ups
and signals. Plain handlers run in a thread pool, ``async def`` handlers on the loop; both count
against one concurrency limit, and a claim never asks for more jobs than there is free capacity,
so no job waits in memory while another worker could run it.

Database calls are blocking (SQLAlchemy Core) and run on a small dedicated thread pool so a slow
query never stalls the loop. Every outcome is written with the job's claim token; the store
refuses stale ones ("fenced"), so a worker that lost a partition cannot commit to it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ringwork.app import App
from ringwork.coordinator import NODE_FAILED_EXIT, Coordinator
from ringwork.errors import DatabaseError, DatabaseUnavailable, RingworkError
from ringwork.job import Job, Outcome
from ringwork.log import log_event
from ringwork.protocol.config import ProtocolConfig
from ringwork.settings import Settings
from ringwork.store.aclaim import AsyncClaimer
from ringwork.store.listen import Listener
from ringwork.wakeup import WakeReceiver

T = TypeVar("T")

#: Longest wait for more finished jobs before a round is sent while others are still running.
BATCH_WINDOW = 0.002
ERROR_LIMIT = 4000  # characters of "Type: message + traceback tail" kept in last_error


@dataclass
class Stats:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    fenced: int = 0
    dropped: int = 0  # outcomes of jobs whose partition was lost: never written
    claim_batches: int = 0
    flushes: int = 0
    started_at: float = field(default_factory=time.monotonic)


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` plus the innermost traceback lines, bounded in size."""
    head = f"{type(exc).__name__}: {exc}"
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    text = f"{head}\n{tail}"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 3] + "..."


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)`` times [0.5, 1.5), capped."""
    return min(cap, base * (2 ** max(0, attempt - 1))) * (0.5 + rng.random())


def protocol_config(settings: Settings) -> ProtocolConfig:
    """Protocol timings derived from the ones a user sets; the rest keep their proportions.

    A session timeout other than the protocol's default scales the lease margin, the leader's
    lease, the registry poll and the election backoff with it, so the safety relations checked
    in :mod:`ringwork.protocol.config` keep holding.
    """
    base = ProtocolConfig()
    scale = settings.session_timeout / base.session_timeout
    return ProtocolConfig(
        cluster=settings.cluster,
        partitions=settings.partitions,
        heartbeat_interval=settings.heartbeat_interval,
        session_timeout=settings.session_timeout,
        lease_margin=base.lease_margin * scale,
        leader_lease=base.leader_lease * scale,
        poll_interval=base.poll_interval * scale,
        election_backoff=base.election_backoff * scale,
        revoke_timeout=settings.revoke_timeout,
    )


class Kick:
    """An :class:`asyncio.Event` with a timeout for one waiter, that wakes it in one loop step.

    ``asyncio.wait_for(event.wait(), t)`` wraps the wait in a task, and a ``set()`` reaches the
    waiter only three loop iterations later; on the enqueue-to-start path every step counts.
    """

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[bool] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self, timeout: float) -> bool:
        """True once set (at once if already), False after ``timeout`` seconds."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max(0.0, timeout), _resolve, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _close_listener(connecting: asyncio.Future[Listener | None]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        listener = connecting.result()
        if listener is not None:
            listener.close()


def cluster_node(app: App, *, process: bool = True) -> Coordinator:
    """The ZeroMQ cluster member for ``app``, configured from its settings.

    By default it runs in a process of its own (:mod:`ringwork.node_process`), so that no
    handler, however CPU-bound, can keep the protocol from the interpreter. ``process=False``
    keeps it on a thread of this process (tests that inject faults into the app's store).
    """
    from ringwork.node import CurveKeys, Node, NodeProcess

    s = app.settings
    curve = CurveKeys.load(s.curve_key_file) if s.curve_key_file else None  # errors here
    if not process:
        return Node(app.store, protocol_config(s), bind=s.bind, advertise=s.advertise or None,
                    curve=curve, pub_port=s.pub_port)
    return NodeProcess(
        app.store,
        protocol_config(s),
        bind=s.bind,
        advertise=s.advertise or None,
        curve_key_file=s.curve_key_file or None,
        pub_port=s.pub_port,
    )


class Worker:
    """Runs one worker process until it is told to stop."""

    def __init__(
        self,
        app: App,
        coordinator: Coordinator | None = None,
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.coordinator: Coordinator = coordinator or cluster_node(app)
        self.node_id = self.coordinator.node_id
        #: Where job outcomes and claims are written: the node process when there is one (its
        #: transactions never wait for the GIL behind our handlers), else the app's store.
        self.writes: Any = getattr(self.coordinator, "store_proxy", None) or self.store
        self.stats = Stats()
        self._rng = random.Random()
        self._inflight: dict[int, Job] = {}
        self._outbox: collections.deque[tuple[Job, BaseException | None]] = collections.deque()
        self._collect_scheduled = False
        self._completed: list[Job] = []
        self._failed: list[tuple[Job, str, float | None]] = []
        self._maybe_more = True  # claimable jobs may exist (cleared by a short claim)
        self._hint: set[int] | None = None  # ...in these partitions only (None: any we own)
        self._unsure_claims = False  # a claiming round failed: it may have committed anyway
        self._revoking: set[int] = set()
        self._db_failures = 0  # consecutive failed database calls: sets the backoff
        self._flushing_partitions: set[int] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._lost: dict[int, int] = {}  # partition -> epoch at which it was lost
        self._stopping = False
        self._failed_reason: str | None = None  # the coordinator failed: stop now, exit 70
        self._signals = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claimer: AsyncClaimer | None = None
        self._handlers = ThreadPoolExecutor(
            max_workers=self.settings.concurrency, thread_name_prefix="ringwork-job"
        )
        self._db_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ringwork-db")

    # -- public --------------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Run until stopped; returns the process exit code (0 after a graceful stop)."""
        try:
            return asyncio.run(self._main(install_signals))
        finally:
            self._handlers.shutdown(wait=False, cancel_futures=True)
            self._db_pool.shutdown(wait=False, cancel_futures=True)

    def request_stop(self) -> None:
        """Thread-safe: begin a graceful stop (what SIGTERM does)."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._begin_stop)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def failure(self) -> str | None:
        """Why the worker stopped on its own (its coordinator failed), or ``None``."""
        return self._failed_reason

    # -- main loop -----------------------------------------------------------------------------

    async def _main(self, install_signals: bool) -> int:
        loop = self._loop = asyncio.get_running_loop()
        self._kick = Kick()  # something for the pump to do
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        receiver = WakeReceiver(
            self.store.cluster, self.settings.bind_host, self.settings.advertise_host
        )
        loop.add_reader(receiver.sock.fileno(), self._on_datagram, receiver)
        listening: asyncio.Task[None] | None = None
        try:
            await self._with_db_retry(
                "start", self.coordinator.start, self._on_partitions, receiver.endpoint
            )
            if self._stopping:
                return 0
            if self.store.dialect == "postgresql":
                listening = asyncio.create_task(self._listen_notifications())
                self._claimer = self.store.claimer()
            if self.settings.metrics_port >= 0:
                self._serve_metrics()
            log_event(
                "worker_started",
                node=self.node_id,
                cluster=self.store.cluster,
                concurrency=self.settings.concurrency,
                dialect=self.store.dialect,
            )
            self._ready.set()
            if not self._coordinator_failed():
                await self._pump()
        finally:
            if listening is not None:
                listening.cancel()
            if self._claimer is not None:
                await self._claimer.close()
            loop.remove_reader(receiver.sock.fileno())
            receiver.close()
            await loop.run_in_executor(self._db_pool, self.coordinator.stop)
        s = self.stats
        log_event(
            "worker_stopped",
            node=self.node_id,
            succeeded=s.succeeded,
            retried=s.retried,
            dead=s.dead,
            fenced=s.fenced,
        )
        return 0 if self._failed_reason is None else NODE_FAILED_EXIT

    def _coordinator_failed(self) -> bool:
        """True (after logging it, once) if the coordinator can no longer work: stop at once."""
        if self._failed_reason is None:
            reason = self.coordinator.failure()
            if reason is None:
                return False
            self._failed_reason = reason
            self._stopping = True
            log_event("node_failed", logging.ERROR, node=self.node_id, error=reason,
                      abandoned=len(self._inflight))
        return True

    async def _pump(self) -> None:
        """The one loop that moves jobs in and out of the database.

        Each round writes every outcome that arrived since the last round and, in the same
        transaction, claims up to the free capacity (never more: no job waits in our memory
        while another worker could run it). While a round is in flight, finished jobs and freed
        capacity pile up, so under load rounds grow by themselves -- fewer commits and fsyncs
        per job -- and when idle the loop sleeps until a wake-up or the poll interval.
        """
        limit = self.settings.concurrency
        grace_deadline = math.inf
        batch_deadline: float | None = None
        while True:
            self._kick.clear()
            if self._coordinator_failed():
                return  # in-flight jobs are abandoned: their partitions' next owner re-runs them
            if self._stopping and grace_deadline == math.inf:
                grace_deadline = time.monotonic() + self.settings.shutdown_grace
            if self._stopping and time.monotonic() > grace_deadline + self.settings.db_backoff_max:
                # The database stayed away past the grace period: leave the outcomes unwritten
                # (their jobs run again elsewhere: at-least-once) rather than hang forever.
                log_event("outcomes_abandoned", node=self.node_id, inflight=len(self._inflight),
                          unwritten=len(self._completed) + len(self._failed))
                return
            if self._failed:
                await self._write_failures()
                continue
            if self._unsure_claims:
                await self._release_unknown_claims()
                continue
            self._drop_lost_outcomes()
            done = self._completed
            free = limit - len(self._inflight)
            owned = {} if self._stopping else self._owned_now()
            if self._hint is not None and self._maybe_more:
                # Woken only by enqueue nudges: look where the new jobs are, not everywhere
                # (a claim costs an index probe per partition it looks at).
                owned = {p: e for p, e in owned.items() if p in self._hint}
            want = free if owned and (self._maybe_more or not done) else 0
            if not done and (want <= 0 or not self._maybe_more):
                if self._stopping and (not self._inflight or time.monotonic() > grace_deadline):
                    if self._inflight:
                        log_event("grace_expired", node=self.node_id, abandoned=len(self._inflight))
                    return
                timeout = self.settings.poll_interval
                if self._stopping:
                    timeout = min(timeout, max(0.0, grace_deadline - time.monotonic()))
                if not await self._wait_kick(timeout) and not self._stopping:
                    self._want_more()  # the poll backstop: look again, everywhere
                continue
            if done and self._inflight and len(done) < limit // 2 and not self._stopping:
                # Jobs are finishing one by one: give the others a moment to join this round,
                # so a round carries a batch, not a single job (one commit for many).
                now = time.monotonic()
                if batch_deadline is None:
                    batch_deadline = now + BATCH_WINDOW
                if now < batch_deadline:
                    await self._wait_kick(batch_deadline - now)
                    continue
            batch_deadline = None
            self._maybe_more = False  # a wake-up arriving during the round sets it again
            self._completed = []
            # A revocation confirmed while this round is out would let the next owner take the
            # partition at a new epoch and re-run what the round claims under the old one: the
            # partitions it claims from are busy until it returns (see _finish_revoke).
            self._flushing_partitions = {job.partition for job in done}
            if want > 0:
                self._flushing_partitions.update(owned)
            try:
                if done or self._claimer is None:
                    pairs = [(job.id, job.token) for job in done]
                    fenced, jobs = await self._db(
                        self.writes.exchange, self.node_id, pairs, owned, want
                    )
                else:  # a claim alone (an idle worker woken up): straight from the loop
                    fenced, jobs = [], await self._claimer.claim(self.node_id, owned, want)
            except DatabaseError as exc:
                self._completed[:0] = done  # keep every outcome: written only once it commits
                self._want_more()
                # The round may have committed before the error reached us: then it claimed
                # jobs we never heard of. Find them before claiming again.
                self._unsure_claims = self._unsure_claims or want > 0
                await self._outage("exchange", exc)
                continue
            finally:
                self._flushing_partitions = set()
            self._db_failures = 0
            if done:
                self.stats.flushes += 1
                self.stats.succeeded += len(done) - len(fenced)
                self._count_fenced(len(fenced))
                if any(self._is_ordered(job) for job in done):
                    self._want_more()  # the key's next job may be runnable now
            if jobs:
                self.stats.claim_batches += 1
                self.stats.claimed += len(jobs)
                for job in jobs:
                    self._start(job)
            if want and len(jobs) == want:
                self._want_more()  # a full batch: there may be more behind it

    def _owned_now(self) -> dict[int, int]:
        return {p: e for p, e in self.coordinator.claimable().items() if p not in self._revoking}

    def _is_ordered(self, job: Job) -> bool:
        task = self.app.tasks.get(job.task)
        return task is not None and task.ordered

    def _want_more(self, partitions: set[int] | None = None) -> None:
        """Claimable jobs may exist: in ``partitions`` only, or anywhere we own (``None``)."""
        if not partitions:
            self._hint = None
        elif not self._maybe_more:
            self._hint = set(partitions)
        elif self._hint is not None:
            self._hint |= partitions
        self._maybe_more = True

    def _wake_up(self, partitions: set[int] | None = None) -> None:
        """New jobs may be claimable (an enqueue nudge, new partitions, a retry coming due)."""
        self._want_more(partitions)
        self._kick.set()

    async def _wait_kick(self, timeout: float) -> bool:
        return await self._kick.wait(timeout)

    # -- executing jobs ------------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        """Run one claimed job: plain handlers on the thread pool, ``async def`` on the loop."""
        task = self.app.tasks.get(job.task)
        self._inflight[job.id] = job
        if task is None:
            error = f"UnknownTaskError: task {job.task!r} is not registered in this worker's app"
            self._finished(job, error, retryable=False)
        elif task.is_async:
            coro = asyncio.create_task(self._run_async(job, task.handler))
            self._background.add(coro)
            coro.add_done_callback(self._background.discard)
        else:
            self._handlers.submit(self._run_sync, job, task.handler)

    async def _run_async(self, job: Job, handler: Callable[[Job], Any]) -> None:
        try:
            await handler(job)
        except Exception as exc:
            self._finished(job, exc)
        else:
            self._finished(job, None)

    def _run_sync(self, job: Job, handler: Callable[[Job], Any]) -> None:
        """On a handler thread. Outcomes go through a deque; the loop is woken once per batch
        of them, not once per job (a wake-up crosses threads through a pipe: it is not free)."""
        try:
            handler(job)
        except BaseException as exc:  # even SystemExit: it cannot end the process from here
            self._outbox.append((job, exc))
        else:
            self._outbox.append((job, None))
        if not self._collect_scheduled:
            self._collect_scheduled = True
            loop = self._loop
            if loop is not None:
                loop.call_soon_threadsafe(self._collect)

    def _collect(self) -> None:
        self._collect_scheduled = False  # before draining: a later append schedules again
        while self._outbox:
            job, exc = self._outbox.popleft()
            self._finished(job, exc)

    def _finished(self, job: Job, outcome: BaseException | str | None,
                  retryable: bool = True) -> None:
        """Record a handler's outcome for the next round (on the loop)."""
        self._inflight.pop(job.id, None)
        if outcome is None:
            self._completed.append(job)
        else:
            if isinstance(outcome, BaseException):
                log_event("job_failed", node=self.node_id, job=job.id, task=job.task,
                          attempt=job.attempt, error=f"{type(outcome).__name__}: {outcome}")
                error = describe_exception(outcome)
            else:
                error = outcome
            delay = (retry_delay(job.attempt, self.settings.retry_base, self.settings.retry_max,
                                 self._rng) if retryable else None)
            self._failed.append((job, error, delay))
        self._kick.set()

    async def _release_unknown_claims(self) -> None:
        known = [*self._inflight, *(j.id for j in self._completed),
                 *(job.id for job, _, _ in self._failed)]
        try:
            released = await self._db(self.writes.release_unknown, self.node_id, known)
        except DatabaseError as exc:
            await self._outage("release", exc)
            return
        self._unsure_claims = False
        if released:
            log_event("claims_released", node=self.node_id, count=len(released))

    async def _write_failures(self) -> None:
        """Failed attempts are rare: written one by one, each with its own outcome."""
        self._drop_lost_outcomes()
        failed, self._failed = self._failed, []
        self._flushing_partitions = {job.partition for job, _, _ in failed}
        try:
            while failed:
                job, error, delay = failed[0]
                outcome = await self._db(
                    self.writes.fail, self.node_id, job.id, job.token, error, retry_delay=delay
                )
                failed.pop(0)
                if outcome is Outcome.RETRY:
                    self.stats.retried += 1
                    if delay is not None:  # be back for it on time, not at the next poll
                        asyncio.get_running_loop().call_later(delay, self._wake_up)
                elif outcome is Outcome.DEAD:
                    self.stats.dead += 1
                    log_event(
                        "job_dead",
                        node=self.node_id,
                        job=job.id,
                        task=job.task,
                        attempts=job.attempt,
                    )
                else:
                    self._count_fenced(1)
                if self._is_ordered(job):
                    self._want_more()
        except DatabaseError as exc:
            self._failed[:0] = failed
            await self._outage("fail", exc)
        else:
            self._db_failures = 0
        finally:
            self._flushing_partitions = set()

    def _count_fenced(self, n: int) -> None:
        if n:
            self.stats.fenced += n
            log_event("job_fenced", node=self.node_id, count=n)

    def _drop_lost_outcomes(self) -> None:
        """Never write to a partition we lost: the new owner re-runs those jobs."""
        if not self._lost:
            return
        before = len(self._completed) + len(self._failed)
        self._completed = [job for job in self._completed if not self._is_lost(job)]
        self._failed = [f for f in self._failed if not self._is_lost(f[0])]
        self.stats.dropped += before - len(self._completed) - len(self._failed)

    def _is_lost(self, job: Job) -> bool:
        epoch = self._lost.get(job.partition)
        return epoch is not None and job.token <= epoch

    # -- ownership events ----------------------------------------------------------------------

    def _on_partitions(self, kind: str, partitions: frozenset[int]) -> None:
        """Called by the coordinator from any thread."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._handle_partitions, kind, partitions)

    def _handle_partitions(self, kind: str, partitions: frozenset[int]) -> None:
        callbacks = {
            "assigned": self.app.assigned_callbacks,
            "revoked": self.app.revoked_callbacks,
            "lost": self.app.lost_callbacks,
        }[kind]
        if kind == "assigned":
            self._revoking -= partitions
            for p in partitions:
                self._lost.pop(p, None)
            self._wake_up()
        elif kind == "revoked":
            self._revoking |= partitions
            revoke = asyncio.create_task(self._finish_revoke(partitions))
            self._background.add(revoke)
            revoke.add_done_callback(self._background.discard)
        elif kind == "lost":
            for job in self._inflight.values():
                if job.partition in partitions:
                    self._lost[job.partition] = max(self._lost.get(job.partition, 0), job.token)
            self._kick.set()  # a node whose loop died reports everything lost: the pump checks
        for callback in callbacks:
            self._handlers.submit(self._run_callback, callback, set(partitions), kind)

    async def _finish_revoke(self, partitions: frozenset[int]) -> None:
        """Confirm each revoked partition as soon as its in-flight jobs are done and written."""
        pending = set(partitions)
        while pending:
            busy = {job.partition for job in self._inflight.values()}
            busy.update(job.partition for job in self._completed)
            busy.update(job.partition for job, _, _ in self._failed)
            busy.update(self._flushing_partitions)
            free = frozenset(pending - busy)
            if free:
                pending -= free
                self._revoking -= free
                self.coordinator.revoke_done(free)  # a queue put: no need for a thread
            if pending:
                await asyncio.sleep(0.005)

    def _run_callback(
        self, callback: Callable[[set[int]], Any], parts: set[int], kind: str
    ) -> None:
        try:
            callback(parts)
        except Exception as exc:  # a user callback must never take the worker down
            log_event("callback_failed", node=self.node_id, kind=kind, error=repr(exc))

    # -- wake-ups and signals -----------------------------------------------------------------

    def _on_datagram(self, receiver: WakeReceiver) -> None:
        partitions = receiver.drain()
        if partitions is not None:
            self._wake_up(partitions)  # an empty set means "all"

    async def _listen_notifications(self) -> None:
        """PostgreSQL LISTEN/NOTIFY, read on the loop; reconnects after an outage.

        The LISTEN socket is registered with the loop, so a notification wakes the pump directly
        (a listener thread handing it over with ``call_soon_threadsafe`` cost ~0.3 ms here).
        """
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            try:
                listener = await self._connect_listener()
                if listener is None:
                    return
                try:
                    failures = 0
                    await self._read_notifications(listener)
                finally:
                    listener.close()
            except Exception as exc:
                failures += 1
                log_event("listen_failed", node=self.node_id, error=repr(exc))
                await asyncio.sleep(min(self.settings.db_backoff_max, 0.1 * 2**failures))
            # Notifications sent while we were away are gone: look everywhere once.
            loop.call_soon(self._wake_up)

    async def _connect_listener(self) -> Listener | None:
        connecting = asyncio.get_running_loop().run_in_executor(None, self.store.listen)
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:  # stopping: close the connection once it is made
            connecting.add_done_callback(_close_listener)
            raise

    async def _read_notifications(self, listener: Listener) -> None:
        """Wake the pump on every notification until the connection fails (then raise)."""
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[DatabaseError] = loop.create_future()
        fd = listener.fileno()

        def readable() -> None:
            try:
                notified = listener.poll()
            except DatabaseError as exc:
                loop.remove_reader(fd)
                if not lost.done():
                    lost.set_result(exc)
                return
            if notified:
                self._wake_up(notified)

        loop.add_reader(fd, readable)
        try:
            raise await lost
        finally:
            loop.remove_reader(fd)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log_event(
                "worker_killed", node=self.node_id, signal=sig.name, inflight=len(self._inflight)
            )
            os._exit(1)
        log_event(
            "worker_stopping", node=self.node_id, signal=sig.name, inflight=len(self._inflight)
        )
        self._begin_stop()

    def _begin_stop(self) -> None:
        if not self._stopping:
            # Partitions move as soon as their in-flight jobs are done, not after all of them.
            self.coordinator.begin_leave()
        self._stopping = True
        self._kick.set()

    def _serve_metrics(self) -> None:
        from ringwork.metrics import WorkerCollector, serve

        def stats() -> dict[str, int]:
            s = self.stats
            return {"succeeded": s.succeeded, "retried": s.retried, "dead": s.dead,
                    "fenced": s.fenced, "dropped": s.dropped, "claimed": s.claimed}

        view = getattr(self.coordinator, "view", dict)
        port = serve(self.settings.metrics_port, self.settings.bind_host,
                     WorkerCollector(stats, view))
        log_event("metrics_serving", node=self.node_id, port=port)

    # -- database helpers ----------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool, lambda: fn(*args, **kwargs))

    async def _outage(self, what: str, exc: RingworkError) -> None:
        """Log and back off; the loop retries, so an outage costs time but loses nothing."""
        self._db_failures += 1
        delay = min(self.settings.db_backoff_max, 0.05 * 2**self._db_failures)
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log_event(
            "database_unavailable",
            node=self.node_id,
            during=what,
            retry_in=f"{delay:.2f}",
            error=first_line,
        )
        await asyncio.sleep(delay)

    async def _with_db_retry(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        while not self._stopping:
            try:
                return await self._db(fn, *args)
            except DatabaseError as exc:
                if not isinstance(exc, DatabaseUnavailable):
                    raise
                await self._outage(what, exc)
        return None
