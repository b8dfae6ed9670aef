"""Every place a claimed job can be until its outcome is written, and when a partition is quiet.

A job enters the ledger when a round claims it and leaves it when its outcome is written (or
abandoned: the shutdown grace ran out, or the node failed). In between it is in exactly one
place:

    in flight ──finished──> completed (unwritten) ─┐
              └─failed───> failed (unwritten) ─────┼─take──> writing ──written──> (gone)
                                                   └─ put back on a database error

Jobs are fenced by job, not by partition: a job keeps its claim when its partition is revoked
or lost, and its outcome is written under its own claim token -- the store accepts it unless
the job was re-queued meanwhile (its claimer was declared dead), and then refuses it ("fenced").
So nothing here waits for a partition's jobs, and nothing drops an outcome because its
partition moved. What a revocation does wait for is a claiming round: while one is out, the
partitions it claims from are *flushing* (it may bring back jobs of them), and
:meth:`Ledger.when_quiet` calls its waiter back the moment none is.

Thread: the worker's event loop only (handler threads report through the executor's outbox).
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

from ringwork.job import Job
from ringwork.worker.measures import Measures


class Written(enum.Enum):
    """How a transactional handler's attempt ended, its outcome written (or refused) by its own
    transaction (:mod:`.transactional`); an enum, so no plain handler's return value can pass
    for one."""

    COMMITTED = "written"  # the handler's writes and the completion committed together
    FENCED = "fenced"  # rolled back: the claim was gone


@dataclass(frozen=True)
class Stored:
    """A ``store_result`` task's attempt succeeded with this result (its JSON text): completed
    like any success, the text written by the same completion."""

    text: str


WRITTEN: Final = Written.COMMITTED
FENCED: Final = Written.FENCED
#: The "retry delay" of an attempt that ended on a cancel request: written ``cancelled``.
CANCELLED: Final = "cancelled"
#: ``(job, error text, retry delay | None for "no retry" | CANCELLED)``: an attempt to write.
Failure = tuple[Job, str, float | Literal["cancelled"] | None]
QuietCallback = Callable[[frozenset[int]], None]


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
    abandoned: int = 0  # in flight when the grace ran out (handed back) or the node failed
    claim_batches: int = 0
    flushes: int = 0
    started_at: float = field(default_factory=time.monotonic)
    #: Histograms and counters by task, store call and partition event (``measures.py``).
    measures: Measures = field(default_factory=Measures, repr=False)


@dataclass
class _Waiter:
    pending: set[int]
    callback: QuietCallback


class Ledger:
    """Claimed jobs by place, the claiming rounds out per partition, and their waiters."""

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats or Stats()
        self.inflight: dict[int, Job] = {}
        self.completed: list[Job] = []
        self.failed: list[Failure] = []
        #: Result JSON of completed jobs that keep one, by id, until their completion is written.
        self.results: dict[int, str] = {}
        self._writing: dict[int, Job] = {}  # taken by a round that has not returned
        self._flushing: collections.Counter[int] = collections.Counter()  # claim rounds out
        self._waiters: list[_Waiter] = []

    # -- questions ---------------------------------------------------------------------------

    def quiet(self, partition: int) -> bool:
        """Is no claiming round out that may bring back jobs of ``partition``?"""
        return self._flushing[partition] <= 0

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

    def finished(self, job: Job,
                 failure: tuple[str, float | Literal["cancelled"] | None] | Written | Stored
                 | None) -> bool:
        """A handler returned (``failure`` None) or failed; False if the attempt is not ours
        any more (abandoned at the end of the grace; or this is a late report of an attempt
        that timed out while the job's next attempt runs here: the same id, another attempt
        -- held by identity, so the late one can never stand in for it)."""
        if self.inflight.get(job.id) is not job:
            return False
        del self.inflight[job.id]
        if isinstance(failure, Written):
            pass  # a transactional handler's own transaction wrote (or refused) it: gone
        elif failure is None:
            self.completed.append(job)
        elif isinstance(failure, Stored):
            self.completed.append(job)
            self.results[job.id] = failure.text
        else:
            assert isinstance(failure, tuple)
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
        for job in jobs:
            del self._writing[job.id]
            if self.results:
                self.results.pop(job.id, None)

    def results_of(self, jobs: Iterable[Job]) -> dict[int, str] | None:
        """The results among ``jobs`` (``None`` when none has one: the common case, free)."""
        if not self.results:
            return None
        found = {j.id: self.results[j.id] for j in jobs if j.id in self.results}
        return found or None

    @contextmanager
    def flushing(self, partitions: Iterable[int]) -> Iterator[None]:
        """While a claiming round is out, a revocation of what it claims from is not confirmed:
        the next owner would not be the only one claiming there."""
        parts = list(partitions)
        self._flushing.update(parts)
        try:
            yield
        finally:
            self._flushing.subtract(parts)
            self._notify(parts)

    def abandon(self) -> list[Job]:
        """We stop without them: give up the jobs in flight and the outcomes not yet written
        (the pump hands the running ones back when it can; else the cluster re-queues them once
        our registry row goes stale). Returns them. No round may be out."""
        assert not self._writing, "abandon() while a round is out"
        jobs = [*self.inflight.values(), *self.completed, *(f[0] for f in self.failed)]
        self.inflight, self.completed, self.failed = {}, [], []
        self.results = {}
        self.stats.abandoned += len(jobs)
        return jobs

    # -- waiting for claiming rounds ------------------------------------------------------------

    def when_quiet(self, partitions: Iterable[int], callback: QuietCallback) -> None:
        """Call ``callback(quiet)`` for each group of ``partitions`` as no claiming round is out
        for it any more (at once for those already quiet), until each has been reported."""
        waiter = _Waiter(set(partitions), callback)
        self._waiters.append(waiter)
        self._notify(list(waiter.pending))

    def _notify(self, partitions: list[int]) -> None:
        if not self._waiters:
            return
        touched = set(partitions)
        for waiter in list(self._waiters):
            quiet = frozenset(p for p in waiter.pending & touched if self.quiet(p))
            if quiet:
                waiter.pending -= quiet
                if not waiter.pending:
                    self._waiters.remove(waiter)
                waiter.callback(quiet)
