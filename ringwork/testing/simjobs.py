"""The job table of the in-memory referee: just enough of it to check fencing by job.

A simulated job is claimed by one process of a node at a partition's epoch (its token), and
finished by that process under that token -- the SQL store's ``claimed_by`` and
``claim_epoch`` check (:mod:`ringwork.store.claim`). A move of its partition keeps its claim
unless its claimer is dead (not a member and its registry row stale or gone), as
:func:`ringwork.store.referee.assign` does; a new process under the same name fences the old
one's jobs when it registers. Every re-queue is reported first to ``on_requeue``, where the
simulator checks invariant 8 (no job is re-queued while its claimer may still claim).

Single-threaded, like the whole simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass


@dataclass
class SimJob:
    id: int
    partition: int
    state: str = "queued"  # queued, running, done
    claimed_by: str | None = None
    process: int = -1  # which process of ``claimed_by`` (a restart is a new one)
    token: int = -1  # the partition's epoch at the claim
    runs: int = 0  # claims so far: a re-run is a second one


class JobTable:
    """Running jobs by id; queued ones are made on demand (there is always work)."""

    def __init__(self) -> None:
        self.jobs: dict[int, SimJob] = {}
        self.queued: dict[int, list[int]] = {}  # partition -> re-queued job ids, oldest first
        self.on_requeue: Callable[[SimJob], None] | None = None
        self.requeued = 0
        self.fenced = 0
        self._seq = 0

    def claim(self, node: str, process: int, partition: int, epoch: int) -> SimJob:
        """Claim the oldest queued job of ``partition`` (the caller checked ownership)."""
        waiting = self.queued.get(partition)
        if waiting:
            job = self.jobs[waiting.pop(0)]
        else:
            self._seq += 1
            job = self.jobs[self._seq] = SimJob(self._seq, partition)
        job.state, job.claimed_by, job.process, job.token = "running", node, process, epoch
        job.runs += 1
        return job

    def finish(self, node: str, process: int, job_id: int, token: int) -> bool:
        """The completion's fence: still running under this very claim."""
        job = self.jobs.get(job_id)
        mine = job is not None and job.state == "running" and job.claimed_by == node
        if not mine or job is None or job.process != process or job.token != token:
            self.fenced += 1
            return False
        job.state = "done"
        del self.jobs[job_id]
        return True

    def requeue_dead(self, epochs: list[int], partitions: Iterable[int] | None,
                     dead: Callable[[str], bool]) -> int:
        """Re-queue running jobs claimed before their partition's current epoch whose claimer
        is dead; only in ``partitions`` when given (a move), else everywhere (a sweep)."""
        only = None if partitions is None else set(partitions)
        count = 0
        for job in list(self.jobs.values()):
            if job.state != "running" or (only is not None and job.partition not in only):
                continue
            if job.token < epochs[job.partition] and job.claimed_by is not None \
                    and dead(job.claimed_by):
                self._requeue(job)
                count += 1
        return count

    def fence_name(self, node: str) -> None:
        """A new process registered under ``node``: the old one's running jobs are re-queued."""
        for job in list(self.jobs.values()):
            if job.state == "running" and job.claimed_by == node:
                self._requeue(job)

    def _requeue(self, job: SimJob) -> None:
        if self.on_requeue is not None:
            self.on_requeue(job)
        self.requeued += 1
        job.state, job.claimed_by, job.process, job.token = "queued", None, -1, -1
        self.queued.setdefault(job.partition, []).append(job.id)


def is_dead(claimer: str, keep: Collection[str], age: float | None, stale_after: float) -> bool:
    """The store's rule: no member, and a registry row missing (``age`` None) or stale."""
    return claimer not in keep and (age is None or age >= stale_after)
