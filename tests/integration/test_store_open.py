"""Opening a store: URLs, outages, schema checks, cluster creation, error translation."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ringwork.errors import (
    DatabaseError,
    DatabaseUnavailable,
    DatabaseURLError,
    PartitionCountMismatch,
    SchemaError,
)
from ringwork.store import Store
from ringwork.store.engine import normalize_url
from ringwork.store.migrate import current, head, upgrade


@pytest.mark.parametrize(
    "url",
    ["postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"],
)
def test_postgres_spellings_use_psycopg3(url: str) -> None:
    assert normalize_url(url).drivername == "postgresql+psycopg"
    assert Store(url).dialect == "postgresql"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "malformed database URL"),
        ("mysql://u@h/db", "unsupported database URL"),
        ("postgresql+psycopg2://u@h/db", "unsupported database URL"),
        ("sqlite://", "in-memory SQLite is not supported"),
        ("sqlite:///:memory:", "in-memory SQLite is not supported"),
    ],
)
def test_bad_urls_raise_a_one_line_url_error(url: str, message: str) -> None:
    store = Store(url)  # constructing touches nothing
    with pytest.raises(DatabaseURLError, match=message) as info:
        store.open()
    assert "\n" not in str(info.value)


def test_password_is_not_echoed() -> None:
    with pytest.raises(DatabaseURLError) as info:
        Store("mysql://user:s3cret@h/db").open()
    assert "s3cret" not in str(info.value)


def test_unreachable_postgres_is_unavailable() -> None:
    store = Store("postgresql://postgres:pw@127.0.0.1:1/nowhere")
    with pytest.raises(DatabaseUnavailable) as info:
        store.open()
    assert "\n" not in str(info.value) and "pw" not in str(info.value).replace("/", " ")
    with pytest.raises(DatabaseUnavailable):  # not cached: a later call tries again
        store.read_term()


def test_unopenable_sqlite_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable):
        Store(f"sqlite:///{tmp_path}/no/such/dir/x.db").open()


def test_methods_open_lazily_and_open_is_idempotent(db_url: str, cluster_name: str) -> None:
    store = Store(db_url, cluster=cluster_name, partitions=4)
    try:
        assert store.counts_by_state()["queued"] == 0  # opened on first use
        store.open()
        store.open()
        store.close()
        assert store.read_term().term == 0  # reopens after close
    finally:
        store.close()


def test_concurrent_opens_create_the_cluster_once(db_url: str, cluster_name: str) -> None:
    stores = [Store(db_url, cluster=cluster_name, partitions=4) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def go(s: Store) -> None:
        try:
            barrier.wait(timeout=10)
            s.open()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        assert sorted(stores[0].read_partitions()) == [0, 1, 2, 3]
    finally:
        for s in stores:
            s.close()


def test_no_migrate_on_an_empty_database_is_a_schema_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(SchemaError, match="ringwork db upgrade"):
        Store(url, migrate=False).open()
    assert current(url) is None
    assert upgrade(url) == head()
    assert current(url) == head()
    with Store(url, migrate=False, partitions=2) as s:
        assert len(s.read_partitions()) == 2


def test_migrating_open_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    with Store(url, cluster="c", partitions=3) as s:
        assert len(s.read_partitions()) == 3
    assert current(url) == head()


def test_mismatch_leaves_the_store_closed(store: Store, db_url: str) -> None:
    other = Store(db_url, cluster=store.cluster, partitions=store.partitions + 1)
    for _ in range(2):
        with pytest.raises(PartitionCountMismatch):
            other.read_term()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'p.db'}", partitions=2) as s:
        yield s


def test_sqlite_connections_are_configured(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": 5000,
        "foreign_keys": 1,
    }


def test_write_transactions_begin_immediate_on_sqlite(sqlite_store: Store) -> None:
    store = sqlite_store
    seen: list[str] = []

    def before(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", before)
    try:
        store.claim("n", {0: 0}, 1)
        store.counts_by_state()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", before)
    begins = [s for s in seen if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


def test_driver_errors_are_translated(store: Store) -> None:
    with pytest.raises(DatabaseError) as info, store._tx() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert not isinstance(info.value, DatabaseUnavailable)  # a bug, not an outage
    assert isinstance(info.value.__cause__, sa.exc.DBAPIError)
    assert "no_such_table" in str(info.value)


def test_a_locked_sqlite_database_is_unavailable(sqlite_store: Store) -> None:
    from ringwork.store.engine import translate

    error = sa.exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked"))
    assert isinstance(translate(error), DatabaseUnavailable)


def test_a_full_disk_is_unavailable_and_says_what_to_do() -> None:
    from ringwork.store.engine import translate

    error = sa.exc.OperationalError(
        "x", {}, sqlite3.OperationalError("database or disk is full")
    )
    translated = translate(error, "enqueue")
    assert isinstance(translated, DatabaseUnavailable)  # retry once there is space again
    assert str(translated).startswith("enqueue: database or disk is full (")
    assert "free space" in str(translated) and "\n" not in str(translated)
