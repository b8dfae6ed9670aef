"""The store's reads and admin actions: what ``app.get_job``, ``ringwork jobs``, ``status`` and
the dashboard ask, and cancel / retry.

The SQL is in :mod:`.reads` (what is read) and :mod:`.jobs` (what changes a job); this part of
the facade only draws each call's transaction.

Threads: application threads, the CLI, ``status``; any thread (see :mod:`.base`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ringwork.job import AttemptRecord, JobRecord
from ringwork.store import backlog, jobs, reads, wait
from ringwork.store.base import StoreBase


class Inspection(StoreBase):
    """Reads of jobs and their history, waits, cancel and retry."""

    def get_job(self, job_id: int) -> JobRecord | None:
        with self._tx() as conn:
            return reads.get_job(conn, self.cluster, job_id)

    def get_attempts(self, job_id: int) -> list[AttemptRecord]:
        """The job's recorded attempts, oldest first (the one running now is not among them)."""
        with self._tx() as conn:
            return reads.get_attempts(conn, self.cluster, job_id)

    def wait(self, job_id: int, timeout: float | None = None) -> JobRecord:
        """The job once finished; :class:`~ringwork.errors.WaitTimeout` after ``timeout`` s."""
        return wait.wait(self, job_id, timeout)

    async def wait_async(self, job_id: int, timeout: float | None = None) -> JobRecord:
        return await wait.wait_async(self, job_id, timeout)

    def list_jobs(
        self, *, state: str | None = None, task: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        with self._tx() as conn:
            return reads.list_jobs(conn, self.cluster, str(state) if state else None, task, limit)

    def cancel(self, job_id: int) -> str:
        """``"cancelled"`` (it was queued) or ``"requested"`` (running: its worker ends it)."""
        with self._tx(write=True) as conn:
            return jobs.cancel(conn, self.dialect, self.cluster, job_id)

    def cancel_task(self, task: str) -> tuple[int, int]:
        """Queued jobs of ``task`` cancelled, running ones asked to end: the two counts."""
        with self._tx(write=True) as conn:
            return jobs.cancel_task(conn, self.dialect, self.cluster, task)

    def retry(self, job_id: int) -> None:
        with self._tx(write=True) as conn:
            jobs.retry(conn, self.dialect, self.cluster, job_id)

    def retry_all(self, state: str = "dead", task: str | None = None) -> tuple[int, int]:
        """Every ``state`` job (of ``task``) queued again: ``(retried, skipped)``."""
        with self._tx(write=True) as conn:
            return jobs.retry_all(conn, self.dialect, self.cluster, state, task)

    def counts_by_state(self) -> dict[str, int]:
        with self._tx() as conn:
            return reads.counts_by_state(conn, self.cluster)

    def status_counts(self, cap: int = reads.STATUS_CAP) -> tuple[dict[str, int], list[str]]:
        """Exact queued and running counts, finished states counted up to ``cap``:
        ``(counts, capped states)``. Cheap on any table size; exact counts of everything are
        :meth:`counts_by_state`."""
        with self._tx() as conn:
            return reads.status_counts(conn, self.dialect, self.cluster, cap)

    def blocked_keys(self, limit: int = reads.BLOCKED_KEYS_SHOWN) -> list[tuple[str, str, int]]:
        """``(task, key, dead job id)`` of keys held by a dead ``block_key_on_dead`` job (up to
        ``limit`` + 1)."""
        with self._tx() as conn:
            return reads.blocked_keys(conn, self.cluster, limit)

    def backlog_by_partition(self) -> dict[int, int]:
        with self._tx() as conn:
            return reads.backlog_by_partition(conn, self.cluster)

    def owned_backlog(self, partitions: Sequence[int]) -> dict[int, tuple[int, float | None]]:
        """Due jobs (capped) and the oldest one's wait, of ``partitions`` (``backlog.py``)."""
        with self._tx() as conn:
            return backlog.owned_backlog(conn, self.dialect, self.cluster, partitions)
