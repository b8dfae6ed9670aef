"""Waiting for a job to finish: ``app.wait`` and ``app.wait_async``.

The job row is the truth: a waiter reads it (a primary-key probe) until it is finished or the
time is up, with a back-off from :data:`FIRST_PAUSE` doubling to :data:`MAX_PAUSE`, so a
long wait costs two reads a second and a short job is seen within milliseconds.

On PostgreSQL the sync waiter also LISTENs on the cluster's results channel
(:func:`~ringwork.store.listen.results_channel_for`), which the completion of ``store_result``
jobs notifies with their ids (``claim_pg.COMPLETE_RESULTS_PG``): such a job is seen the moment its
completion commits. Plain completions do not notify -- NOTIFY takes a database-wide lock at
commit, a cost the hot path does not pay for a waiter that may not exist -- so for those the
back-off is what finds the end. The async waiter listens the same way, on psycopg's asyncio
connection, so its pauses never hold a thread.

Threads: :func:`wait` on the caller's thread (its own LISTEN connection, closed on return);
:func:`wait_async` on the caller's event loop (its own asyncio LISTEN connection), each read
of the row in the default executor.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

from ringwork.errors import JobNotFound, WaitTimeout
from ringwork.job import JobRecord
from ringwork.store.engine import pg_connect_kwargs, translated
from ringwork.store.listen import WAKE_ALL

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import Engine


class Store(Protocol):
    """What a waiter needs of :class:`~ringwork.store.Store`."""

    cluster: str
    results_channel: str

    @property
    def dialect(self) -> str: ...

    @property
    def engine(self) -> Engine: ...

    def get_job(self, job_id: int) -> JobRecord | None: ...

#: The first pause between two reads of the job, and the longest (the pause doubles).
FIRST_PAUSE = 0.01
MAX_PAUSE = 0.5


class _Pauses:
    """How long to wait before the next read of the job: :data:`FIRST_PAUSE` doubling to
    :data:`MAX_PAUSE`, cut at the deadline; :class:`WaitTimeout` once it has passed. Shared by
    the sync and the async waiter, which differ only in how they wait."""

    def __init__(self, job_id: int, timeout: float | None) -> None:
        if timeout is not None and not timeout >= 0:  # also NaN
            raise ValueError(
                f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
        self.job_id, self.timeout = job_id, timeout
        self.deadline = math.inf if timeout is None else time.monotonic() + timeout
        self.pause = FIRST_PAUSE

    def next(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"job {self.job_id} did not finish within {self.timeout:g} s")
        pause, self.pause = min(self.pause, left), min(self.pause * 2, MAX_PAUSE)
        return pause


def _finished(store: Store, job_id: int) -> JobRecord | None:
    record = store.get_job(job_id)
    if record is None:
        raise JobNotFound(f"no job {job_id} in cluster {store.cluster!r}")
    return record if record.finished else None


def wait(store: Store, job_id: int, timeout: float | None) -> JobRecord:
    """The job once finished (succeeded, dead or cancelled); :class:`WaitTimeout` after
    ``timeout`` seconds (``None``: no limit), :class:`JobNotFound` if there is no such job."""
    pauses = _Pauses(job_id, timeout)
    listener = _listen(store) if store.dialect == "postgresql" else None
    try:
        while (record := _finished(store, job_id)) is None:
            pause = pauses.next()
            if listener is None:
                time.sleep(pause)
            else:
                _notified(listener, job_id, pause)
        return record
    finally:
        if listener is not None:
            listener.close()


async def wait_async(store: Store, job_id: int, timeout: float | None) -> JobRecord:
    """:func:`wait` for an event loop: the same result and errors; cancellable."""
    pauses = _Pauses(job_id, timeout)
    loop = asyncio.get_running_loop()
    listener = await _listen_async(store) if store.dialect == "postgresql" else None
    try:
        while (record := await loop.run_in_executor(None, _finished, store, job_id)) is None:
            pause = pauses.next()
            if listener is None:
                await asyncio.sleep(pause)
            else:
                await _notified_async(listener, job_id, pause)
        return record
    finally:
        if listener is not None:
            await listener.close()


def _listen_statement(store: Store) -> Any:
    from psycopg import sql

    return sql.SQL("LISTEN {}").format(sql.Identifier(store.results_channel))


def _listen(store: Store) -> psycopg.Connection:
    import psycopg

    engine = store.engine
    with translated("LISTEN connection"):
        conn = psycopg.connect(**pg_connect_kwargs(engine.dialect, engine.url), autocommit=True)
        try:
            conn.execute(_listen_statement(store))
        except BaseException:
            conn.close()
            raise
    return conn


async def _listen_async(store: Store) -> psycopg.AsyncConnection:
    import psycopg

    engine = store.engine
    with translated("LISTEN connection"):
        conn = await psycopg.AsyncConnection.connect(
            **pg_connect_kwargs(engine.dialect, engine.url), autocommit=True)
        try:
            await conn.execute(_listen_statement(store))
        except BaseException:
            await conn.close()
            raise
    return conn


def _names(payload: str, job_id: int) -> bool:
    """Whether a results notification names ``job_id`` (or every job)."""
    return payload == WAKE_ALL or str(job_id) in payload.split(",")


def _notified(conn: psycopg.Connection, job_id: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for a notification naming ``job_id`` (or every job)."""
    deadline = time.monotonic() + timeout
    with translated("waiting for a job"):
        while (left := deadline - time.monotonic()) > 0:
            for note in conn.notifies(timeout=left, stop_after=1):
                if _names(note.payload, job_id):
                    return True
    return False


async def _notified_async(conn: psycopg.AsyncConnection, job_id: int, timeout: float) -> bool:
    """:func:`_notified` on the event loop."""
    deadline = time.monotonic() + timeout
    with translated("waiting for a job"):
        while (left := deadline - time.monotonic()) > 0:
            async for note in conn.notifies(timeout=left, stop_after=1):
                if _names(note.payload, job_id):
                    return True
    return False
