"""Every place a claimed job can be until its outcome is written -- and the only judge of it.

A job enters the ledger when a round claims it and leaves it when its outcome is written (or
dropped: its partition was lost; or abandoned: the shutdown grace ran out). In between it is in
exactly one place:

    in flight ──finished──> completed (unwritten) ─┐
              └─failed───> failed (unwritten) ─────┼─take──> writing ──written──> (gone)
                                                   └─ put back on a database error

and a claiming round marks the partitions it claims from as *flushing* until it returns (it may
bring back jobs of them). "What of partition p is not yet written" is answered here alone, from
one per-partition count kept by these transitions, so a new place a job can wait in cannot be
forgotten by the revocation drain: :meth:`Ledger.when_clean` calls its waiter back the moment a
partition's count reaches zero, instead of the drain polling for it.

Thread: the worker's event loop only (handler threads report through the executor's outbox).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

from ringwork.job import Job

#: The "retry delay" of an attempt that ended on a cancel request: written ``cancelled``.
CANCELLED: Final = "cancelled"
#: ``(job, error text, retry delay | None for "no retry" | CANCELLED)``: an attempt to write.
Failure = tuple[Job, str, float | Literal["cancelled"] | None]
CleanCallback = Callable[[frozenset[int]], None]


@dataclass
class Stats:
    """Where this worker's jobs went. Written on the loop; the metrics thread reads the ints
    (each read is atomic under the GIL; a scrape may mix two rounds, which counters tolerate)."""

    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    dead: int = 0
    cancelled: int = 0  # ended on a cancel request
    fenced: int = 0
    dropped: int = 0  # outcomes of jobs whose partition was lost: never written
    abandoned: int = 0  # in flight or unwritten when the grace ran out: never written
    claim_batches: int = 0
    flushes: int = 0
    started_at: float = field(default_factory=time.monotonic)


@dataclass
class _Waiter:
    pending: set[int]
    callback: CleanCallback


class Ledger:
    """Claimed jobs by place, a count of unwritten work per partition, and its waiters."""

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats or Stats()
        self.inflight: dict[int, Job] = {}
        self.completed: list[Job] = []
        self.failed: list[Failure] = []
        self._writing: dict[int, Job] = {}  # taken by a round that has not returned
        self._count: collections.Counter[int] = collections.Counter()  # jobs held, by partition
        self._flushing: collections.Counter[int] = collections.Counter()  # claim rounds out
        self._lost: dict[int, int] = {}  # partition -> highest claim token it was lost at
        self._waiters: list[_Waiter] = []

    # -- questions ---------------------------------------------------------------------------

    def unwritten(self, partition: int) -> bool:
        """Is anything of ``partition`` not yet written (a job anywhere, or a round out)?"""
        return self._count[partition] > 0 or self._flushing[partition] > 0

    def holds(self, job_id: int) -> bool:
        return job_id in self.inflight

    def known_ids(self) -> list[int]:
        """Every job we hold a claim for (what ``release_unknown`` must keep)."""
        return [*self.inflight, *(j.id for j in self.completed), *(f[0].id for f in self.failed),
                *self._writing]

    @property
    def unwritten_outcomes(self) -> int:
        return len(self.completed) + len(self.failed) + len(self._writing)

    # -- transitions -------------------------------------------------------------------------

    def claimed(self, job: Job) -> None:
        self.inflight[job.id] = job
        self._count[job.partition] += 1

    def finished(self, job: Job,
                 failure: tuple[str, float | Literal["cancelled"] | None] | None) -> bool:
        """A handler returned (``failure`` None) or failed; False if the attempt is not ours
        any more (abandoned at the end of the grace; or this is a late report of an attempt
        that timed out while the job's next attempt runs here: the same id, another attempt
        -- held by identity, so the late one can never stand in for it)."""
        if self.inflight.get(job.id) is not job:
            return False
        del self.inflight[job.id]
        if self._is_lost(job):
            self.stats.dropped += 1
            self._release([job])
        elif failure is None:
            self.completed.append(job)
        else:
            self.failed.append((job, *failure))
        return True

    def take_completed(self) -> list[Job]:
        done, self.completed = self.completed, []
        self._writing.update((j.id, j) for j in done)
        return done

    def take_failure(self) -> Failure | None:
        if not self.failed:
            return None
        failure = self.failed.pop(0)
        self._writing[failure[0].id] = failure[0]
        return failure

    def put_back(self, completed: Iterable[Job] = (), failed: Iterable[Failure] = ()) -> None:
        """A round's write failed: its outcomes wait again, first in line."""
        completed, failed = list(completed), list(failed)
        for job in (*completed, *(f[0] for f in failed)):
            del self._writing[job.id]
        self.completed[:0] = completed
        self.failed[:0] = failed

    def written(self, jobs: Iterable[Job]) -> None:
        self._release(self._writing.pop(j.id) for j in jobs)

    @contextmanager
    def flushing(self, partitions: Iterable[int]) -> Iterator[None]:
        """While a claiming round is out, what it may claim counts as unwritten: a revocation
        confirmed meanwhile would let the next owner re-run what the round brings back."""
        parts = list(partitions)
        self._flushing.update(parts)
        try:
            yield
        finally:
            self._flushing.subtract(parts)
            self._notify(parts)

    # -- partitions lost, jobs abandoned -------------------------------------------------------

    def lose(self, partitions: frozenset[int]) -> None:
        """Taken without a hand-off: outcomes of the jobs we hold there must never be written
        (the new owner re-runs them)."""
        for job in self._held():
            if job.partition in partitions:
                self._lost[job.partition] = max(self._lost.get(job.partition, 0), job.token)
        self.drop_lost()

    def regained(self, partitions: frozenset[int]) -> None:
        for p in partitions:
            self._lost.pop(p, None)

    def drop_lost(self) -> int:
        """Forget finished outcomes of lost partitions (in-flight ones go when they finish)."""
        if not self._lost:
            return 0
        keep_done = [j for j in self.completed if not self._is_lost(j)]
        keep_failed = [f for f in self.failed if not self._is_lost(f[0])]
        gone = [j for j in self.completed if self._is_lost(j)]
        gone += [f[0] for f in self.failed if self._is_lost(f[0])]
        self.completed, self.failed = keep_done, keep_failed
        self.stats.dropped += len(gone)
        self._release(gone)
        return len(gone)

    def abandon(self) -> list[Job]:
        """We are leaving without them: give up the jobs in flight and the outcomes not yet
        written (none will be; the next owner of their partitions re-runs them), so that their
        partitions are clean for the leave. Returns them. No round may be out."""
        assert not self._writing, "abandon() while a round is out"
        jobs = [*self.inflight.values(), *self.completed, *(f[0] for f in self.failed)]
        self.inflight, self.completed, self.failed = {}, [], []
        self.stats.abandoned += len(jobs)
        self._release(jobs)
        return jobs

    def _is_lost(self, job: Job) -> bool:
        epoch = self._lost.get(job.partition)
        return epoch is not None and job.token <= epoch

    def _held(self) -> Iterator[Job]:
        yield from self.inflight.values()
        yield from self.completed
        yield from (f[0] for f in self.failed)
        yield from self._writing.values()

    # -- waiting for partitions to be clean ---------------------------------------------------

    def when_clean(self, partitions: Iterable[int], callback: CleanCallback) -> None:
        """Call ``callback(clean)`` for each group of ``partitions`` as it becomes clean (at
        once for those already clean), until every one of them has been reported."""
        waiter = _Waiter(set(partitions), callback)
        self._waiters.append(waiter)
        self._notify(list(waiter.pending))

    def _release(self, jobs: Iterable[Job]) -> None:
        touched = []
        for job in jobs:
            self._count[job.partition] -= 1
            touched.append(job.partition)
        if touched:
            self._notify(touched)

    def _notify(self, partitions: list[int]) -> None:
        if not self._waiters:
            return
        touched = set(partitions)
        for waiter in list(self._waiters):
            clean = frozenset(p for p in waiter.pending & touched if not self.unwritten(p))
            if clean:
                waiter.pending -= clean
                if not waiter.pending:
                    self._waiters.remove(waiter)
                waiter.callback(clean)
