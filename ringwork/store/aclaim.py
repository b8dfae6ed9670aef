"""The claim on the worker's event loop (PostgreSQL): no thread hand-off, one round trip.

An idle worker woken by a NOTIFY claims from the partitions the notification names, and that
claim is on the enqueue-to-start path. Through the store's thread pool it costs two thread
hand-offs (loop -> database thread -> loop, 0.2-0.5 ms each on a busy machine) and SQLAlchemy's
per-statement work. :class:`AsyncClaimer` runs the very same statement (``queries.claim_pg``,
compiled once per partition count by SQLAlchemy's psycopg dialect) on its own psycopg
``AsyncConnection`` in autocommit: the statement is its own transaction, and its reply -- the
claimed jobs -- arrives only after the commit is flushed, so a handler never starts before its
claim is durable. Fencing is the statement's, unchanged (see ``queries.py``).

Rounds that also write completions stay on the thread pool (``Store.exchange``): completing and
claiming in one transaction is what lets an ordered key's next job go in the same round.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Dialect

from ringwork.job import Job
from ringwork.store import queries
from ringwork.store.engine import translated

if TYPE_CHECKING:
    import psycopg


@functools.lru_cache(maxsize=256)
def _compiled(dialect: Dialect, owned: int) -> str:
    """``queries.claim_pg(owned)`` as psycopg SQL (``%(name)s`` placeholders)."""
    return str(queries.claim_pg(owned).compile(dialect=dialect))


class AsyncClaimer:
    """One PostgreSQL connection for claims, used from one event loop, one claim at a time.

    It connects on first use and, after any error, drops the connection and reconnects on the
    next claim; errors come out as :class:`ringwork.errors.DatabaseError` like the store's.
    """

    def __init__(
        self, dialect: Dialect, connect_kwargs: Mapping[str, Any], cluster: str
    ) -> None:
        self._dialect = dialect
        self._connect_kwargs = dict(connect_kwargs)
        self._cluster = cluster
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def claim(self, node_id: str, owned: Mapping[int, int], limit: int) -> list[Job]:
        """Claim up to ``limit`` runnable jobs of partitions ``node_id`` owns at those epochs."""
        if limit <= 0 or not owned:
            return []
        parts = sorted(owned)
        params: dict[str, Any] = {"parts": parts, "epochs": [owned[p] for p in parts],
                                  "cluster": self._cluster, "node": node_id, "limit": limit}
        sql = _compiled(self._dialect, len(parts))
        try:
            with translated("claim"):
                conn = self._conn or await self._connect()
                cursor = await conn.execute(sql, params)
                rows = await cursor.fetchall()
        except BaseException:
            # Errors and cancellation alike leave the connection in an unknown state.
            await self.close()
            raise
        rows.sort(key=lambda r: (-r[8], r[0]))
        return [
            Job(id=r[0], task=r[1], key=r[2], partition=r[3], payload=r[4], attempt=r[5],
                max_attempts=r[6], token=r[7])
            for r in rows
        ]

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        self._conn = await psycopg.AsyncConnection.connect(**self._connect_kwargs, autocommit=True)
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):  # a broken connection: nothing left to do
                await conn.close()
