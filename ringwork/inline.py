"""Jobs run inline, for the user's own tests: ``with app.testing() as t: ...; t.run_pending()``.

A user's pytest should test handlers without starting a cluster. :meth:`App.testing
<ringwork.app.App.testing>` points the app at a temporary SQLite database for the ``with``
block; jobs enqueued meanwhile go there, and :class:`Testing` runs them on the calling thread
with the store's very statements -- so what a test sees is what a worker would do:

* claims by partition ownership and the ordered-key head check (a key's jobs one at a time, in
  enqueue order; others in priority, then enqueue order);
* outcomes fenced and written as the worker writes them: retries with the task's backoff
  (``run_at`` in the future), dead letters after ``max_attempts``, transactional handlers in
  their own transaction with the completion;
* a fake clock: :meth:`Testing.advance` moves the database's clock forward (SQLite's ``'now'``
  in this process, through :mod:`ringwork.store.hostclock`), which makes retries and delayed
  jobs due and enqueues each periodic tick passed on the way, as the leader would.

Not simulated: the cluster itself (partition moves, failover, timeouts of plain handlers, which
cannot be interrupted on the calling thread; an ``async def`` handler's timeout is enforced).

Threads: the caller's. The fake clock is process-wide while the block runs (every SQLite
database this process opens sees it), and is put back at its end.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from ringwork.errors import ConfigurationError
from ringwork.job import Job, JobRecord, Outcome, encode_result
from ringwork.node.cron import cron_chore_run
from ringwork.store import hostclock
from ringwork.store.clock import now_expr
from ringwork.store.schema import QUEUED, jobs
from ringwork.tracing import AttemptSpans
from ringwork.worker.failures import describe_exception
from ringwork.worker.ledger import FENCED
from ringwork.worker.transactional import Transactions

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ringwork.periodic import Schedule
    from ringwork.settings import Settings
    from ringwork.store import Store
    from ringwork.tasks import Task


class App(Protocol):
    """What the runner needs of :class:`ringwork.app.App` (named, not imported: the App imports
    this module to offer ``testing()``)."""

    @property
    def tasks(self) -> Mapping[str, Task]: ...

    @property
    def schedules(self) -> Mapping[str, Schedule]: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store: ...

    def _use_database(self, url: str) -> Callable[[], None]: ...

#: The node id the inline runner claims as: it owns every partition.
NODE = "inline-test"
#: Upper bound on jobs one ``run_pending`` runs: a handler that enqueues a job for ever ends.
MAX_RUNS = 100_000


class Testing:
    """The ``with`` block of :meth:`App.testing`; see the module docstring."""

    def __init__(self, app: App, database_url: str | None = None) -> None:
        self.app = app
        self._url = database_url
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._restore: Any = None
        self._epochs: dict[int, int] = {}
        self._rng = random.Random(0)  # retry jitter, reproducible
        self._shift = 0.0

    # -- the block ----------------------------------------------------------------------------

    def __enter__(self) -> Testing:
        url = self._url
        if url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ringwork-testing-")
            url = f"sqlite:///{self._tmp.name}/jobs.db"
        elif not url.startswith("sqlite"):
            raise ConfigurationError("app.testing() runs on SQLite (a file URL), not " + url)
        self._restore = self.app._use_database(url)
        store = self.store
        term = store.claim_leadership(NODE, store.read_term().term)
        assert term is not None, "a fresh database has no other leader"
        every = {p: NODE for p in range(store.partitions)}
        epochs = store.assign(NODE, term, every, keep=(NODE,))
        assert epochs is not None
        self._epochs = epochs
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        hostclock.shift(-self._shift)
        self._shift = 0.0
        try:
            self._restore()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()

    @property
    def store(self) -> Store:
        return self.app.store

    # -- what a test does ---------------------------------------------------------------------

    def run_pending(self) -> int:
        """Run every job that is due now, one at a time, until none is (jobs enqueued by the
        handlers included); the number of attempts run. Retries and delayed jobs wait for
        :meth:`advance` (or use :meth:`drain`)."""
        return asyncio.run(self._run_due())

    def drain(self, *, max_wait: float = 7 * 86400.0) -> int:
        """Like :meth:`run_pending`, then move the clock on to each next retry or delayed job
        (at most ``max_wait`` seconds in all) until nothing is queued; the attempts run.
        Periodic ticks are not enqueued by it: :meth:`advance` does that."""
        runs = self.run_pending()
        waited = 0.0
        while (due_in := self._next_due_in()) is not None and waited + due_in <= max_wait:
            self._move(due_in)
            waited += due_in
            runs += self.run_pending()
        return runs

    def advance(self, seconds: float) -> int:
        """Move the database's clock ``seconds`` forward, stopping at each periodic tick on the
        way to enqueue and run it, and run what is due at the end; the attempts run."""
        if not seconds >= 0:
            raise ValueError(f"advance() moves the clock forward, not by {seconds!r}")
        target = self._now() + timedelta(seconds=seconds)
        runs = self._tick() + self.run_pending()
        schedules = list(self.app.schedules.values())
        while True:
            nexts = [t for t in (s.next_after(self._now()) for s in schedules) if t is not None]
            step = min(nexts) if nexts else None
            if step is None or step > target:
                break
            self._move((step - self._now()).total_seconds())
            runs += self._tick() + self.run_pending()
        self._move(max(0.0, (target - self._now()).total_seconds()))
        return runs + self.run_pending()

    def jobs(self, *, task: str | None = None, state: str | None = None) -> list[JobRecord]:
        """The jobs of the block, oldest first, of ``task`` and in ``state`` when given."""
        return list(reversed(self.store.list_jobs(task=task, state=state, limit=MAX_RUNS)))

    # -- running -------------------------------------------------------------------------------

    async def _run_due(self) -> int:
        store, runs = self.store, 0
        tx = Transactions(store, NODE, 1)
        try:
            while runs < MAX_RUNS:
                job = self._claim_next()
                if job is None:
                    return runs
                await self._run(job, tx)
                runs += 1
            return runs
        finally:
            await tx.close()

    def _claim_next(self) -> Job | None:
        """The first job due, in the order a single worker would start them: by priority, then
        enqueue order; claimed through the store (head check and fencing included)."""
        store = self.store
        c = jobs.c
        stmt = (sa.select(c.partition).where(c.cluster == store.cluster, c.state == QUEUED,
                                             c.run_at <= now_expr(store.dialect))
                .order_by(c.priority.desc(), c.id))
        with store.engine.connect() as conn:
            partitions = list(dict.fromkeys(conn.execute(stmt).scalars()))
        for p in partitions:
            claimed = store.claim(NODE, {p: self._epochs[p]}, 1)
            if claimed:
                return claimed[0]
        return None  # due jobs are all behind a running or earlier job of their key

    async def _run(self, job: Job, tx: Transactions) -> None:
        """One attempt, in an OpenTelemetry span when the app traces (as a worker's)."""
        spans = AttemptSpans.if_enabled(NODE)
        if spans is None:
            await self._attempt(job, tx, None)
            return
        spans.start(job)
        outcome = "abandoned"
        try:
            outcome = await self._attempt(job, tx, spans)
        finally:
            spans.end(job, outcome)

    async def _attempt(self, job: Job, tx: Transactions, spans: AttemptSpans | None) -> str:
        """Run ``job`` and write its outcome; returns the outcome as a worker's metrics name
        it (succeeded, retried, dead, fenced)."""
        store, task = self.store, self.app.tasks.get(job.task)
        if task is None:
            error = f"UnknownTaskError: task {job.task!r} is not registered in this app"
            return _named(store.fail(NODE, job.id, job.token, error, retry_delay=None))
        try:
            handler: Any = task.handler
            if spans is not None:
                handler = spans.bind(job, handler, task.is_async)
            if task.transactional:
                keep = task.store_result
                if task.is_async:
                    written = await _bounded(tx.run_async(handler, job, task.timeout, keep),
                                             task.timeout)
                else:
                    written = tx.run_sync(handler, job, task.timeout, keep)
                # Its transaction wrote the completion (or refused it).
                return "fenced" if written is FENCED else "succeeded"
            value = handler(job)
            if task.is_async:
                value = await _bounded(value, task.timeout)
            text = encode_result(job.task, value) if task.store_result else None
        except BaseException as exc:  # the worker's policy: anything fails the attempt
            if isinstance(exc, KeyboardInterrupt):
                raise
            if spans is not None:
                spans.failed(job, exc)
            s, policy = self.app.settings, task.retry
            delay = (policy.delay(job.attempt, s.retry_base, s.retry_max, self._rng)
                     if policy.retries(exc) else None)  # the task's policy, as the worker's
            return _named(store.fail(NODE, job.id, job.token, describe_exception(exc),
                                     retry_delay=delay))
        fenced = store.complete(NODE, [(job.id, job.token)],
                                None if text is None else {job.id: text})
        return "fenced" if fenced else "succeeded"

    # -- the clock -------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=self._shift)

    def _move(self, seconds: float) -> None:
        self._shift += seconds
        hostclock.shift(seconds)

    def _tick(self) -> int:
        """Enqueue the periodic ticks due now, as the leader's cron chore does."""
        schedules = list(self.app.schedules.values())
        if not schedules:
            return 0
        cron_chore_run(self.store, NODE, schedules)(lambda: True)
        return 0

    def _next_due_in(self) -> float | None:
        """Seconds until the earliest queued job is due (``None``: nothing queued)."""
        store = self.store
        c = jobs.c
        with store.engine.connect() as conn:
            first = conn.execute(sa.select(sa.func.min(c.run_at)).where(
                c.cluster == store.cluster, c.state == QUEUED)).scalar()
        if first is None:
            return None
        if first.tzinfo is None:
            first = first.replace(tzinfo=timezone.utc)
        return max(0.001, (first - self._now()).total_seconds() + 0.001)


def _named(outcome: Outcome) -> str:
    return {Outcome.RETRY: "retried", Outcome.DEAD: "dead",
            Outcome.CANCELLED: "cancelled"}.get(outcome, "fenced")


async def _bounded(awaitable: Any, timeout: float | None) -> Any:
    if timeout is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout:g} s (the task's timeout)") from None
