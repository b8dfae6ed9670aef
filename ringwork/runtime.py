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
import contextlib
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
from ringwork.coordinator import Coordinator
from ringwork.errors import DatabaseError, DatabaseUnavailable, RingworkError
from ringwork.job import Job, Outcome
from ringwork.log import log_event
from ringwork.protocol.config import ProtocolConfig
from ringwork.settings import Settings
from ringwork.wakeup import WakeReceiver

T = TypeVar("T")

HOUSEKEEPING_INTERVAL = 1.0  # seconds between ownership checks / registry touches
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
    """Protocol timings derived from the two a user sets; the rest keep their proportions.

    The defaults (0.5 s heartbeat, 3 s session timeout) are the protocol's own; a different
    session timeout scales the lease margin, the leader's lease and the registry poll with it so
    the safety relations in :mod:`ringwork.protocol.config` keep holding.
    """
    scale = settings.session_timeout / 3.0
    return ProtocolConfig(
        cluster=settings.cluster,
        partitions=settings.partitions,
        heartbeat_interval=settings.heartbeat_interval,
        session_timeout=settings.session_timeout,
        lease_margin=0.5 * scale,
        leader_lease=2.5 * scale,
        poll_interval=1.0 * scale,
        election_backoff=1.0 * scale,
        revoke_timeout=settings.revoke_timeout,
    )


def cluster_node(app: App) -> Coordinator:
    """The ZeroMQ cluster member for ``app``, configured from its settings."""
    from ringwork.node import CurveKeys, Node

    s = app.settings
    curve = CurveKeys.load(s.curve_key_file) if s.curve_key_file else None
    return Node(
        app.store, protocol_config(s), bind=s.bind, advertise=s.advertise or None, curve=curve
    )


class Worker:
    """Runs one worker process until it is told to stop."""

    def __init__(
        self,
        app: App,
        coordinator: Coordinator | None = None,
        *,
        wake_host: str = "127.0.0.1",
        wake_advertise: str | None = None,
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.coordinator: Coordinator = coordinator or cluster_node(app)
        self.node_id = self.coordinator.node_id
        self.stats = Stats()
        self._wake_host = wake_host
        self._wake_advertise = wake_advertise
        self._rng = random.Random()
        self._inflight: dict[int, tuple[Job, asyncio.Task[None]]] = {}
        self._completed: list[Job] = []
        self._failed: list[tuple[Job, str, float | None]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._revoking: set[int] = set()
        self._flushing_partitions: set[int] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._lost: dict[int, int] = {}  # partition -> epoch at which it was lost
        self._stopping = False
        self._signals = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
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

    # -- main loop -----------------------------------------------------------------------------

    async def _main(self, install_signals: bool) -> int:
        loop = self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._capacity = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        receiver = WakeReceiver(self.store.cluster, self._wake_host, self._wake_advertise)
        loop.add_reader(receiver.sock.fileno(), self._on_datagram, receiver)
        listener_stop = threading.Event()
        try:
            await self._with_db_retry(
                "start", self.coordinator.start, self._on_partitions, receiver.endpoint
            )
            if self._stopping:
                return 0
            if self.store.dialect == "postgresql":
                threading.Thread(
                    target=self._listen_notifications,
                    args=(listener_stop,),
                    name="ringwork-listen",
                    daemon=True,
                ).start()
            if self.settings.metrics_port:
                self._serve_metrics()
            log_event(
                "worker_started",
                node=self.node_id,
                cluster=self.store.cluster,
                concurrency=self.settings.concurrency,
                dialect=self.store.dialect,
            )
            self._ready.set()
            housekeeping = asyncio.create_task(self._housekeeping())
            await self._claim_loop()
            housekeeping.cancel()
            await self._drain()
        finally:
            listener_stop.set()
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
        return 0

    async def _claim_loop(self) -> None:
        limit = self.settings.concurrency
        while not self._stopping:
            free = limit - len(self._inflight)
            if free <= 0:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            owned = {
                p: e for p, e in self.coordinator.claimable().items() if p not in self._revoking
            }
            if not owned:
                await self._sleep_until_woken(self.settings.poll_interval)
                continue
            self._wake.clear()  # a wake-up that arrives during the claim must not be lost
            try:
                jobs = await self._db(self.store.claim, self.node_id, owned, free)
            except DatabaseError as exc:
                await self._outage("claim", exc)
                continue
            self._db_failures = 0
            if jobs:
                self.stats.claim_batches += 1
                self.stats.claimed += len(jobs)
                for job in jobs:
                    task = asyncio.create_task(self._execute(job))
                    self._inflight[job.id] = (job, task)
            if len(jobs) < free:
                await self._sleep_until_woken(self.settings.poll_interval)

    async def _sleep_until_woken(self, timeout: float) -> None:
        if self._stopping:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    # -- executing jobs ------------------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        task = self.app.tasks.get(job.task)
        try:
            if task is None:
                self._failed.append(
                    (
                        job,
                        f"UnknownTaskError: task {job.task!r} is not "
                        "registered in this worker's app",
                        None,
                    )
                )
            else:
                try:
                    if task.is_async:
                        await task.handler(job)
                    else:
                        loop = asyncio.get_running_loop()
                        await loop.run_in_executor(self._handlers, task.handler, job)
                except Exception as exc:
                    delay = retry_delay(
                        job.attempt, self.settings.retry_base, self.settings.retry_max, self._rng
                    )
                    log_event(
                        "job_failed",
                        node=self.node_id,
                        job=job.id,
                        task=job.task,
                        attempt=job.attempt,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    self._failed.append((job, describe_exception(exc), delay))
                else:
                    self._completed.append(job)
        finally:
            self._inflight.pop(job.id, None)
            self._capacity.set()
            self._kick_flush()

    def _kick_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Write outcomes in batches: everything that finished while the last write ran."""
        while self._completed or self._failed:
            self._drop_lost_outcomes()
            done, self._completed = self._completed, []
            failed, self._failed = self._failed, []
            self._flushing_partitions = {j.partition for j in done} | {
                f[0].partition for f in failed
            }
            try:
                if done:
                    pairs = [(job.id, job.token) for job in done]
                    fenced = await self._db(self.store.complete, self.node_id, pairs)
                    self.stats.succeeded += len(done) - len(fenced)
                    self._count_fenced(len(fenced))
                    self.stats.flushes += 1
                    done = []
                while failed:
                    job, error, delay = failed[0]
                    outcome = await self._db(
                        self.store.fail, self.node_id, job.id, job.token, error, retry_delay=delay
                    )
                    failed.pop(0)
                    if outcome is Outcome.RETRY:
                        self.stats.retried += 1
                        if delay is not None:  # be back for it on time, not at the next poll
                            asyncio.get_running_loop().call_later(delay, self._wake.set)
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
            except DatabaseError as exc:
                # Keep every outcome: a finished job is acknowledged only once it is written.
                self._completed[:0] = done
                self._failed[:0] = failed
                await self._outage("complete", exc)
                continue
            self._db_failures = 0
            self._wake.set()  # ordered successors and retried jobs may now be claimable

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
            self._wake.set()
        elif kind == "revoked":
            self._revoking |= partitions
            revoke = asyncio.create_task(self._finish_revoke(partitions))
            self._background.add(revoke)
            revoke.add_done_callback(self._background.discard)
        elif kind == "lost":
            for job, _task in self._inflight.values():
                if job.partition in partitions:
                    self._lost[job.partition] = max(self._lost.get(job.partition, 0), job.token)
        for callback in callbacks:
            self._handlers.submit(self._run_callback, callback, set(partitions), kind)

    async def _finish_revoke(self, partitions: frozenset[int]) -> None:
        """Confirm each revoked partition as soon as its in-flight jobs are done and written."""
        pending = set(partitions)
        while pending:
            busy = {job.partition for job, _ in self._inflight.values()}
            busy.update(job.partition for job in self._completed)
            busy.update(job.partition for job, _, _ in self._failed)
            if self._flush_task is not None and not self._flush_task.done():
                busy.update(self._flushing_partitions)
            free = frozenset(pending - busy)
            if free:
                pending -= free
                self._revoking -= free
                await self._db(self.coordinator.revoke_done, free)
            if pending:
                await asyncio.sleep(0.005)

    def _run_callback(
        self, callback: Callable[[set[int]], Any], parts: set[int], kind: str
    ) -> None:
        try:
            callback(parts)
        except Exception as exc:  # a user callback must never take the worker down
            log_event("callback_failed", node=self.node_id, kind=kind, error=repr(exc))

    # -- wake-ups, housekeeping, signals -------------------------------------------------------

    def _on_datagram(self, receiver: WakeReceiver) -> None:
        if receiver.drain() is not None:
            self._wake.set()

    def _listen_notifications(self, stop: threading.Event) -> None:
        """PostgreSQL LISTEN/NOTIFY on its own thread; reconnects after an outage."""
        failures = 0
        while not stop.is_set():
            try:
                listener = self.store.listen()
                if listener is None:
                    return
                try:
                    failures = 0
                    while not stop.is_set():
                        if listener.wait(0.5) and self._loop is not None:
                            self._loop.call_soon_threadsafe(self._wake.set)
                finally:
                    listener.close()
            except Exception as exc:
                failures += 1
                log_event("listen_failed", node=self.node_id, error=repr(exc))
                stop.wait(min(self.settings.db_backoff_max, 0.1 * 2**failures))

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                await self._db(self.coordinator.check)
            except DatabaseError as exc:
                log_event("housekeeping_failed", node=self.node_id, error=exc)

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
        self._wake.set()
        self._capacity.set()

    async def _drain(self) -> None:
        """Finish in-flight jobs within the grace period and write every outcome."""
        tasks = [task for _, task in self._inflight.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace)
            if pending:
                log_event("grace_expired", node=self.node_id, abandoned=len(pending))
        deadline = time.monotonic() + max(self.settings.shutdown_grace, 1.0)
        while (
            self._completed
            or self._failed
            or (self._flush_task is not None and not self._flush_task.done())
        ):
            if time.monotonic() > deadline:
                log_event("flush_abandoned", node=self.node_id, pending=len(self._completed))
                break
            self._kick_flush()
            assert self._flush_task is not None
            await asyncio.wait({self._flush_task}, timeout=1.0)

    def _serve_metrics(self) -> None:
        from ringwork.metrics import WorkerCollector, serve

        def stats() -> dict[str, int]:
            s = self.stats
            return {
                "succeeded": s.succeeded,
                "retried": s.retried,
                "dead": s.dead,
                "fenced": s.fenced,
                "dropped": s.dropped,
                "claimed": s.claimed,
            }

        view = getattr(self.coordinator, "view", dict)
        port = serve(self.settings.metrics_port, self._wake_host, WorkerCollector(stats, view))
        log_event("metrics_serving", node=self.node_id, port=port)

    # -- database helpers ----------------------------------------------------------------------

    _db_failures = 0

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
