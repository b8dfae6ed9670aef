"""Tasks: the registry of handlers, their options and periodic schedules, and the callbacks.

:class:`Tasks` is the part of :class:`~ringwork.app.App` a module defining handlers talks to
(``@app.task``, ``@app.periodic``, ``@app.on_assigned``...). It holds no connection and reads no
setting: registering a task is free and checked at once, so a bad definition is a one-line error
at import rather than at the first job.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from ringwork.errors import ConfigurationError, UnknownTaskError
from ringwork.handles import Enqueuer, TaskHandle, typed_handler
from ringwork.job import Job
from ringwork.payloads import PayloadType, payload_type_of
from ringwork.periodic import Schedule, ScheduleError
from ringwork.retry import DEFAULT as DEFAULT_RETRY
from ringwork.retry import Retry

#: The longest ``delay=`` or ``timeout=`` accepted: far beyond any real use, well inside every
#: database's timestamp range (SQLite's date functions give NULL past year 9999).
MAX_DELAY = 100 * 365.25 * 86400

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
    #: ``handler(job, conn)`` in a transaction that also writes the job's completion.
    transactional: bool = False
    #: The backoff and which exceptions retry (:class:`ringwork.Retry`).
    retry: Retry = DEFAULT_RETRY
    #: At most this many of the task's jobs run at once in one worker (``None``: no limit
    #: beyond the worker's ``concurrency``).
    concurrency: int | None = None
    #: Ordered tasks only: a dead job keeps its key blocked until it is retried or cancelled.
    block_key_on_dead: bool = False
    #: Keep the handler's JSON return value with the job (``JobRecord.result``).
    store_result: bool = False
    #: A typed task's payload class, checked at enqueue and rebuilt for the handler.
    payload_type: PayloadType | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)


class Tasks:
    """Registered tasks by name, periodic schedules by task name, partition callbacks."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        #: Periodic tasks' schedules by task name; the leader enqueues their ticks.
        self.schedules: dict[str, Schedule] = {}
        self.assigned_callbacks: list[PartitionCallback] = []
        self.revoked_callbacks: list[PartitionCallback] = []
        self.lost_callbacks: list[PartitionCallback] = []

    def task(
        self,
        name: str | None = None,
        *,
        max_attempts: int = 5,
        ordered: bool = False,
        priority: int = 0,
        timeout: float | None = None,
        transactional: bool = False,
        retry: Retry | None = None,
        concurrency: int | None = None,
        block_key_on_dead: bool = False,
        cron: str | None = None,
        timezone: str = "UTC",
        missed: str = "skip",
        key: str | None = None,
        store_result: bool = False,
        payload_type: type | None = None,
    ) -> Callable[[Handler], TaskHandle[Any]]:
        """Register a handler (plain or ``async def``) taking a :class:`Job`; returns a
        :class:`~ringwork.handles.TaskHandle`, which calls the handler and can also enqueue
        (``resize.enqueue(key, payload)``).

        ``ordered=True`` runs the task's jobs strictly one at a time per key, in enqueue order,
        across failovers. ``max_attempts`` counts every start, including one lost to a crash.
        ``timeout`` (seconds) ends an attempt that runs longer: an ``async def`` handler is
        cancelled, a plain one is recorded as timed out at the deadline (its thread runs on;
        whatever it returns later is discarded), and the attempt is retried or dead-lettered
        like any failure (``docs/guarantees.md``, "Timeouts and cancellation").

        ``transactional=True``: the handler is ``handler(job, conn)`` and runs in a transaction
        on the app's database (``conn``: a SQLAlchemy ``Connection``, or an ``AsyncConnection``
        for an ``async def`` handler), in which the worker also writes the job's completion,
        fenced by its claim, before one commit: the handler's writes happen exactly once per
        job, or not at all (``docs/guarantees.md``, "Transactional handlers"). Do not commit or
        roll back ``conn`` yourself.

        ``retry`` (a :class:`ringwork.Retry`): the backoff between attempts and which exceptions
        retry or dead-letter at once; without it the worker's ``retry_base``/``retry_max`` and
        every exception retries. ``concurrency``: at most this many of the task's jobs run at
        once in one worker; the worker claims no job of the task beyond it, so a job never waits
        in a worker's memory. ``block_key_on_dead=True`` (with ``ordered=True`` only): a job that
        ends ``dead`` keeps its key blocked -- the key's later jobs wait -- until it is retried
        or cancelled (``docs/guarantees.md``, "Ordering").

        ``store_result=True`` keeps what the handler returns -- JSON-serialisable, at most
        1 MB as JSON (:data:`ringwork.job.MAX_RESULT_BYTES`) -- with the job, written by its
        completion: ``app.get_job(id).result``, ``app.wait(id).result``. A value that cannot be
        stored fails the attempt with a :class:`~ringwork.errors.ResultError` (retried like any
        failure); ``None`` stores nothing. Tasks without it pay nothing for results.

        A typed payload: a handler declared ``def resize(job: Job[Resize])``, ``Resize`` a
        dataclass or a pydantic model (or ``payload_type=Resize``), receives ``job.payload`` as
        a ``Resize``. Enqueueing takes an instance or a mapping that fits and refuses any other
        payload with a one-line :class:`~ringwork.errors.PayloadError`; the row stores JSON
        (:mod:`ringwork.payloads`).

        ``cron`` makes it a periodic task, as :meth:`periodic` does (``timezone``, ``missed``
        and ``key`` belong to it and mean nothing without it).
        """
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        check_timeout(name, timeout)
        if not isinstance(transactional, bool):
            raise ConfigurationError(f"transactional must be True or False, not {transactional!r}")
        check_policy(name, retry, concurrency, block_key_on_dead, ordered)
        if not isinstance(store_result, bool):
            raise ConfigurationError(f"store_result must be True or False, not {store_result!r}")
        periodic = None
        if cron is not None:
            # Checked now, under a stand-in name if the handler will give it: a bad expression
            # is an error at the decorator, not at the first tick.
            periodic = Schedule(name or "?", cron, timezone, missed, key, priority,
                                max_attempts, ordered, block_key_on_dead)

        def register(handler: Handler) -> TaskHandle[Any]:
            task_name = name or handler.__name__
            if task_name in self.tasks:
                if periodic is not None or task_name in self.schedules:
                    raise ScheduleError(
                        f"periodic task {task_name!r} has the name of another task"
                    )
                raise ConfigurationError(f"task {task_name!r} is registered twice")
            if transactional:
                check_transactional(task_name, handler)
            cls = payload_type or payload_type_of(task_name, handler)
            typed = None if cls is None else PayloadType(task_name, cls)
            run = handler if typed is None else typed_handler(handler, typed)
            self.tasks[task_name] = Task(task_name, run, max_attempts, ordered, priority,
                                         None if timeout is None else float(timeout),
                                         transactional=transactional,
                                         retry=retry or DEFAULT_RETRY, concurrency=concurrency,
                                         block_key_on_dead=block_key_on_dead,
                                         store_result=store_result, payload_type=typed)
            if periodic is not None:
                self.schedules[task_name] = dataclasses.replace(periodic, task=task_name)
            return TaskHandle(cast(Enqueuer, self), task_name, handler)

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
        transactional: bool = False,
        retry: Retry | None = None,
        concurrency: int | None = None,
        block_key_on_dead: bool = False,
        store_result: bool = False,
    ) -> Callable[[Handler], TaskHandle[Any]]:
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
                         timeout=timeout, transactional=transactional, retry=retry,
                         concurrency=concurrency, block_key_on_dead=block_key_on_dead, cron=cron,
                         timezone=timezone, missed=missed, key=key, store_result=store_result)

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


def check_transactional(task: str, handler: Callable[..., Any]) -> None:
    """A transactional handler takes ``(job, conn)``: a one-line error at definition for one
    that cannot (it would fail every attempt at the first job)."""
    try:
        inspect.signature(handler).bind(None, None)
    except TypeError:
        raise ConfigurationError(
            f"task {task!r} is transactional: its handler must take (job, conn)"
        ) from None
    except ValueError:  # no signature to read (a builtin): let it be tried
        return


#: The largest per-task ``concurrency=`` accepted (far beyond any worker's thread count).
MAX_TASK_CONCURRENCY = 100_000


def check_policy(task: str | None, retry: object, concurrency: object,
                 block_key_on_dead: object, ordered: object) -> None:
    """A task's ``retry=``, ``concurrency=`` and ``block_key_on_dead=``, each a one-line error
    at definition."""
    label = f"task {task!r}: " if task else ""
    if retry is not None and not isinstance(retry, Retry):
        raise ConfigurationError(f"{label}retry must be a ringwork.Retry(...), not {retry!r}")
    if concurrency is not None and not (
            isinstance(concurrency, int) and not isinstance(concurrency, bool)
            and 1 <= concurrency <= MAX_TASK_CONCURRENCY):
        raise ConfigurationError(
            f"{label}concurrency must be a whole number from 1 to {MAX_TASK_CONCURRENCY}, "
            f"not {concurrency!r}")
    if not isinstance(block_key_on_dead, bool):
        raise ConfigurationError(
            f"{label}block_key_on_dead must be True or False, not {block_key_on_dead!r}")
    if block_key_on_dead and not ordered:
        raise ConfigurationError(f"{label}block_key_on_dead=True needs ordered=True")
