"""The App: task registry, enqueue API and partition callbacks -- what user code imports.

An ``App`` touches no database until it is used, so ``app.partition_for(key)`` works offline and
importing a module that defines an app is free. The store is created lazily, once per App.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ringwork.errors import ConfigurationError, PayloadError, UnknownTaskError
from ringwork.job import Job, JobRecord, NewJob, payload_encoder
from ringwork.partitioner import partition_for
from ringwork.periodic import Schedule, ScheduleError
from ringwork.settings import Settings
from ringwork.wakeup import WakeSender

#: The longest ``delay=`` accepted: far beyond any real use, well inside every database's
#: timestamp range (SQLite's date functions give NULL past year 9999).
MAX_DELAY = 100 * 365.25 * 86400

if TYPE_CHECKING:
    from ringwork.store import Store

Handler = Callable[[Job], Any]
PartitionCallback = Callable[[set[int]], Any]


@dataclass(frozen=True)
class Task:
    """A registered handler and the options every job of it carries."""

    name: str
    handler: Handler
    max_attempts: int = 5
    ordered: bool = False
    priority: int = 0
    #: Seconds an attempt may run before it is ended as timed out (``None``: no limit).
    timeout: float | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)


class App:
    """A ringwork application: tasks, their jobs' database, and the cluster they run in.

    ``settings`` is the app's configuration in code; ``database_url``, ``partitions`` and
    ``cluster``, when passed, replace those fields of it (left out, they change nothing: the
    defaults live in :class:`~ringwork.settings.Settings` alone, so an explicit ``settings=``
    is never overridden by a keyword's default). ``RINGWORK_*`` variables and CLI flags override
    both; the whole order is in :mod:`ringwork.settings`.
    """

    def __init__(
        self,
        database_url: str | None = None,
        partitions: int | None = None,
        cluster: str | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        base = settings or Settings()
        self._app_settings = base.replace(
            database_url=database_url, partitions=partitions, cluster=cluster
        )
        self._settings: Settings | None = None
        self.tasks: dict[str, Task] = {}
        #: Periodic tasks' schedules by task name; the leader enqueues their ticks.
        self.schedules: dict[str, Schedule] = {}
        self.assigned_callbacks: list[PartitionCallback] = []
        self.revoked_callbacks: list[PartitionCallback] = []
        self.lost_callbacks: list[PartitionCallback] = []
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._waker: WakeSender | None = None

    # -- configuration -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The effective settings: App arguments overlaid with ``RINGWORK_*`` variables."""
        if self._settings is None:
            self._settings = self._app_settings.with_environment()
        return self._settings

    def configure(self, **overrides: Any) -> None:
        """Apply CLI-level overrides (``None`` = not given). Only before the store is opened."""
        if self._store is not None:
            raise ConfigurationError("configure() must be called before the app is used")
        self._settings = self.settings.replace(**overrides)

    @property
    def store(self) -> Store:
        """The app's store, created on first use (this is when the database is first touched)."""
        with self._lock:
            if self._store is None:
                from ringwork.store import Store

                s = self.settings
                self._store = Store(
                    s.database_url, cluster=s.cluster, partitions=s.partitions, migrate=s.migrate
                )
            return self._store

    def close(self) -> None:
        """Release database connections and sockets held by this app."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            if self._waker is not None:
                self._waker.close()
                self._waker = None

    # -- tasks and callbacks -------------------------------------------------------------------

    def task(
        self,
        name: str | None = None,
        *,
        max_attempts: int = 5,
        ordered: bool = False,
        priority: int = 0,
        timeout: float | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        missed: str = "skip",
        key: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register a handler (plain or ``async def``) taking a :class:`Job`.

        ``ordered=True`` runs the task's jobs strictly one at a time per key, in enqueue order,
        across failovers. ``max_attempts`` counts every start, including one lost to a crash.
        ``timeout`` (seconds) ends an attempt that runs longer: an ``async def`` handler is
        cancelled, a plain one is recorded as timed out at the deadline (its thread runs on;
        whatever it returns later is discarded), and the attempt is retried or dead-lettered
        like any failure (``docs/guarantees.md``, "Timeouts and cancellation").

        ``cron`` makes it a periodic task, as :meth:`periodic` does (``timezone``, ``missed``
        and ``key`` belong to it and mean nothing without it).
        """
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        check_timeout(name, timeout)
        periodic = None
        if cron is not None:
            # Checked now, under a stand-in name if the handler will give it: a bad expression
            # is an error at the decorator, not at the first tick.
            periodic = Schedule(name or "?", cron, timezone, missed, key, priority,
                                max_attempts, ordered)

        def register(handler: Handler) -> Handler:
            task_name = name or handler.__name__
            if task_name in self.tasks:
                if periodic is not None or task_name in self.schedules:
                    raise ScheduleError(
                        f"periodic task {task_name!r} has the name of another task"
                    )
                raise ConfigurationError(f"task {task_name!r} is registered twice")
            self.tasks[task_name] = Task(task_name, handler, max_attempts, ordered, priority,
                                         None if timeout is None else float(timeout))
            if periodic is not None:
                self.schedules[task_name] = dataclasses.replace(periodic, task=task_name)
            return handler

        return register

    def periodic(
        self,
        name: str,
        *,
        cron: str,
        timezone: str = "UTC",
        missed: str = "skip",
        key: str | None = None,
        max_attempts: int = 5,
        ordered: bool = False,
        priority: int = 0,
        timeout: float | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register a handler the cluster's leader enqueues once per tick of ``cron`` (5 fields,
        or 6 with seconds first) in ``timezone`` (an IANA name).

        Each tick is one job for the whole cluster, also across a leader failover; its payload
        is ``{"tick": ISO time}`` and its key ``key`` (default: the task's name, so every tick
        lands on one partition); it retries like any job of the task. ``missed``: what to do
        with ticks missed while no node ran -- ``"skip"`` them, or run the ``"latest"`` once.
        A tick a minute late (a failover) is late, not missed (``docs/guarantees.md``).
        """
        if not isinstance(name, str) or not name:
            raise ScheduleError(f"a periodic task needs a name, not {name!r}")
        if not isinstance(cron, str):
            raise ScheduleError(f"periodic task {name!r}: cron must be a string, not {cron!r}")
        return self.task(name, max_attempts=max_attempts, ordered=ordered, priority=priority,
                         timeout=timeout, cron=cron, timezone=timezone, missed=missed, key=key)

    def on_assigned(self, callback: PartitionCallback) -> PartitionCallback:
        """Call ``callback(partitions)`` when this worker is given partitions."""
        self.assigned_callbacks.append(callback)
        return callback

    def on_revoked(self, callback: PartitionCallback) -> PartitionCallback:
        """Call ``callback(partitions)`` when partitions are handed off cleanly."""
        self.revoked_callbacks.append(callback)
        return callback

    def on_lost(self, callback: PartitionCallback) -> PartitionCallback:
        """Call ``callback(partitions)`` when partitions are taken without a clean hand-off."""
        self.lost_callbacks.append(callback)
        return callback

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UnknownTaskError(f"unknown task {name!r} (registered: {known})") from None

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
        )

    def enqueue(self, task: str, key: str, payload: Any = None, **options: Any) -> int:
        """Insert one job and return its id (the existing id if ``dedupe_key`` matches one)."""
        return self.enqueue_many([{"task": task, "key": key, "payload": payload, **options}])[0]

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any] | NewJob]) -> list[int]:
        """Insert many jobs in batched statements; ids come back in input order.

        Each item is a :class:`NewJob` or a mapping with ``task``, ``key`` and optionally
        ``payload``, ``run_at``, ``delay``, ``priority``, ``dedupe_key``.
        """
        # One JSON encoder for the batch; each payload is encoded once, here, and the store
        # writes that text (a NewJob passed in is encoded by the store).
        build = functools.partial(self._build, payload_encoder())
        built = [j if isinstance(j, NewJob) else build(**j) for j in jobs]
        if not built:
            return []
        ids = self.store.enqueue(built)
        self._wake({j.partition for j in built})
        return ids

    def _wake(self, partitions: set[int]) -> None:
        """Nudge the workers so an idle owner starts the new jobs now, not at its next poll.

        On PostgreSQL the enqueue statement already sent a NOTIFY in its transaction; a second
        wake-up by UDP would only make each worker claim twice (measured: W2 p50 3.7 -> 3.3 ms
        without it), so the nudge is for SQLite, which has no notifications.
        """
        store = self.store
        if store.dialect == "postgresql":
            return
        with self._lock:
            if self._waker is None:
                self._waker = WakeSender(store)
            waker = self._waker
        waker.nudge(partitions)

    # -- inspection and administration ---------------------------------------------------------

    def get_job(self, job_id: int) -> JobRecord | None:
        """The job's state, attempts, claimer, timestamps and last error; ``None`` if unknown."""
        return self.store.get_job(job_id)

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


def check_timeout(task: str | None, timeout: object) -> None:
    """A task's ``timeout=``: ``None`` or a finite number of seconds above zero, else a one-line
    error at definition (not at the first job)."""
    if timeout is None:
        return
    ok = (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
          and math.isfinite(timeout) and 0 < timeout <= MAX_DELAY)
    if not ok:
        label = f"task {task!r}: " if task else ""
        raise ConfigurationError(
            f"{label}timeout must be a number of seconds above 0 (up to 100 years), "
            f"not {timeout!r}"
        )
