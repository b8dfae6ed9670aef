"""Jobs from the outside: build, enqueue, inspect, cancel and retry -- the client half of the App.

:class:`JobClient` is mixed into :class:`~ringwork.app.App`; it needs the app's task registry
(:meth:`get_task`), its settings (the partition count) and its store, and it owns nothing else.
Validation happens here, before any database access, so a bad job is a one-line error and a
batch is all-or-nothing at the door.

Threads: any application thread; the store serialises what it must.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ringwork.errors import PayloadError
from ringwork.job import AttemptRecord, JobRecord, NewJob, payload_encoder
from ringwork.partitioner import partition_for
from ringwork.settings import Settings
from ringwork.tasks import MAX_DELAY, Task
from ringwork.tracing import traced_enqueue

if TYPE_CHECKING:
    from ringwork.store import Store


class JobClient:
    """Enqueue and administer jobs; see the module docstring for what it relies on."""

    # -- provided by the App it is mixed into ------------------------------------------------

    @property
    def settings(self) -> Settings:
        raise NotImplementedError

    @property
    def store(self) -> Store:
        raise NotImplementedError

    def get_task(self, name: str) -> Task:
        raise NotImplementedError

    def _wake(self, partitions: set[int]) -> None:
        raise NotImplementedError

    # -- partitioning and enqueueing -----------------------------------------------------------

    def partition_for(self, key: str) -> int:
        """The partition for ``key``: Kafka's default partitioner over this app's partitions."""
        return partition_for(key, self.settings.partitions)

    def build_job(
        self,
        task: str,
        key: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: float | None = None,
        priority: int | None = None,
        dedupe_key: str | None = None,
    ) -> NewJob:
        """Validate one job and compute its partition (no database access)."""
        job = self._build(
            json.dumps, task, key, payload,
            run_at=run_at, delay=delay, priority=priority, dedupe_key=dedupe_key,
        )
        # A plain NewJob: the caller may still change the payload before enqueueing it.
        return dataclasses.replace(job)

    def _build(
        self,
        encode: Callable[[Any], str],
        task: str,
        key: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: float | None = None,
        priority: int | None = None,
        dedupe_key: str | None = None,
    ) -> NewJob:
        """:meth:`build_job`, keeping the encoded payload for the store (encoded once)."""
        spec = self.get_task(task)
        if not isinstance(key, str):
            raise PayloadError(f"job key must be a string, not {type(key).__name__}")
        if spec.payload_type is not None:  # checked and turned into JSON values
            payload = spec.payload_type.dump(payload)
        try:
            payload_json = encode(payload)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"payload of task {task!r} is not JSON: {exc}") from None
        if delay is not None:
            # Relative to the database's clock at the insert, not this process's (one clock).
            if not math.isfinite(delay) or abs(delay) > MAX_DELAY:
                raise PayloadError(
                    f"delay must be a number of seconds up to {MAX_DELAY:.0f} (100 years), "
                    f"not {delay!r}"
                )
            run_at = None
        return NewJob.prepared(
            task,
            key,
            self.partition_for(key),
            payload,
            payload_json,
            spec.priority if priority is None else priority,
            run_at,
            spec.max_attempts,
            spec.ordered,
            dedupe_key,
            delay,
            spec.block_key_on_dead,
        )

    def enqueue(
        self, task: str, key: str, payload: Any = None, *, connection: Any = None, **options: Any
    ) -> int:
        """Insert one job and return its id (the existing id if ``dedupe_key`` matches one).

        ``connection``: write the job in the caller's transaction instead of one of its own --
        see :meth:`enqueue_many`.
        """
        job = {"task": task, "key": key, "payload": payload, **options}
        return self.enqueue_many([job], connection=connection)[0]

    def enqueue_many(
        self, jobs: Iterable[Mapping[str, Any] | NewJob], *, connection: Any = None
    ) -> list[int]:
        """Insert many jobs in batched statements; ids come back in input order.

        Each item is a :class:`NewJob` or a mapping with ``task``, ``key`` and optionally
        ``payload``, ``run_at``, ``delay``, ``priority``, ``dedupe_key``.

        ``connection``: a SQLAlchemy ``Connection`` or ``Session`` (or, on PostgreSQL, a psycopg
        connection) on the app's database. The jobs are written in its current transaction, so
        they exist if and only if the caller commits it; ringwork never commits, rolls back or
        closes it. The workers are woken at the commit (docs/recipes.md).
        """
        built = self._build_all(jobs)
        return traced_enqueue(built, functools.partial(self._insert, connection=connection))

    def _insert(self, built: list[NewJob], connection: Any = None) -> list[int]:
        """:meth:`enqueue_many` once the jobs are built (and carry their trace context)."""
        if connection is not None:
            return self.store.enqueue_in(connection, built, self._wake)
        if not built:
            return []
        ids = self.store.enqueue(built)
        self._wake({j.partition for j in built})
        return ids

    def _build_all(self, jobs: Iterable[Mapping[str, Any] | NewJob]) -> list[NewJob]:
        """Validate a batch (all or nothing, before any database access)."""
        # One JSON encoder for the batch; each payload is encoded once, here, and the store
        # writes that text (a NewJob passed in is encoded by the store).
        build = functools.partial(self._build, payload_encoder())
        return [j if isinstance(j, NewJob) else build(**j) for j in jobs]

    # -- inspection and administration ---------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job's state, attempts, claimer, timestamps and last error; ``None`` if unknown."""
        return self.store.get_job(job_id)

    def get_attempts(self, job_id: int) -> list[AttemptRecord]:
        """The job's history: one record per attempt that ended (node, epoch, start, end,
        outcome, error), oldest first. An attempt still running is the job's own state."""
        return self.store.get_attempts(job_id)

    def wait(self, job_id: int, timeout: float | None = None) -> JobRecord:
        """Block until the job is finished (succeeded, dead or cancelled) and return it, its
        ``result`` included; :class:`~ringwork.errors.WaitTimeout` (a ``TimeoutError``) after
        ``timeout`` seconds (``None``: no limit). See :mod:`ringwork.store.wait` for how it
        waits (LISTEN on PostgreSQL for ``store_result`` jobs, reads with back-off otherwise)."""
        return self.store.wait(job_id, timeout)

    async def wait_async(self, job_id: int, timeout: float | None = None) -> JobRecord:
        """:meth:`wait` for ``async`` code: awaits without blocking the loop; cancellable."""
        return await self.store.wait_async(job_id, timeout)

    def cancel(self, job_id: int) -> str:
        """Cancel a queued job at once (``"cancelled"``), or ask a running one's worker to end
        it (``"requested"``: it ends ``cancelled`` within about a second, see
        :attr:`Job.cancel_requested`). A finished job raises :class:`InvalidJobState`."""
        return self.store.cancel(job_id)

    def cancel_task(self, task: str) -> tuple[int, int]:
        """Cancel every queued job of ``task`` and ask for the running ones to end:
        ``(cancelled, requested)`` counts."""
        return self.store.cancel_task(task)

    def retry(self, job_id: int) -> None:
        """Queue a dead or cancelled job again, with its attempts reset."""
        self.store.retry(job_id)

    def retry_all(self, state: str = "dead", task: str | None = None) -> tuple[int, int]:
        """Queue again every ``dead`` (or ``cancelled``) job, of ``task`` if given:
        ``(retried, skipped)`` -- skipped ones share a dedupe key with an unfinished job."""
        return self.store.retry_all(state, task)
