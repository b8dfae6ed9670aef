"""The PostgreSQL claim on the worker's event loop, without a thread hand-off.

Threads: the worker's event loop thread, and nowhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Dialect

from ringwork.job import Job
from ringwork.store.claim import claimed_jobs, fills_a_room
from ringwork.store.claim_pg import CLAIM_PG, CLAIM_PG_CAPPED, claim_params_pg
from ringwork.store.engine import translated

if TYPE_CHECKING:
    import psycopg


class AsyncClaimer:
    """:data:`CLAIM_PG` on the worker's event loop: no thread hand-off, one round trip.

    An idle worker woken by a NOTIFY claims from the partitions it names, and that claim is on
    the enqueue-to-start path. Through the store's thread pool it costs two thread hand-offs
    (loop -> database thread -> loop, 0.2-0.5 ms each on a busy machine) and SQLAlchemy's
    per-statement work. This runs the very same statement, compiled once by SQLAlchemy's
    psycopg dialect, on its own ``AsyncConnection`` in autocommit: the statement is its own
    transaction and its reply arrives only after the commit is flushed, so a handler never
    starts before its claim is durable. Rounds that also complete jobs stay on the thread pool
    (``Store.exchange``): completing and claiming in one transaction is what lets an ordered
    key's next job go in the same round.

    One connection, used from one event loop, one claim at a time. It connects on first use
    and, after any error, drops the connection and reconnects on the next claim; errors come out
    as :class:`ringwork.errors.DatabaseError` like the store's.
    """

    def __init__(
        self, dialect: Dialect, connect_kwargs: Mapping[str, Any], cluster: str
    ) -> None:
        self._sql = str(CLAIM_PG.compile(dialect=dialect))  # %(name)s placeholders
        self._sql_capped = str(CLAIM_PG_CAPPED.compile(dialect=dialect))
        self._connect_kwargs = dict(connect_kwargs)
        self._cluster = cluster
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None

    async def claim(self, node_id: str, owned: Mapping[int, int], limit: int,
                    rooms: Mapping[str, int] | None = None) -> list[Job]:
        """Claim up to ``limit`` runnable jobs of partitions ``node_id`` owns at those epochs
        (``rooms``: per-task limits, as for :func:`.claim.claim`)."""
        if limit <= 0 or not owned:
            return []
        if not rooms:
            return await self._claim_once(node_id, owned, limit, None)
        # capped_rounds' loop, awaited: each statement is its own transaction (autocommit),
        # and each is correct alone (it starts no more than the rooms left).
        left = dict(rooms)
        claimed: list[Job] = []
        while len(claimed) < limit:
            got = await self._claim_once(node_id, owned, limit - len(claimed), left)
            claimed.extend(got)
            if not got or not fills_a_room(left, got):
                break
        return claimed

    async def _claim_once(self, node_id: str, owned: Mapping[int, int], limit: int,
                          rooms: Mapping[str, int] | None) -> list[Job]:
        params = claim_params_pg(self._cluster, node_id, owned, limit, rooms)
        try:
            with translated("claim"):
                conn = self._conn or await self._connect()
                cursor = await conn.execute(
                    self._sql if rooms is None else self._sql_capped, params)
                rows = await cursor.fetchall()
        except BaseException:
            # Errors and cancellation alike leave the connection in an unknown state.
            await self.close()
            raise
        return claimed_jobs(rows)

    async def _connect(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        self._conn = await psycopg.AsyncConnection.connect(
            **self._connect_kwargs, autocommit=True, row_factory=dict_row
        )
        return self._conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):  # a broken connection: nothing left to do
                await conn.close()
