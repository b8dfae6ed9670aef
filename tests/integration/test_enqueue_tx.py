"""``app.enqueue(..., connection=conn)``: the job is written in the caller's transaction.

It exists if and only if the caller commits (no ghost job after a rollback), the workers are
woken only once it has committed, and a connection that is not on the app's database, closed,
or not a connection at all is a one-line error. Both databases, the caller's own engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from ringwork import App, ConfigurationError, Job
from ringwork.job import NewJob
from ringwork.store import enqueue as store_enqueue
from tests.support import running_worker, wait_for


class Base(orm.DeclarativeBase):
    pass


class Order(Base):
    """The application's own row, committed (or not) together with its job."""

    __tablename__ = "test_tx_orders"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    cluster: orm.Mapped[str] = orm.mapped_column(sa.String(200))


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=8, cluster=cluster_name)
    # A poll far longer than the waits below: a job started in time was woken, not polled.
    app.configure(concurrency=4, poll_interval=30.0)

    @app.task("ship")
    def ship(job: Job) -> None: ...

    yield app
    app.close()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """The application's own engine on the app's database (not ringwork's)."""
    engine = sa.create_engine(db_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def queued(app: App) -> int:
    return app.store.counts_by_state()["queued"]


def test_a_rolled_back_transaction_leaves_no_job(app: App, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        job_id = app.enqueue("ship", "order-1", {"n": 1}, connection=conn)
        conn.rollback()
    assert app.get_job(job_id) is None
    assert queued(app) == 0


def test_a_committed_job_exists_and_a_worker_starts_it_promptly(
    app: App, engine: sa.Engine
) -> None:
    started: dict[int, float] = {}

    @app.task("quick")
    def quick(job: Job) -> None:
        started[job.id] = time.monotonic()

    latencies = []
    with running_worker(app):
        for i in range(5):
            with engine.connect() as conn:
                job_id = app.enqueue("quick", f"k{i}", connection=conn)
                committed = time.monotonic()
                conn.commit()
            wait_for(lambda job_id=job_id: job_id in started, 4.0, 0.002, "job start")
            latencies.append(started[job_id] - committed)
        wait_for(lambda: all(app.get_job(i).state == "succeeded"  # type: ignore[union-attr]
                             for i in started), 10, message="jobs succeeded")
    # The poll is 30 s: only the wake-up at the commit (NOTIFY, SQLite's nudge) explains this.
    assert max(latencies) < 1.0, latencies


def test_the_sqlite_wake_up_goes_out_after_the_commit_and_never_on_rollback(
    app: App, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    if app.store.dialect != "sqlite":
        pytest.skip("PostgreSQL's wake-up is the NOTIFY (test_listen_sees_*)")
    woken: list[tuple[set[int], str | None]] = []

    def wake(partitions: set[int]) -> None:
        # What a worker woken now would see: the job must already be committed.
        record = app.get_job(job_ids[-1])
        woken.append((partitions, None if record is None else record.state))

    monkeypatch.setattr(app, "_wake", wake)
    job_ids: list[int] = []
    with engine.connect() as conn:
        job_ids.append(app.enqueue("ship", "a", connection=conn))
        conn.rollback()
        assert woken == []
        job_ids.append(app.enqueue("ship", "b", connection=conn))
        assert woken == []  # not before the commit
        conn.commit()
        assert woken == [({app.partition_for("b")}, "queued")]
        conn.commit()  # nothing pending any more: no second nudge
        assert len(woken) == 1
    with orm.Session(engine) as session:
        job_ids.append(app.enqueue("ship", "c", connection=session))
        session.rollback()
        job_ids.append(app.enqueue("ship", "d", connection=session))
        assert len(woken) == 1
        session.commit()
        assert woken[1] == ({app.partition_for("d")}, "queued")


def test_an_autocommit_sqlite_connection_wakes_at_once(
    app: App, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    if app.store.dialect != "sqlite":
        pytest.skip("SQLite's nudge")
    woken: list[set[int]] = []
    monkeypatch.setattr(app, "_wake", woken.append)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        job_id = app.enqueue("ship", "k", connection=conn)
        assert woken == [{app.partition_for("k")}]  # committed as it ran
        assert app.get_job(job_id) is not None


@pytest.mark.postgres
def test_listen_sees_nothing_before_the_commit_nor_after_a_rollback(
    pg_database_url: str, cluster_name: str
) -> None:
    app = App(database_url=pg_database_url, partitions=8, cluster=cluster_name)
    app.task("ship")(lambda job: None)
    engine = sa.create_engine(pg_database_url)
    listener = app.store.listen()
    assert listener is not None
    try:
        part = app.partition_for("k")
        with engine.connect() as conn:
            app.enqueue("ship", "k", connection=conn)
            assert listener.wait(0.3) == set()  # queued in the transaction, not yet sent
            conn.rollback()
        assert listener.wait(0.3) == set()
        with engine.connect() as conn:
            app.enqueue("ship", "k", connection=conn)
            assert listener.wait(0.3) == set()
            conn.commit()
        assert listener.wait(5) == {part}
    finally:
        listener.close()
        engine.dispose()
        app.close()


def test_an_orm_row_and_its_job_commit_or_roll_back_together(
    app: App, engine: sa.Engine, cluster_name: str
) -> None:
    with orm.Session(engine) as session:
        session.add(Order(cluster=cluster_name))
        session.flush()
        app.enqueue("ship", "o1", connection=session)
        session.rollback()
    with orm.Session(engine) as session:
        order = Order(cluster=cluster_name)
        session.add(order)
        session.flush()
        kept = app.enqueue("ship", f"order-{order.id}", {"order": order.id}, connection=session)
        session.commit()
        order_id = order.id
    # (SQLite may give the kept job the rolled-back one's id: compare keys)
    assert [j.key for j in app.store.list_jobs()] == [f"order-{order_id}"]
    record = app.get_job(kept)
    assert record is not None and record.payload == {"order": order_id}
    with orm.Session(engine) as session:
        rows = session.scalars(sa.select(Order).where(Order.cluster == cluster_name)).all()
        assert [o.id for o in rows] == [order_id]


def test_dedupe_inside_the_callers_transaction(app: App, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        first = app.enqueue("ship", "k", dedupe_key="order-9", connection=conn)
        again = app.enqueue("ship", "k", dedupe_key="order-9", connection=conn)
        [batch, other] = app.enqueue_many(
            [{"task": "ship", "key": "k", "dedupe_key": "order-9"},
             {"task": "ship", "key": "k", "dedupe_key": "order-10"}], connection=conn)
    assert first == again == batch and other != first
    assert app.enqueue("ship", "k", dedupe_key="order-9") == first  # the committed job
    assert queued(app) == 2


@pytest.mark.parametrize("size", [3, 200])
def test_a_batch_commits_or_rolls_back_whole(app: App, engine: sa.Engine, size: int) -> None:
    """200 jobs: PostgreSQL's COPY path, inside the caller's transaction."""
    jobs = [{"task": "ship", "key": f"k{i}", "payload": i} for i in range(size)]
    with engine.connect() as conn:
        app.enqueue_many(jobs, connection=conn)
        conn.rollback()
        assert queued(app) == 0
        ids = app.enqueue_many(jobs, connection=conn)
        conn.commit()
    assert queued(app) == size and ids == sorted(ids)
    assert app.get_job(ids[-1]).payload == size - 1  # type: ignore[union-attr]


def test_a_connection_to_another_database_is_refused(
    app: App, db_url: str, tmp_path: Path
) -> None:
    if app.store.dialect == "sqlite":
        other = f"sqlite:///{tmp_path / 'other.db'}"
    else:
        other = sa.make_url(db_url).set(database="postgres").render_as_string(False)
    engine = sa.create_engine(other)
    try:
        with engine.connect() as conn, pytest.raises(ConfigurationError) as info:
            app.enqueue("ship", "k", connection=conn)
        assert "not the app's" in str(info.value) and "\n" not in str(info.value)
    finally:
        engine.dispose()
    assert queued(app) == 0


def test_a_connection_of_the_other_dialect_is_refused(app: App, tmp_path: Path) -> None:
    if app.store.dialect == "sqlite":
        pytest.skip("the PostgreSQL half covers this (a SQLite connection for a PostgreSQL app)")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn, pytest.raises(ConfigurationError, match="sqlite"):
            app.enqueue("ship", "k", connection=conn)
    finally:
        engine.dispose()


@pytest.mark.parametrize("bad", ["sqlite:///x.db", 42, object(), ["conn"]])
def test_wrong_types_are_one_line_errors(app: App, bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        app.enqueue("ship", "k", connection=bad)
    message = str(info.value)
    assert "connection= must be" in message and "\n" not in message


def test_an_engine_or_a_closed_connection_is_refused(app: App, engine: sa.Engine) -> None:
    with pytest.raises(ConfigurationError, match=r"not sqlalchemy\.engine\.base\.Engine"):
        app.enqueue("ship", "k", connection=engine)
    conn = engine.connect()
    conn.close()
    with pytest.raises(ConfigurationError, match="connection= is closed"):
        app.enqueue("ship", "k", connection=conn)
    assert queued(app) == 0


def test_an_unbound_session_is_a_one_line_error(app: App) -> None:
    with orm.Session() as session, pytest.raises(ConfigurationError) as info:
        app.enqueue("ship", "k", connection=session)
    message = str(info.value)
    assert "Session that cannot give a connection" in message and "\n" not in message


def test_one_transaction_may_hold_jobs_of_two_apps(
    app: App, engine: sa.Engine, db_url: str, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = App(database_url=db_url, partitions=4, cluster=cluster_name + "-b")
    other.task("ship")(lambda job: None)
    woken: list[tuple[str, set[int]]] = []
    for a in (app, other):
        monkeypatch.setattr(a, "_wake", lambda p, a=a: woken.append((a.settings.cluster, p)))
    try:
        other.store.open()
        with engine.connect() as conn:
            one = app.enqueue("ship", "k", connection=conn)
            two = other.enqueue("ship", "k", connection=conn)
            conn.commit()
        assert app.get_job(one) is not None and other.get_job(two) is not None
        if app.store.dialect == "sqlite":  # each app nudges its own cluster's workers
            assert sorted(woken) == sorted([(app.settings.cluster, {app.partition_for("k")}),
                                            (other.settings.cluster, {other.partition_for("k")})])
    finally:
        other.close()


def test_a_failing_nudge_never_fails_the_callers_commit(
    app: App, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(partitions: set[int]) -> None:
        raise RuntimeError("no sockets today")

    monkeypatch.setattr(app, "_wake", broken)
    with engine.connect() as conn:
        job_id = app.enqueue("ship", "k", connection=conn)
        conn.commit()
    with orm.Session(engine) as session:
        other = app.enqueue("ship", "k2", connection=session)
        session.commit()
    assert app.get_job(job_id) is not None and app.get_job(other) is not None


@pytest.mark.postgres
def test_a_failed_postgresql_transaction_is_a_one_line_database_error(
    pg_database_url: str, cluster_name: str
) -> None:
    from ringwork import DatabaseError

    app = App(database_url=pg_database_url, partitions=8, cluster=cluster_name)
    app.task("ship")(lambda job: None)
    engine = sa.create_engine(pg_database_url)
    try:
        with engine.connect() as conn:
            with pytest.raises(sa.exc.ProgrammingError):
                conn.execute(sa.text("SELECT * FROM no_such_table"))
            with pytest.raises(DatabaseError) as info:
                app.enqueue("ship", "k", connection=conn)
            assert "aborted" in str(info.value) and "\n" not in str(info.value)
            conn.rollback()
            assert app.enqueue("ship", "k", connection=conn) > 0  # usable again
            conn.commit()
    finally:
        engine.dispose()
        app.close()


def test_a_batch_is_validated_before_the_connection_is_touched(
    app: App, engine: sa.Engine
) -> None:
    from ringwork import UnknownTaskError

    with engine.connect() as conn:
        with pytest.raises(UnknownTaskError):
            app.enqueue_many([{"task": "ship", "key": "a"}, {"task": "nope", "key": "b"}],
                             connection=conn)
        assert not conn.in_transaction()  # nothing was sent


def test_a_partition_out_of_range_is_refused(app: App, engine: sa.Engine) -> None:
    with engine.connect() as conn, pytest.raises(ValueError, match="out of range"):
        app.enqueue_many([NewJob(task="ship", key="k", partition=99)], connection=conn)


# -- a raw psycopg connection (Django's, on PostgreSQL) -------------------------------------------


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.postgres
@pytest.mark.parametrize("size", [1, 200])
def test_a_raw_psycopg_connection_commits_or_rolls_back_its_jobs(
    pg_database_url: str, cluster_name: str, size: int
) -> None:
    app = App(database_url=pg_database_url, partitions=8, cluster=cluster_name)
    app.task("ship")(lambda job: None)
    jobs = [{"task": "ship", "key": f"k{i}", "payload": {"i": i}} for i in range(size)]
    listener = app.store.listen()
    assert listener is not None
    try:
        with psycopg.connect(_libpq(pg_database_url)) as raw:
            app.enqueue_many(jobs, connection=raw)
            raw.rollback()
            assert queued(app) == 0
            ids = app.enqueue_many(jobs, connection=raw)
            assert listener.wait(0.3) == set()
            assert queued(app) == 0  # not visible before the commit
            raw.commit()
            assert not raw.closed  # ringwork never closes it
        assert queued(app) == size
        assert app.get_job(ids[-1]).payload == {"i": size - 1}  # type: ignore[union-attr]
        seen: set[int] = set()
        want = {app.partition_for(j["key"]) for j in jobs}
        deadline = time.monotonic() + 5
        while seen != want and time.monotonic() < deadline:
            seen |= listener.wait(0.5)
        assert seen == want
        # Django outside atomic(): autocommit; a batch is still one transaction.
        with psycopg.connect(_libpq(pg_database_url), autocommit=True) as raw:
            more = app.enqueue_many(jobs, connection=raw)
        assert queued(app) == 2 * size and len(set(more) | set(ids)) == 2 * size
    finally:
        listener.close()
        app.close()


@pytest.mark.postgres
def test_a_psycopg_connection_elsewhere_or_closed_is_refused(
    pg_database_url: str, cluster_name: str
) -> None:
    app = App(database_url=pg_database_url, partitions=8, cluster=cluster_name)
    app.task("ship")(lambda job: None)
    try:
        other = sa.make_url(pg_database_url).set(database="postgres").render_as_string(False)
        with psycopg.connect(_libpq(other)) as raw, pytest.raises(
            ConfigurationError, match="not the app's"
        ):
            app.enqueue("ship", "k", connection=raw)
        raw = psycopg.connect(_libpq(pg_database_url))
        raw.close()
        with pytest.raises(ConfigurationError, match="closed"):
            app.enqueue("ship", "k", connection=raw)
    finally:
        app.close()


def test_the_copy_threshold_is_what_the_batch_test_crosses() -> None:
    assert store_enqueue.COPY_MIN_ROWS <= 200


def test_a_sqlite_engine_made_with_a_creator_is_checked_by_its_file(
    app: App, db_url: str, tmp_path: Path
) -> None:
    if app.store.dialect != "sqlite":
        pytest.skip("SQLite's file")
    import sqlite3

    path = sa.make_url(db_url).database
    assert path is not None
    for target, ok in ((path, True), (str(tmp_path / "elsewhere.db"), False)):
        engine = sa.create_engine("sqlite://", creator=lambda t=target: sqlite3.connect(t))
        try:
            with engine.connect() as conn:
                if ok:
                    job_id = app.enqueue("ship", "k", connection=conn)
                    conn.commit()
                    assert app.get_job(job_id) is not None
                else:
                    with pytest.raises(ConfigurationError, match="not the app's"):
                        app.enqueue("ship", "k", connection=conn)
        finally:
            engine.dispose()
