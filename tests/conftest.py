"""Fixtures shared by every test tier.

* ``db_url`` -- parametrized over ``sqlite`` (a file in the test's tmp_path) and ``postgresql``
  (one fresh database per test session on the server in ``RINGWORK_TEST_POSTGRES_URL``, dropped
  at the end). The schema is migrated once per session per dialect: SQLite tests get a copy of a
  migrated template file, PostgreSQL tests share the session database and keep apart by cluster.
  An unreachable server skips the PostgreSQL half, except under ``CI=true`` where it fails.
* ``cluster_name`` -- unique per test. ``store`` -- an opened :class:`ringwork.store.Store` on
  ``db_url`` (``store_partitions`` partitions, 8 unless a test overrides that fixture).
* ``empty_db_url`` -- like ``db_url`` but a database with no schema (for migration tests).
* ``make_store`` -- more stores on the same database (other processes' view), closed at teardown.
* ``count_statements`` -- counts the SQL statements an engine sends (BEGIN/COMMIT excluded).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from ringwork import App
from ringwork.store import Store
from ringwork.store.migrate import upgrade

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _pg_server_url() -> sa.URL:
    return sa.make_url(os.environ.get("RINGWORK_TEST_POSTGRES_URL", DEFAULT_PG))


def _pg_admin_connect(url: sa.URL) -> psycopg.Connection:
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (dropped afterwards)."""
    server = _pg_server_url()
    try:
        admin = _pg_admin_connect(server)
    except psycopg.Error as e:
        message = f"PostgreSQL at {server.render_as_string()} is unreachable: {e}"
        if _ci():
            pytest.fail(message + " (CI=true: PostgreSQL is required)")
        pytest.skip(message)
    name = f"ringwork_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )
    try:
        upgrade(url)
        yield url
    finally:
        with _pg_admin_connect(server) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test gets a copy (copying beats migrating per test)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "ringwork.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (PostgreSQL: a new database, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("pg_database_url")  # skips/fails like the rest when unreachable
    server = _pg_server_url()
    name = f"ringwork_empty_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _pg_admin_connect(server) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with _pg_admin_connect(server) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def cluster_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.originalname[:60]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store_partitions() -> int:
    return 8


@pytest.fixture
def store(db_url: str, cluster_name: str, store_partitions: int) -> Iterator[Store]:
    s = Store(db_url, cluster=cluster_name, partitions=store_partitions)
    s.open()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def make_store(
    db_url: str, cluster_name: str, store_partitions: int
) -> Iterator[Callable[..., Store]]:
    made: list[Store] = []

    def make(**kwargs: Any) -> Store:
        kwargs.setdefault("cluster", cluster_name)
        kwargs.setdefault("partitions", store_partitions)
        s = Store(kwargs.pop("url", db_url), **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


class StatementLog:
    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)


_TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@pytest.fixture
def count_statements() -> Callable[[sa.Engine], Any]:
    """``with count_statements(engine) as log: ...`` then ``log.count``."""

    @contextmanager
    def counting(engine: sa.Engine) -> Iterator[StatementLog]:
        log = StatementLog()

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if not statement.lstrip().upper().startswith(_TX_CONTROL):
                log.statements.append(statement)

        sa.event.listen(engine, "before_cursor_execute", before)
        try:
            yield log
        finally:
            sa.event.remove(engine, "before_cursor_execute", before)

    return counting


@pytest.fixture
def quick_app(db_url: str, cluster_name: str) -> Iterator[App]:
    """An App on the test database for running a real Worker: 4 partitions, 4 handlers, a
    quick poll backstop and retries in tenths of a second."""
    app = App(database_url=db_url, partitions=4, cluster=cluster_name)
    app.configure(concurrency=4, poll_interval=0.2, retry_base=0.05, retry_max=0.2)
    yield app
    app.close()

