"""Transactional handlers: the handler's writes and its job's completion commit as one.

A task declared ``transactional=True`` gets ``handler(job, conn)``: ``conn`` is a connection in
an open transaction on the app's database (an ``AsyncConnection`` for an ``async def`` handler).
When the handler returns, the completion -- fenced like the pump's by the job's claim
(``claimed_by``, token, ``running``) and also by the attempt number (a plain handler that ran on
past its timeout must not commit under its retry's claim, which carries the same token when the
same worker claimed it) -- runs in that transaction, and one commit makes both durable. If the
completion is refused (the job was re-queued: this worker was declared dead, or its attempt was
already ended by a timeout, a cancel or the shutdown grace), everything the handler wrote is
rolled back with it. A handler that raises rolls back too; its failure is then recorded by the
pump in a transaction of its own, like any failure. On PostgreSQL the transaction may sit idle
for the task's timeout plus 5 s (or 60 s) while the handler runs, and for 2 s only once the
completion is written (:data:`~ringwork.store.handlers.COMPLETED_IDLE_MS`).

So the handler's database effects happen exactly once per job, whatever dies when: before the
commit nothing is visible; after it the job is ``succeeded`` and is never claimed again. A
commit whose reply is lost (the connection died during ``COMMIT``) is reported as a failure; the
pump's failure write is fenced on ``running``, so it is refused if the commit did land. Effects
outside the database (an e-mail, an HTTP call) are still at-least-once.

Threads: :meth:`Transactions.run_sync` on a handler thread; :meth:`Transactions.run_async` on the
worker's event loop; the engines are created lazily under a lock, by whichever comes first.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ringwork.job import Job, encode_result
from ringwork.store import Store
from ringwork.store.claim import attempt_guard, completion
from ringwork.store.handlers import (
    completed_idle_limit,
    handler_async_engine,
    handler_engine,
    idle_limit,
)
from ringwork.worker.ledger import FENCED, WRITTEN, Written

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["FENCED", "WRITTEN", "Transactions", "Written"]


class Transactions:
    """Connections for the transactional handlers of one worker, and the run around them."""

    def __init__(self, store: Store, node_id: str, size: int) -> None:
        self.dialect = store.dialect
        self.cluster = store.cluster
        self.node_id = node_id
        self._store = store  # its URL, read at the first run (the store is open by then)
        self._size = size
        self._lock = threading.Lock()
        self._sync: Engine | None = None
        self._async: AsyncEngine | None = None
        #: PostgreSQL: once the completion holds the job row's lock, 2 s of idling at most
        #: (a frozen process must not hold up the re-queue, and the cluster, any longer).
        self._completed_limit = completed_idle_limit(self.dialect)

    def run_sync(self, handler: Callable[[Job, Any], Any], job: Job,
                 timeout: float | None, store_result: bool = False) -> Written:
        with self._lock:
            engine = self._sync = self._sync or handler_engine(self._store.engine.url,
                                                               self._size)
        with engine.connect() as conn:
            tx = conn.begin()
            try:
                limit = idle_limit(self.dialect, timeout)
                if limit is not None:
                    conn.exec_driver_sql(*limit)
                value = handler(job, conn)
                if self._completed_limit is not None:
                    conn.exec_driver_sql(*self._completed_limit)
                written = bool(conn.execute(*self._guard(job)).scalars().all())
                if written:
                    for stmt, params in self._completion(job, value, store_result):
                        rows = conn.execute(stmt, params)
                    written = bool(rows.scalars().all())
            except BaseException:
                tx.rollback()
                raise
            if not written:
                tx.rollback()
                return FENCED
            tx.commit()
        return WRITTEN

    async def run_async(self, handler: Callable[[Job, Any], Awaitable[Any]], job: Job,
                        timeout: float | None, store_result: bool = False) -> Written:
        with self._lock:
            engine = self._async = self._async or handler_async_engine(
                self._store.engine.url, self._size)
        async with engine.connect() as conn:
            tx = await conn.begin()
            try:
                limit = idle_limit(self.dialect, timeout)
                if limit is not None:
                    await conn.exec_driver_sql(*limit)
                value = await handler(job, conn)
                if self._completed_limit is not None:
                    await conn.exec_driver_sql(*self._completed_limit)
                written = bool((await conn.execute(*self._guard(job))).scalars().all())
                if written:
                    for stmt, params in self._completion(job, value, store_result):
                        rows = await conn.execute(stmt, params)
                    written = bool(rows.scalars().all())
            except BaseException:
                await tx.rollback()
                raise
            if not written:
                await tx.rollback()
                return FENCED
            await tx.commit()
        return WRITTEN

    def _guard(self, job: Job) -> tuple[Any, dict[str, Any]]:
        return attempt_guard(self.dialect, self.cluster, self.node_id, job.id, job.token,
                             job.attempt)

    def _completion(self, job: Job, value: object,
                    store_result: bool) -> list[tuple[Any, dict[str, Any]]]:
        """The completion's statements; with the handler's result for a ``store_result`` task
        (a value that cannot be stored raises ResultError: the transaction rolls back)."""
        text = encode_result(job.task, value) if store_result else None
        results = None if text is None else {job.id: text}
        return completion(self.dialect, self.cluster, self.node_id, [(job.id, job.token)],
                          results, self._store.results_channel)

    async def close(self) -> None:
        if self._async is not None:
            await self._async.dispose()
        if self._sync is not None:
            self._sync.dispose()
