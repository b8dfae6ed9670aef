"""The store on an asyncio loop (PostgreSQL): enqueue and read a job without blocking the loop.

``await app.enqueue_async(...)`` from an ``async def`` endpoint must not stall every other
request on the loop for a database round trip. On PostgreSQL it runs the very statements of
:mod:`.enqueue` (compiled once by SQLAlchemy's psycopg dialect, as the worker's
:class:`~ringwork.store.claim.AsyncClaimer` does) on psycopg's own asyncio connections. SQLite's
driver has no asyncio side: the App runs its sync calls in a thread instead, so this module is
PostgreSQL's alone.

Three entry points:

* :class:`AsyncJobs` -- the app's own connections, a small pool of idle ones in autocommit: a
  few jobs are one statement, its own transaction, one round trip (as ``Store.enqueue``);
  a bigger batch runs in a transaction of its own.
* :func:`enqueue_psycopg_async` -- on a caller's raw ``psycopg.AsyncConnection``, in its
  transaction (checked like :mod:`.external`'s connections).

A caller's SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` needs nothing here: its
``run_sync`` hands :mod:`.external` the sync ``Connection`` or ``Session`` inside it, whose
statements SQLAlchemy then runs on the asyncio driver without blocking the loop.

The pool is not bound to a loop: a connection is handed to one task at a time (psycopg's
internal lock is then never contended, so it never binds to a loop), and the list of idle ones
is guarded by a thread lock held for no await. A connection that saw an error, or a
cancellation mid-statement, is closed, never reused.

Threads: any thread running an event loop; :meth:`AsyncJobs.close` from any thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from ringwork.errors import ConfigurationError
from ringwork.job import JobRecord, NewJob
from ringwork.store import enqueue
from ringwork.store.engine import translated
from ringwork.store.external import check_same_database, compiled
from ringwork.store.schema import UTCDateTime, jobs

if TYPE_CHECKING:
    import psycopg

#: Idle connections kept for reuse; more concurrent calls connect more, closed when given back.
MAX_IDLE = 4

_GET_JOB = sa.select(jobs).where(
    jobs.c.id == sa.bindparam("id"), jobs.c.cluster == sa.bindparam("cluster")
)
_TIMESTAMPS = tuple(c.name for c in jobs.columns if isinstance(c.type, UTCDateTime))


class AsyncJobs:
    """Enqueue and ``get_job`` on an event loop, on psycopg asyncio connections of our own."""

    def __init__(
        self, dialect: Dialect, connect_kwargs: Mapping[str, Any], cluster: str, channel: str
    ) -> None:
        self._dialect = dialect
        self._connect_kwargs = dict(connect_kwargs)
        self._cluster = cluster
        self._channel = channel
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    async def enqueue(self, new: Sequence[NewJob]) -> list[int]:
        """Insert ``new``; ids in input order (``Store.enqueue``'s contract)."""
        if not new:
            return []
        steps = enqueue.enqueue_steps("postgresql", self._cluster, self._channel, new)
        several = enqueue.statement_count("postgresql", new) > 1
        async with self._connection("enqueue") as conn:
            if not several:
                return await run_psycopg_async(conn, steps, self._dialect)
            async with conn.transaction():
                return await run_psycopg_async(conn, steps, self._dialect)

    async def get_job(self, job_id: int) -> JobRecord | None:
        """The job, as ``Store.get_job`` reads it; ``None`` if unknown in this cluster."""
        from psycopg.rows import dict_row

        async with self._connection("get_job") as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                compiled(_GET_JOB, self._dialect), {"id": job_id, "cluster": self._cluster}
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        for name in _TIMESTAMPS:
            if row[name] is not None:
                row[name] = enqueue.as_utc(row[name])
        return JobRecord(**row)

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> Any:
        conn = None
        healthy = False
        try:
            with translated(what):
                conn = await self._take()
                yield conn
            healthy = True
        finally:
            if conn is not None:
                self._give_back(conn, healthy)

    async def _take(self) -> psycopg.AsyncConnection[Any]:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        import psycopg

        return await psycopg.AsyncConnection.connect(**self._connect_kwargs, autocommit=True)

    def _give_back(self, conn: psycopg.AsyncConnection[Any], healthy: bool) -> None:
        from psycopg.pq import TransactionStatus

        idle = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if healthy and idle and not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        close_now(conn)

    def close(self) -> None:
        """Close the idle connections (from any thread; no loop needed)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            close_now(conn)


def close_now(conn: psycopg.AsyncConnection[Any]) -> None:
    """Close an asyncio connection without a loop.

    ``AsyncConnection.close()`` awaits nothing (it marks the connection closed and frees the
    libpq handle), so its coroutine finishes at the first step; should a psycopg release ever
    make it wait, the libpq handle is freed directly.
    """
    if conn.closed:
        return
    closing = conn.close()
    try:
        closing.send(None)
    except StopIteration:
        return
    closing.close()
    conn.pgconn.finish()


async def enqueue_psycopg_async(
    raw: psycopg.AsyncConnection[Any],
    store_url: str,
    cluster: str,
    channel: str,
    new: Sequence[NewJob],
    dialect: Dialect,
) -> list[int]:
    """Insert ``new`` in the transaction of the caller's psycopg asyncio connection ``raw``
    (never committed, rolled back or closed here); the NOTIFY is delivered at its commit."""
    if raw.closed:
        raise ConfigurationError("connection= is closed")
    check_same_database(store_url, "postgresql", None, raw.info)
    # No COPY, as for a sync psycopg connection (external._via_psycopg): the caller's loaders.
    steps = enqueue.enqueue_steps("postgresql", cluster, channel, new, copy=False)
    with translated("enqueue in the caller's transaction"):
        # As for a sync psycopg connection: a transaction of its own in autocommit (for more
        # than one statement), else the caller's, which psycopg begins at our first statement.
        if raw.autocommit and enqueue.statement_count("postgresql", new) > 1:
            async with raw.transaction():
                return await run_psycopg_async(raw, steps, dialect)
        return await run_psycopg_async(raw, steps, dialect)


async def run_psycopg_async(
    conn: psycopg.AsyncConnection[Any], steps: enqueue.Steps, dialect: Dialect
) -> list[int]:
    """Carry out ``steps`` on a psycopg asyncio connection, in its current transaction."""
    from psycopg.rows import dict_row

    answer: Any = None
    cursor = conn.cursor(row_factory=dict_row)
    try:
        while True:
            step = steps.send(answer)
            if isinstance(step, enqueue.Query):
                await cursor.execute(compiled(step.statement, dialect), step.params)
                answer = await cursor.fetchall()
            else:
                async with cursor.copy(step.sql) as out:
                    await out.write(step.data)
                answer = None
    except StopIteration as done:
        ids: list[int] = done.value
        return ids
    finally:
        await cursor.close()
