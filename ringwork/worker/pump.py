"""The claim loop: one round writes every outcome that is ready and claims up to free capacity.

Each round writes every completion that arrived since the last one and, in the same
transaction, claims up to the free capacity -- never more: no job waits in our memory while
another worker could run it. While a round is out, finished jobs and freed capacity pile up, so
under load rounds grow by themselves (fewer commits and fsyncs per job), and when idle the loop
sleeps until a wake-up or the poll interval. Failed attempts are rare and written one by one.
Every write carries the job's claim token; the store refuses stale ones ("fenced").

On a stop the pump claims nothing more, writes what finishes, and returns once nothing is in
flight -- or when the shutdown grace runs out: then it hands what is left back to the queue
(async handlers are cancelled; each job's attempt is counted, with an error that says it was
abandoned at shutdown), so the partitions' new owners run those jobs again at once.

Thread: the worker's event loop only. The store calls run on the database threads.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from ringwork.app import App
from ringwork.coordinator import Coordinator
from ringwork.errors import DatabaseError
from ringwork.job import Job, Outcome
from ringwork.log import log_event
from ringwork.settings import Settings
from ringwork.store.claim_async import AsyncClaimer
from ringwork.worker.database import Database
from ringwork.worker.executor import Executor, Verdict
from ringwork.worker.ledger import CANCELLED, FENCED, WRITTEN, Ledger
from ringwork.worker.ownership import Ownership
from ringwork.worker.wakeups import Wakeups

#: Longest wait for more finished jobs before a round is sent while others are still running.
BATCH_WINDOW = 0.002
#: How long cancelled async handlers may take to unwind when the grace has run out.
UNWIND = 1.0
#: A failure write's outcome as ``/metrics`` and the attempt's span name it.
_FAIL_OUTCOMES = {Outcome.RETRY: "retried", Outcome.CANCELLED: "cancelled",
                  Outcome.DEAD: "dead"}


class Pump:
    """Moves jobs in and out of the database; see the module docstring."""

    def __init__(self, app: App, settings: Settings, coordinator: Coordinator, writes: Any,
                 ledger: Ledger, ownership: Ownership, executor: Executor, wakeups: Wakeups,
                 db: Database) -> None:
        self.app = app
        self.settings = settings
        self.coordinator = coordinator
        self.node_id = coordinator.node_id
        #: Where outcomes and claims are written (the store's job operations).
        self.writes = writes
        self.claimer: AsyncClaimer | None = None  # PostgreSQL: a claim alone, on the loop
        self.ledger = ledger
        self.stats = ledger.stats
        self.outcomes = ledger.stats.measures.outcomes  # by (task, outcome), for /metrics
        #: The attempts' spans (``None``: tracing off), ended as their outcomes are written.
        self.spans = executor.spans
        self.ownership = ownership
        self.executor = executor
        self.wakeups = wakeups
        self.db = db
        self.stopping = False
        #: Tasks with ``concurrency=``, by name: their limit in this worker.
        self.limits = {t.name: t.concurrency for t in app.tasks.values()
                       if t.concurrency is not None}
        self.failure: str | None = None  # the coordinator failed: stop now (read by any thread)
        self._unsure_claims = False  # a claiming round failed: it may have committed anyway

    def begin_stop(self) -> None:
        self.stopping = True
        self.wakeups.kick.set()

    def outcome(self, job: Job, verdict: Verdict) -> None:
        """The executor's report of one finished attempt (on the loop)."""
        if not self.ledger.finished(job, verdict):
            return
        if verdict is WRITTEN:
            self.stats.succeeded += 1
            self._ended(job, "succeeded")
            if self._frees_a_job(job):
                self.wakeups.want_more()  # the key's next job may be runnable now
        elif verdict is FENCED:  # a transactional job's own transaction was refused
            self._count_fenced([job], [job.id])
            self._ended(job, "fenced")
        self.wakeups.kick.set()

    def slot_freed(self) -> None:
        """A handler that overran its attempt (timed out, cancelled) returned: capacity is back,
        so look for work again (on the loop)."""
        self.wakeups.wake()

    def coordinator_failed(self) -> bool:
        """True (after logging it, once) if the coordinator can no longer work: stop at once."""
        if self.failure is None:
            reason = self.coordinator.failure()
            if reason is None:
                return False
            self.failure = reason
            self.stopping = True
            log_event("node_failed", logging.ERROR, node=self.node_id, error=reason,
                      abandoned=len(self.ledger.inflight))
        return True

    async def run(self) -> None:
        limit = self.settings.concurrency
        ledger, wakeups, kick = self.ledger, self.wakeups, self.wakeups.kick
        grace_deadline = math.inf
        batch_deadline: float | None = None
        while True:
            kick.clear()
            if self.coordinator_failed():
                await self._abandon()  # re-queued once our row goes stale
                return
            now = time.monotonic()
            if self.stopping and grace_deadline == math.inf:
                grace_deadline = now + self.settings.shutdown_grace
            if self.stopping and now > grace_deadline + self.settings.db_backoff_max:
                # The database stayed away past the grace period: leave the outcomes unwritten
                # (their jobs run again elsewhere: at-least-once) rather than hang forever.
                log_event("outcomes_abandoned", node=self.node_id, inflight=len(ledger.inflight),
                          unwritten=len(ledger.completed) + len(ledger.failed))
                await self._abandon()
                return
            if ledger.failed:
                await self._write_failures()
                continue
            if self._unsure_claims:
                await self._release_unknown_claims()
                continue
            ready = len(ledger.completed)
            # A handler still running past its attempt's end keeps its slot (executor.py).
            free = limit - len(ledger.inflight) - self.executor.overrunning
            owned = {} if self.stopping else self.ownership.claimable()
            first = self.ownership.first(owned) if free > 0 and owned else None
            if first is not None:
                owned = first  # newly assigned partitions first: their jobs waited the move
            elif wakeups.hint is not None and wakeups.maybe_more:
                # Woken only by enqueue nudges: look where the new jobs are, not everywhere.
                owned = {p: e for p, e in owned.items() if p in wakeups.hint}
            want = free if owned and (wakeups.maybe_more or not ready) else 0
            if not ready and (want <= 0 or not wakeups.maybe_more):
                if self.stopping and (not ledger.inflight or now > grace_deadline):
                    if ledger.inflight:
                        log_event("grace_expired", node=self.node_id,
                                  abandoned=len(ledger.inflight))
                        await self._hand_back()
                    return
                timeout = self.settings.poll_interval
                if self.stopping:
                    timeout = min(timeout, max(0.0, grace_deadline - now))
                if not await kick.wait(timeout) and not self.stopping:
                    wakeups.want_more()  # the poll backstop: look again, everywhere
                continue
            if ready and ledger.inflight and ready < limit // 2 and not self.stopping:
                # Jobs are finishing one by one: give the others a moment to join this round,
                # so a round carries a batch, not a single job (one commit for many).
                if batch_deadline is None:
                    batch_deadline = now + BATCH_WINDOW
                if now < batch_deadline:
                    await kick.wait(batch_deadline - now)
                    continue
            batch_deadline = None
            await self._round(owned if want > 0 else {}, want)

    def rooms(self) -> dict[str, int] | None:
        """How many more jobs of each limited task may start here now (``None``: the app has
        no ``concurrency=`` task: the plain claim). Handlers still running past their attempt's
        end count: they are running."""
        if not self.limits:
            return None
        running = self.executor.running_of
        return {task: max(0, limit - running(task)) for task, limit in self.limits.items()}

    async def _round(self, owned: dict[int, int], want: int) -> None:
        """Write the completions that are ready and claim up to ``want`` jobs from ``owned``."""
        ledger = self.ledger
        self.wakeups.maybe_more = False  # a wake-up arriving during the round sets it again
        done = ledger.take_completed()
        # Taken before the round: while it is out, jobs only end (rooms grow), none start.
        rooms = self.rooms() if want > 0 else None
        extra: dict[str, Any] = {} if rooms is None else {"rooms": rooms}
        with ledger.flushing(owned):
            try:
                if done or self.claimer is None:
                    pairs = [(job.id, job.token) for job in done]
                    results = ledger.results_of(done)
                    if results is not None:  # only rounds that carry results take them
                        extra["results"] = results
                    op = "claim" if not done else "complete_and_claim" if want else "complete"
                    fenced, jobs = await self.db.timed(
                        op, self.writes.exchange, self.node_id, pairs, owned, want, **extra)
                else:  # a claim alone (an idle worker woken up): straight from the loop
                    start = time.perf_counter()
                    try:
                        fenced, jobs = [], await self.claimer.claim(self.node_id, owned, want,
                                                                    **extra)
                    finally:
                        self.db.observe("claim", time.perf_counter() - start)
            except DatabaseError as exc:
                ledger.put_back(completed=done)  # written only once it commits
                self.wakeups.want_more()
                # The round may have committed before the error reached us: then it claimed
                # jobs we never heard of. Find them before claiming again.
                self._unsure_claims = self._unsure_claims or want > 0
                await self.db.outage("exchange", exc)
                return
            self.db.succeeded()
            ledger.written(done)
            if done:
                self.stats.flushes += 1
                self.stats.succeeded += len(done) - len(fenced)
                self._count_fenced(done, fenced)
                refused = set(fenced) if fenced else ()
                for job in done:
                    self._ended(job, "fenced" if job.id in refused else "succeeded")
                if any(self._frees_a_job(job) for job in done):
                    self.wakeups.want_more()  # the key's next job may be runnable now, or
                    # the next of a task at its concurrency limit
            if jobs:
                self.stats.claim_batches += 1
                self.stats.claimed += len(jobs)
                for job in jobs:  # in the ledger before the round's partitions are released
                    ledger.claimed(job)
                    self.executor.start(job)
            if want and len(jobs) == want:
                self.wakeups.want_more()  # a full batch: there may be more behind it
            if want and self.ownership.fresh:
                self.ownership.served(owned, jobs, want)
                self.wakeups.want_more()  # a round for fresh partitions: the rest come next

    async def _write_failures(self) -> None:
        """Failed attempts are rare: written one by one, each with its own outcome."""
        ledger = self.ledger
        while (failure := ledger.take_failure()) is not None:
            job, error, delay = failure
            ended: dict[str, Any] = (
                {"retry_delay": None, "cancelled": True} if delay == CANCELLED
                else {"retry_delay": delay})
            try:
                outcome = await self.db.timed("fail", self.writes.fail, self.node_id, job.id,
                                              job.token, error, **ended)
            except DatabaseError as exc:
                ledger.put_back(failed=[failure])
                await self.db.outage("fail", exc)
                return
            ledger.written([job])
            self._ended(job, _FAIL_OUTCOMES.get(outcome, "fenced"))
            if outcome is Outcome.RETRY:
                self.stats.retried += 1
                if isinstance(delay, float):
                    self.wakeups.wake_later(delay)
            elif outcome is Outcome.CANCELLED:
                self.stats.cancelled += 1
            elif outcome is Outcome.DEAD:
                self.stats.dead += 1
                log_event("job_dead", node=self.node_id, job=job.id, task=job.task,
                          attempts=job.attempt)
            else:
                self._count_fenced([job], [job.id])
            if self._frees_a_job(job):
                self.wakeups.want_more()
        self.db.succeeded()

    async def _release_unknown_claims(self) -> None:
        try:
            released = await self.db.timed("release_unknown", self.writes.release_unknown,
                                           self.node_id, self.ledger.known_ids())
        except DatabaseError as exc:
            await self.db.outage("release", exc)
            return
        self._unsure_claims = False
        if released:
            log_event("claims_released", node=self.node_id, count=len(released))

    async def _abandon(self) -> list[Job]:
        """Stop without what is in flight or unwritten (async handlers are cancelled); the
        cluster re-queues those jobs once our registry row goes stale or is removed."""
        await self.executor.cancel_async(UNWIND)
        jobs = self.ledger.abandon()
        for job in jobs:
            self._ended(job, "abandoned")
        return jobs

    async def _hand_back(self) -> None:
        """The grace ran out: hand the jobs still running back to the queue ourselves, each
        counted as an attempt and saying why, so that they run again at once elsewhere rather
        than after our row goes stale. One try: if the database is away, the cluster does it."""
        jobs = await self._abandon()
        claims = [(job.id, job.token) for job in jobs]
        try:
            written = await self.db.timed("hand_back", self.writes.abandon, self.node_id, claims)
        except DatabaseError as exc:
            log_event("hand_back_failed", logging.WARNING, node=self.node_id, jobs=len(claims),
                      error=exc)
            return
        log_event("jobs_handed_back", node=self.node_id, jobs=len(written),
                  fenced=len(claims) - len(written))

    def _ended(self, job: Job, outcome: str) -> None:
        """An attempt's outcome is written (or refused, or given up): count it by task, and
        end its span."""
        self.outcomes[(job.task, outcome)] += 1
        if self.spans is not None:
            self.spans.end(job, outcome)

    def _count_fenced(self, written: Sequence[Job], fenced: Sequence[int]) -> None:
        """Outcomes the store refused: this node no longer holds those jobs' claims (their
        partition moved on, at a newer epoch). One line per job, at WARNING: a zombie's work."""
        if not fenced:
            return
        self.stats.fenced += len(fenced)
        refused = set(fenced)
        for job in written:
            if job.id in refused:
                log_event("job_fenced", logging.WARNING, node=self.node_id, job=job.id,
                          task=job.task, partition=job.partition, epoch=job.token,
                          attempt=job.attempt)

    def _frees_a_job(self, job: Job) -> bool:
        """Does ``job``'s end let another job start that could not before: the next of its
        ordered key, or one of its task held back by the task's ``concurrency=``?"""
        task = self.app.tasks.get(job.task)
        return task is not None and (task.ordered or task.concurrency is not None)
