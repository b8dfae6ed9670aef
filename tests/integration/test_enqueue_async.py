"""``enqueue_async``, ``enqueue_many_async``, ``get_job_async``: the loop keeps running.

The proof that a call does not block the loop: the database is made to wait (another
connection holds the lock the statement needs), a ticker task on the same loop counts ticks
while the call waits, and only the ticker releases the lock. A blocking call would freeze the
loop, the ticker could not run, and the call would end on the lock's timeout (SQLite's busy
timeout) or the watchdog's release -- after zero ticks.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from ringwork import App, ConfigurationError
from tests.integration.test_enqueue_tx import Base, Order

T = TypeVar("T")
TICKS = 20


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=8, cluster=cluster_name)
    app.task("ship")(lambda job: None)
    app.store.open()
    yield app
    app.close()


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Blocker:
    """Another connection holding the lock a statement needs, until :meth:`release`."""

    def __init__(self, app: App, *, reads: bool = False) -> None:
        self._lock = threading.Lock()
        self._released = False
        if app.store.dialect == "sqlite":
            path = sa.make_url(app.store.url).database
            assert path is not None
            self._conn: Any = sqlite3.connect(path, isolation_level=None,
                                              check_same_thread=False)
            self._conn.execute("BEGIN IMMEDIATE")  # SQLite's one write lock
        else:
            self._conn = psycopg.connect(_libpq(app.store.url))
            mode = "ACCESS EXCLUSIVE" if reads else "EXCLUSIVE"  # EXCLUSIVE still lets reads in
            self._conn.execute(f"LOCK TABLE ringwork_jobs IN {mode} MODE")
        # A watchdog, so that a blocking implementation fails instead of hanging.
        self._watchdog = threading.Timer(15, self.release)
        self._watchdog.start()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._watchdog.cancel()
        self._conn.rollback() if isinstance(self._conn, psycopg.Connection) else (
            self._conn.execute("ROLLBACK"))
        self._conn.close()


async def while_blocked(blocker: Blocker, call: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """Run ``call`` while ``blocker`` holds its lock; ``(result, ticks before the release)``.

    The ticker releases the lock after :data:`TICKS` ticks, having checked that ``call`` was
    still waiting each time (it cannot finish while the lock is held).
    """
    task = asyncio.ensure_future(call())
    ticks = 0
    try:
        for _ in range(TICKS):
            await asyncio.sleep(0.005)
            assert not task.done(), "the call finished while the lock was held"
            ticks += 1
    finally:
        await asyncio.to_thread(blocker.release)
    return await asyncio.wait_for(task, 10), ticks


def test_enqueue_async_and_get_job_async(app: App) -> None:
    async def main() -> None:
        job_id = await app.enqueue_async("ship", "k", {"n": 1}, dedupe_key="d")
        assert await app.enqueue_async("ship", "k", dedupe_key="d") == job_id
        ids = await app.enqueue_many_async(
            [{"task": "ship", "key": f"k{i}", "payload": i} for i in range(150)]
        )
        assert ids == sorted(ids) and job_id not in ids
        record = await app.get_job_async(job_id)
        assert record == app.get_job(job_id)
        assert record is not None and record.payload == {"n": 1} and record.dedupe_key == "d"
        assert record.enqueued_at is not None and record.enqueued_at.tzinfo is not None
        assert (await app.get_job_async(ids[-1])).payload == 149  # type: ignore[union-attr]
        assert await app.get_job_async(10**12) is None
        assert await app.enqueue_many_async([]) == []

    asyncio.run(main())
    assert app.store.counts_by_state()["queued"] == 151


def test_concurrent_calls_and_a_second_event_loop(app: App) -> None:
    """Many calls at once (the pool grows, then keeps a few); connections outlive a loop."""

    async def burst() -> list[int]:
        return list(await asyncio.gather(
            *(app.enqueue_async("ship", f"k{i}", i) for i in range(40))))

    first = asyncio.run(burst())
    second = asyncio.run(burst())  # a new loop, the same idle connections
    assert len(set(first + second)) == 80
    record = asyncio.run(app.get_job_async(second[-1]))
    assert record is not None and record.payload == 39


def test_a_worker_starts_async_enqueued_jobs_at_once(db_url: str, cluster_name: str) -> None:
    """The wake-up rides along: NOTIFY from the asyncio connection, SQLite's nudge from the
    thread; the 30 s poll cannot explain a start within a second."""
    import time

    from ringwork import Job
    from tests.support import running_worker, wait_for

    app = App(database_url=db_url, partitions=8, cluster=cluster_name)
    app.configure(concurrency=2, poll_interval=30.0)
    started: dict[int, float] = {}

    @app.task("quick")
    def quick(job: Job) -> None:
        started[job.id] = time.monotonic()

    latencies = []
    try:
        with running_worker(app):
            for i in range(3):
                t0 = time.monotonic()
                job_id = asyncio.run(app.enqueue_async("quick", f"k{i}"))
                wait_for(lambda job_id=job_id: job_id in started, 4.0, 0.002, "job start")
                latencies.append(started[job_id] - t0)
    finally:
        app.close()
    assert max(latencies) < 1.0, latencies


def test_enqueue_async_does_not_block_the_loop(app: App) -> None:
    async def main() -> None:
        blocker = Blocker(app)
        job_id, ticks = await while_blocked(blocker, lambda: app.enqueue_async("ship", "k"))
        assert ticks == TICKS
        assert app.get_job(job_id) is not None

    asyncio.run(main())


@pytest.mark.postgres
def test_get_job_async_does_not_block_the_loop(pg_database_url: str, cluster_name: str) -> None:
    app = App(database_url=pg_database_url, partitions=8, cluster=cluster_name)
    app.task("ship")(lambda job: None)
    job_id = app.enqueue("ship", "k")

    async def main() -> None:
        blocker = Blocker(app, reads=True)
        record, ticks = await while_blocked(blocker, lambda: app.get_job_async(job_id))
        assert ticks == TICKS and record is not None and record.id == job_id

    try:
        asyncio.run(main())
    finally:
        app.close()


def test_a_first_async_call_opens_the_store_off_the_loop(db_url: str, cluster_name: str) -> None:
    app = App(database_url=db_url, partitions=8, cluster=cluster_name)
    app.task("ship")(lambda job: None)
    try:
        assert not app.store.is_open
        job_id = asyncio.run(app.enqueue_async("ship", "k"))
        assert app.store.is_open and app.get_job(job_id) is not None
    finally:
        app.close()


def test_sync_connections_and_wrong_types_are_one_line_errors(app: App) -> None:
    engine = sa.create_engine(app.store.url)

    async def main() -> None:
        with engine.connect() as conn:
            for bad in (conn, orm.Session(engine), "postgresql://x", 3):
                with pytest.raises(ConfigurationError) as info:
                    await app.enqueue_async("ship", "k", connection=bad)
                assert "enqueue_async(connection=)" in str(info.value)
                assert "\n" not in str(info.value)

    try:
        asyncio.run(main())
    finally:
        engine.dispose()
    assert app.store.counts_by_state()["queued"] == 0


# -- a caller's asyncio connection: SQLAlchemy's asyncio engines (psycopg's async driver on
# PostgreSQL, aiosqlite on SQLite) and psycopg's AsyncConnection ---------------------------------


@pytest.fixture
def pg_app(pg_database_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=pg_database_url, partitions=8, cluster=cluster_name)
    app.task("ship")(lambda job: None)
    yield app
    app.close()


def async_url(app: App) -> str:
    """The application's asyncio URL for the app's database."""
    url = sa.make_url(app.store.url)
    if app.store.dialect == "sqlite":
        pytest.importorskip("aiosqlite")
        url = url.set(drivername="sqlite+aiosqlite")
    return url.render_as_string(hide_password=False)


def test_an_async_connection_commits_or_rolls_back_its_job(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = app.store.dialect == "postgresql"
    listener = app.store.listen()
    woken: list[tuple[set[int], bool]] = []

    def wake(partitions: set[int]) -> None:  # SQLite: the nudge, and whether the job is visible
        woken.append((partitions, app.store.counts_by_state()["queued"] == 100))

    monkeypatch.setattr(app, "_wake", wake)

    async def main() -> list[int]:
        engine = create_async_engine(async_url(app))
        try:
            async with engine.connect() as conn:
                await app.enqueue_async("ship", "lost", connection=conn)
                await conn.rollback()
                if listener is not None:
                    assert await asyncio.to_thread(listener.wait, 0.3) == set()
                ids = await app.enqueue_many_async(
                    [{"task": "ship", "key": f"k{i}"} for i in range(100)], connection=conn)
                counts = await asyncio.to_thread(app.store.counts_by_state)
                assert counts["queued"] == 0  # not before the commit
                assert woken == []
                await conn.commit()
                assert not conn.closed
            return ids
        finally:
            await engine.dispose()

    try:
        ids = asyncio.run(main())
        assert app.store.counts_by_state()["queued"] == 100 and ids == sorted(ids)
        if pg:
            assert listener is not None and listener.wait(5)  # the NOTIFY came at the commit
        else:
            partitions = {app.partition_for(f"k{i}") for i in range(100)}
            assert woken == [(partitions, True)]  # after the commit, once
    finally:
        if listener is not None:
            listener.close()


def test_an_async_session_commits_its_orm_row_and_job_together(
    app: App, cluster_name: str
) -> None:
    async def main() -> tuple[int, int]:
        engine = create_async_engine(async_url(app))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            async with AsyncSession(engine) as session:
                session.add(Order(cluster=cluster_name))
                await session.flush()
                await app.enqueue_async("ship", "lost", connection=session)
                await session.rollback()
            async with AsyncSession(engine) as session:
                order = Order(cluster=cluster_name)
                session.add(order)
                await session.flush()
                job_id = await app.enqueue_async("ship", "kept", {"order": order.id},
                                                 connection=session)
                order_id = order.id  # (expired by the commit)
                await session.commit()
                return order_id, job_id
        finally:
            await engine.dispose()

    order_id, job_id = asyncio.run(main())
    assert [j.key for j in app.store.list_jobs()] == ["kept"]
    assert app.get_job(job_id).payload == {"order": order_id}  # type: ignore[union-attr]


def test_an_async_connection_does_not_block_the_loop(app: App) -> None:
    async def main() -> None:
        engine = create_async_engine(async_url(app))
        try:
            async with engine.connect() as conn:
                blocker = Blocker(app)
                job_id, ticks = await while_blocked(
                    blocker, lambda: app.enqueue_async("ship", "k", connection=conn))
                await conn.commit()
            assert ticks == TICKS and app.get_job(job_id) is not None
        finally:
            await engine.dispose()

    asyncio.run(main())


@pytest.mark.postgres
def test_a_raw_psycopg_async_connection(pg_app: App) -> None:
    app = pg_app

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(_libpq(app.store.url)) as raw:
            await app.enqueue_many_async([{"task": "ship", "key": f"k{i}"} for i in range(100)],
                                         connection=raw)
            await raw.rollback()
            assert app.store.counts_by_state()["queued"] == 0
            job_id = await app.enqueue_async("ship", "k", connection=raw)
            await raw.commit()
            assert app.get_job(job_id) is not None
        async with await psycopg.AsyncConnection.connect(
            _libpq(app.store.url), autocommit=True
        ) as raw:
            ids = await app.enqueue_many_async(
                [{"task": "ship", "key": f"k{i}"} for i in range(100)], connection=raw)
            assert len(ids) == 100
        closed = await psycopg.AsyncConnection.connect(_libpq(app.store.url))
        await closed.close()
        with pytest.raises(ConfigurationError, match="closed"):
            await app.enqueue_async("ship", "k", connection=closed)

    asyncio.run(main())
    assert app.store.counts_by_state()["queued"] == 101


def test_an_async_connection_to_another_database_is_refused(app: App, tmp_path: Any) -> None:
    if app.store.dialect == "sqlite":
        other = async_url(app).replace(str(sa.make_url(app.store.url).database),
                                       str(tmp_path / "other.db"))
    else:
        other = sa.make_url(app.store.url).set(database="postgres").render_as_string(False)

    async def main() -> None:
        engine = create_async_engine(other)
        try:
            async with engine.connect() as conn:
                with pytest.raises(ConfigurationError, match="not the app's"):
                    await app.enqueue_async("ship", "k", connection=conn)
        finally:
            await engine.dispose()
        if app.store.dialect == "postgresql":
            async with await psycopg.AsyncConnection.connect(_libpq(other)) as raw:
                with pytest.raises(ConfigurationError, match="not the app's"):
                    await app.enqueue_async("ship", "k", connection=raw)

    asyncio.run(main())
