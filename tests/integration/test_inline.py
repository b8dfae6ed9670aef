"""``app.testing()``: what a user's own pytest gets -- jobs run inline, as a worker would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from ringwork import App, Job


def make_app(tmp_path: Path) -> App:
    app = App(database_url=f"sqlite:///{tmp_path}/prod.db", partitions=4, cluster="inline")
    app.configure(retry_base=10.0, retry_max=60.0)
    return app


def test_queued_jobs_run_inline_in_enqueue_order_and_the_app_is_put_back(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    ran: list[tuple[str, object]] = []

    @app.task("greet")
    def greet(job: Job) -> None:
        ran.append((job.key, job.payload))
        if job.payload == 1:
            app.enqueue("greet", "child", 99)  # enqueued by a handler: runs in the same call

    @app.task("shout")
    async def shout(job: Job) -> None:
        await asyncio.sleep(0)
        ran.append((job.key, "async"))

    with app.testing() as t:
        for i in range(3):
            app.enqueue("greet", f"k{i}", i)
        app.enqueue("shout", "s")
        assert t.run_pending() == 5
        assert [r.state for r in t.jobs()] == ["succeeded"] * 5
        assert len(t.jobs(task="greet", state="succeeded")) == 4
    assert ran[:3] == [("k0", 0), ("k1", 1), ("k2", 2)]
    assert ("child", 99) in ran and ("s", "async") in ran
    assert app.settings.database_url == f"sqlite:///{tmp_path}/prod.db"
    assert not (tmp_path / "prod.db").exists(), "the block never touched the app's database"


def test_retries_wait_for_the_fake_clock_and_end_dead(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    attempts: list[int] = []

    @app.task("flaky", max_attempts=3)
    def flaky(job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("down")

    with app.testing() as t:
        job_id = app.enqueue("flaky", "k")
        assert t.run_pending() == 1
        assert t.jobs()[0].state == "queued" and attempts == [1]  # its retry is not due yet
        assert t.run_pending() == 0
        t.advance(120)  # past any backoff of retry_base 10 s, capped at 60 s
        assert attempts == [1, 2]
        assert t.drain() == 1  # the rest, moving the clock on by itself
        record = app.get_job(job_id)
        assert record is not None and record.state == "dead" and attempts == [1, 2, 3]
        assert "RuntimeError: down" in str(record.last_error)


def test_ordered_keys_run_one_at_a_time_and_delayed_jobs_when_due(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    ran: list[str] = []

    @app.task("step", ordered=True)
    def step(job: Job) -> None:
        ran.append(job.payload)

    with app.testing() as t:
        app.enqueue("step", "account", "open")
        app.enqueue("step", "account", "later", delay=3600)
        app.enqueue("step", "account", "close")  # waits behind the delayed one: ordered
        assert t.run_pending() == 1 and ran == ["open"]
        t.advance(3600)
        assert ran == ["open", "later", "close"]


def test_periodic_ticks_are_enqueued_as_the_clock_passes_them(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    ticks: list[str] = []

    @app.periodic("report", cron="*/10 * * * *")
    def report(job: Job) -> None:
        ticks.append(job.payload["tick"])

    with app.testing() as t:
        t.advance(3600)
        assert 6 <= len(ticks) <= 7, ticks  # one per 10 minutes passed, each once
        assert len(set(ticks)) == len(ticks)
        assert all(r.state == "succeeded" for r in t.jobs(task="report"))


def test_a_periodic_task_can_keep_its_results(tmp_path: Path) -> None:
    app = make_app(tmp_path)

    @app.periodic("count", cron="*/30 * * * *", store_result=True)
    def count(job: Job) -> dict[str, str]:
        return {"tick": job.payload["tick"]}

    with app.testing() as t:
        t.advance(3600)
        done = t.jobs(task="count")
        assert done and all(r.result == {"tick": r.payload["tick"]} for r in done)


def test_a_transactional_handler_runs_in_its_transaction(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    table = sa.Table("ledger", sa.MetaData(), sa.Column("job_id", sa.Integer))

    @app.task("credit", transactional=True)
    def credit(job: Job, conn: sa.Connection) -> None:
        conn.execute(table.insert().values(job_id=job.id))
        if job.attempt == 1:
            raise RuntimeError("rolled back with the write")

    with app.testing() as t:
        table.create(app.store.engine)
        job_id = app.enqueue("credit", "k")
        t.drain()
        with app.store.engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.job_id)).scalars().all()
        assert rows == [job_id]
        assert t.jobs()[0].attempts == 2


def test_advance_refuses_to_go_back(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with app.testing() as t, pytest.raises(ValueError, match="forward"):
        t.advance(-1)
