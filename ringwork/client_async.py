"""The job client for ``async def`` code: enqueue and read jobs without blocking the loop.

A blocking ``app.enqueue`` in an ``async def`` endpoint stalls every request the loop serves
for a database round trip (and for SQLite's write lock, up to its busy timeout). These methods
validate on the loop -- that is CPU work, and a bad job fails before any await -- then:

* PostgreSQL: run the same statements on psycopg's asyncio connections
  (:class:`ringwork.store.aio.AsyncJobs`);
* SQLite: run the sync call in a thread (``asyncio.to_thread``), since its driver has no
  asyncio side; the write lock is then waited for off the loop.

``connection=``: a SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` (its ``run_sync`` hands
ringwork the sync connection or session underneath, so its statements and the after-commit
wake-up work exactly as for :meth:`JobClient.enqueue_many`), or on PostgreSQL a raw
``psycopg.AsyncConnection``. The first use opens the store in a thread, as opening may migrate.

Threads: the caller's event loop; the SQLite calls and the first opening on the loop's default
executor.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ringwork.errors import ConfigurationError
from ringwork.job import JobRecord, NewJob
from ringwork.tracing import traced_enqueue_async

if TYPE_CHECKING:
    from ringwork.store import Store


class AsyncJobClient:
    """``enqueue_async``, ``enqueue_many_async`` and ``get_job_async``; mixed into the App
    next to :class:`~ringwork.client.JobClient`, whose validation and sync calls it uses."""

    # -- provided by the App (through JobClient) ------------------------------------------------

    @property
    def store(self) -> Store:
        raise NotImplementedError

    def _build_all(self, jobs: Iterable[Mapping[str, Any] | NewJob]) -> list[NewJob]:
        raise NotImplementedError

    def _wake(self, partitions: set[int]) -> None:
        raise NotImplementedError

    def enqueue_many(
        self, jobs: Iterable[Mapping[str, Any] | NewJob], *, connection: Any = None
    ) -> list[int]:
        raise NotImplementedError

    def _insert(self, built: list[NewJob], connection: Any = None) -> list[int]:
        raise NotImplementedError

    def get_job(self, job_id: int) -> JobRecord | None:
        raise NotImplementedError

    # -- the asyncio API ------------------------------------------------------------------------

    async def enqueue_async(
        self, task: str, key: str, payload: Any = None, *, connection: Any = None, **options: Any
    ) -> int:
        """:meth:`~ringwork.client.JobClient.enqueue` without blocking the event loop."""
        job = {"task": task, "key": key, "payload": payload, **options}
        return (await self.enqueue_many_async([job], connection=connection))[0]

    async def enqueue_many_async(
        self, jobs: Iterable[Mapping[str, Any] | NewJob], *, connection: Any = None
    ) -> list[int]:
        """:meth:`~ringwork.client.JobClient.enqueue_many` without blocking the event loop;
        ``connection`` is an asyncio connection or session (see the module docstring)."""
        built = self._build_all(jobs)
        return await traced_enqueue_async(
            built, functools.partial(self._insert_async, connection=connection))

    async def _insert_async(self, built: list[NewJob], connection: Any = None) -> list[int]:
        """:meth:`enqueue_many_async` once the jobs are built (and carry their context)."""
        # Imported here: importing the App must not load SQLAlchemy (ringwork.app).
        from ringwork.store.external import describe_type, is_async_connection

        if connection is not None and not is_async_connection(connection):
            raise ConfigurationError(
                "enqueue_async(connection=) takes a SQLAlchemy AsyncConnection or AsyncSession "
                f"(or a psycopg AsyncConnection), not {describe_type(connection)}; "
                "with a sync connection call enqueue"
            )
        if connection is not None:
            # Not opened here on SQLite: opening writes, and the caller's transaction may hold
            # the write lock already (see Store.enqueue_in).
            store = self.store
            if store.dialect == "postgresql":
                await self._opened_store()
            return await self._enqueue_in_async(store, connection, built)
        store = await self._opened_store()
        if not built:
            return []
        aio = store.aio()
        if aio is None:  # SQLite: the sync path, its write lock waited for off the loop
            return await asyncio.to_thread(self._insert, built)
        return await aio.enqueue(built)

    async def get_job_async(self, job_id: int) -> JobRecord | None:
        """:meth:`~ringwork.client.JobClient.get_job` without blocking the event loop."""
        store = await self._opened_store()
        aio = store.aio()
        if aio is None:
            return await asyncio.to_thread(self.get_job, job_id)
        return await aio.get_job(job_id)

    # -- helpers --------------------------------------------------------------------------------

    async def _opened_store(self) -> Store:
        store = self.store
        if not store.is_open:
            await asyncio.to_thread(store.open)
        return store

    async def _enqueue_in_async(self, store: Store, connection: Any, built: list[NewJob]) -> Any:
        import sys

        psycopg = sys.modules.get("psycopg")
        if psycopg is not None and isinstance(connection, psycopg.AsyncConnection):
            if store.dialect != "postgresql":
                raise ConfigurationError(
                    "connection= is a psycopg (PostgreSQL) connection but the app's database "
                    "is SQLite"
                )
            from ringwork.store.aio import enqueue_psycopg_async

            store.check_partitions(built)
            return await enqueue_psycopg_async(
                connection, store.url, store.cluster, store.channel, built, store.engine.dialect
            )

        def write(sync: Any) -> list[int]:
            # Inside run_sync: SQLAlchemy's asyncio adaptation runs these statements on the
            # loop's driver without blocking; COPY would need the raw asyncio cursor, so a big
            # batch takes the INSERT statement.
            return store.enqueue_in(sync, built, self._wake, copy=False)

        return await connection.run_sync(write)
