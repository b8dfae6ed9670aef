"""Transactional handlers against real SQLite and PostgreSQL: the handler's writes and its job's
completion commit together, or not at all.

Each test counts the rows of a user table the handler writes to: the effect must be there
exactly once per job, however the attempts went.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from ringwork import App, Job
from ringwork.errors import ConfigurationError
from ringwork.store.schema import jobs as jobs_table
from tests.support import running_worker, wait_for


@pytest.fixture
def app(quick_app: App) -> App:
    return quick_app


@pytest.fixture
def credits(app: App, cluster_name: str) -> sa.Table:
    """The user's own table, in the app's database."""
    table = sa.Table(f"credits_{cluster_name}"[:60], sa.MetaData(),
                     sa.Column("job_id", sa.BigInteger, nullable=False),
                     sa.Column("attempt", sa.Integer, nullable=False))
    table.create(app.store.engine)
    yield table
    table.drop(app.store.engine)


def effects(app: App, table: sa.Table) -> list[tuple[int, int]]:
    with app.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table.c.job_id, table.c.attempt))]


def test_the_handlers_writes_and_the_completion_commit_together(
    app: App, credits: sa.Table
) -> None:
    @app.task("credit", transactional=True)
    def credit(job: Job, conn: sa.Connection) -> None:
        conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))

    @app.task("credit_async", transactional=True)
    async def credit_async(job: Job, conn: Any) -> None:
        await conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))

    ids = [app.enqueue("credit", f"k{i}") for i in range(6)]
    ids += [app.enqueue("credit_async", f"a{i}") for i in range(6)]
    with running_worker(app) as worker:
        wait_for(lambda: all(app.get_job(i).state == "succeeded" for i in ids), 30)  # type: ignore[union-attr]
        assert worker.stats.succeeded == 12 and worker.stats.fenced == 0
    assert sorted(effects(app, credits)) == sorted((i, 1) for i in ids)


def test_a_handler_that_raises_rolls_back_and_its_retry_writes_once(
    app: App, credits: sa.Table
) -> None:
    @app.task("credit", transactional=True)
    def credit(job: Job, conn: sa.Connection) -> None:
        conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))
        if job.attempt < 3:
            raise RuntimeError("after the write, before the commit")

    job_id = app.enqueue("credit", "k")
    with running_worker(app) as worker:
        wait_for(lambda: app.get_job(job_id).state == "succeeded", 30)  # type: ignore[union-attr]
        assert worker.stats.retried == 2
    assert effects(app, credits) == [(job_id, 3)]
    record = app.get_job(job_id)
    assert record is not None and record.attempts == 3


def test_a_completion_refused_rolls_the_effects_back(app: App, credits: sa.Table) -> None:
    """The job is re-queued under a running handler (what the cluster does to a worker declared
    dead): that attempt's commit finds its claim gone and rolls everything back; the job's
    next attempt writes the one effect."""
    entered, go = threading.Event(), threading.Event()

    @app.task("credit", transactional=True)
    def credit(job: Job, conn: sa.Connection) -> None:
        if job.attempt == 1:  # before the write: on SQLite a write would lock out the re-queue
            entered.set()
            assert go.wait(20)
        conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))

    job_id = app.enqueue("credit", "k")
    with running_worker(app) as worker:
        assert entered.wait(20)
        with app.store.engine.begin() as conn:  # the referee's re-queue of a dead claimer
            conn.execute(sa.update(jobs_table).where(jobs_table.c.id == job_id)
                         .values(state="queued", claimed_by=None))
        go.set()
        wait_for(lambda: worker.stats.fenced == 1, 20, message="the first attempt fenced")
        wait_for(lambda: app.get_job(job_id).state == "succeeded", 30)  # type: ignore[union-attr]
    assert effects(app, credits) == [(job_id, 2)]


def test_a_timed_out_attempt_that_returns_late_does_not_commit(
    app: App, credits: sa.Table
) -> None:
    """A plain handler's thread runs on past its timeout; the attempt is failed and retried --
    here by the same worker, so under the same claim token (the partition's epoch) -- while it
    does. When the late attempt returns, its commit must be refused: the claim on the row is
    the retry's now. The one effect is the retry's."""
    retry_started, late_returned = threading.Event(), threading.Event()
    worker_of: list[Any] = []

    @app.task("credit", transactional=True, timeout=1.0)
    def credit(job: Job, conn: sa.Connection) -> None:
        if job.attempt == 1:
            assert retry_started.wait(20)
            # Written only now: on SQLite an earlier write would lock the retry out.
            conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))
            late_returned.set()
            return
        retry_started.set()
        assert late_returned.wait(20)
        # Until the late attempt's transaction has ended (its slot comes back then).
        wait_for(lambda: worker_of[0]._executor.overrunning == 0, 10,
                 message="the late attempt's transaction ended")
        conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))

    job_id = app.enqueue("credit", "k")
    with running_worker(app) as worker:
        worker_of.append(worker)
        wait_for(lambda: app.get_job(job_id).state == "succeeded", 30)  # type: ignore[union-attr]
    assert effects(app, credits) == [(job_id, 2)]
    record = app.get_job(job_id)
    assert record is not None and record.attempts == 2


def test_once_completed_a_handler_transaction_may_idle_two_seconds_only(
    app: App, credits: sa.Table
) -> None:
    """The completion locks the job's row until the commit. A process frozen in between (found
    by the SIGSTOP acceptance test) would hold that lock for the handler's idle limit -- 60 s
    for a task without a timeout -- and the leader's re-queue of its jobs waits for the lock
    inside the referee's transaction, so every worker stalls with it. Once the completion is
    written the transaction is ringwork's, and gets ringwork's own 2 s limit."""
    if app.store.dialect != "postgresql":
        pytest.skip("an idle-in-transaction limit is PostgreSQL's")
    seen: list[str] = []

    def before_commit(conn: sa.Connection) -> None:
        if conn.exec_driver_sql("SHOW application_name").scalar() == "ringwork-handler":
            seen.append(conn.exec_driver_sql(
                "SHOW idle_in_transaction_session_timeout").scalar())

    @app.task("credit", transactional=True)
    def credit(job: Job, conn: sa.Connection) -> None:
        conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))

    @app.task("credit_async", transactional=True)
    async def credit_async(job: Job, conn: Any) -> None:
        await conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))

    ids = [app.enqueue("credit", "k"), app.enqueue("credit_async", "a")]
    sa.event.listen(sa.Engine, "commit", before_commit)
    try:
        with running_worker(app):
            wait_for(lambda: all(app.get_job(i).state == "succeeded" for i in ids), 30)  # type: ignore[union-attr]
    finally:
        sa.event.remove(sa.Engine, "commit", before_commit)
    assert seen == ["2s", "2s"]


def test_a_cancelled_async_handler_writes_nothing(app: App, credits: sa.Table) -> None:
    """Its write, made before the cancel, is rolled back. (On SQLite the write comes after the
    wait: an uncommitted write holds the database's only write lock, the cancel's included.)"""
    entered = threading.Event()
    write_first = app.store.dialect == "postgresql"

    @app.task("credit", transactional=True)
    async def credit(job: Job, conn: Any) -> None:
        if write_first:
            await conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))
        entered.set()
        await asyncio.sleep(60)
        await conn.execute(credits.insert().values(job_id=job.id, attempt=job.attempt))

    job_id = app.enqueue("credit", "k")
    with running_worker(app):
        assert entered.wait(20)
        assert app.cancel(job_id) == "requested"
        wait_for(lambda: app.get_job(job_id).state == "cancelled", 20)  # type: ignore[union-attr]
    assert effects(app, credits) == []


def test_a_transactional_handler_must_take_job_and_connection(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"must take \(job, conn\)"):
        @app.task("one_arg", transactional=True)
        def one_arg(job: Job) -> None: ...

    with pytest.raises(ConfigurationError, match="transactional must be True or False"):
        app.task("bad", transactional="yes")  # type: ignore[arg-type]
