"""The claim on the worker's event loop (PostgreSQL): no thread hand-off, one round trip.

An idle worker woken by a NOTIFY claims from the partitions the notification names, and that
claim is on the enqueue-to-start path. Through the store's thread pool it costs two thread
hand-offs (loop -> database thread -> loop, 0.2-0.5 ms each on a busy machine) and SQLAlchemy's
per-statement work. :class:`AsyncClaimer` runs the very same statement (``queries.CLAIM_PG``,
compiled once by SQLAlchemy's psycopg dialect) on its own psycopg
``AsyncConnection`` in autocommit: the statement is its own transaction, and its reply -- the
claimed jobs -- arrives only after the commit is flushed, so a handler never starts before its
claim is durable. Fencing is the statement's, unchanged (see ``queries.py``).

Rounds that also write completions stay on the thread pool (``Store.exchange``): completing and
claiming in one transaction is what lets an ordered key's next job go in the same round.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Dialect

from ringwork.job import Job
from ringwork.store import jobs, queries
from ringwork.store.engine import translated

if TYPE_CHECKING:
    import psycopg


class AsyncClaimer:
    """One PostgreSQL connection for claims, used from one event loop, one claim at a time.

    It connects on first use and, after any error, drops the connection and reconnects on the
    next claim; errors come out as :class:`ringwork.errors.DatabaseError` like the store's.
    """

    def __init__(
        self, dialect: Dialect, connect_kwargs: Mapping[str, Any], cluster: str
    ) -> None:
        self._sql = str(queries.CLAIM_PG.compile(dialect=dialect))  # %(name)s placeholders
        self._connect_kwargs = dict(connect_kwargs)
        self._cluster = cluster
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def claim(self, node_id: str, owned: Mapping[int, int], limit: int) -> list[Job]:
        """Claim up to ``limit`` runnable jobs of partitions ``node_id`` owns at those epochs."""
        if limit <= 0 or not owned:
            return []
        params = jobs.claim_params_pg(self._cluster, node_id, owned, limit)
        try:
            with translated("claim"):
                conn = self._conn or await self._connect()
                cursor = await conn.execute(self._sql, params)
                rows = await cursor.fetchall()
        except BaseException:
            # Errors and cancellation alike leave the connection in an unknown state.
            await self.close()
            raise
        return jobs.claimed_jobs(rows)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        self._conn = await psycopg.AsyncConnection.connect(**self._connect_kwargs, autocommit=True)
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):  # a broken connection: nothing left to do
                await conn.close()
