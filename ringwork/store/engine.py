"""Engines, transactions and driver errors: the only place that knows about URLs, pools, pragmas
and exceptions.

SQLite settings, and why:

* ``journal_mode=WAL``: readers (status, inspection) never block the writer and vice versa.
* ``synchronous=FULL``: a committed completion survives a power cut; a job queue must not forget
  that a job succeeded (and run it again) or that it was claimed.
* ``busy_timeout=5000``: a writer waits up to 5 s for the write lock instead of failing at once.
* ``foreign_keys=ON``: SQLite ignores declared foreign keys unless told.
* Transactions that write start with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented pysqlite
  recipe: the driver's own BEGIN is switched off and we emit ours). A deferred transaction that
  reads and then writes can fail with "database is locked" without waiting, when another writer
  committed in between; taking the write lock up front makes the busy timeout apply and makes a
  read-check-write (the referee's term check) atomic.

PostgreSQL runs at READ COMMITTED through psycopg 3; all fencing is designed for that level.
Connections set ``jit=off`` and ``plan_cache_mode=force_generic_plan`` (:data:`PG_SESSION_OPTIONS`).
Every psycopg connection ringwork makes -- the pool's, the LISTEN one, the loop claimer's -- is
made with :func:`pg_connect_kwargs`, so none can miss a setting.

Threads: any. An engine and its pool are thread-safe and hand each caller its own connection
(SQLite connections are created with ``check_same_thread=False`` because the pool moves them
between threads, never shares one at a time); :func:`translated` is a plain context manager.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Dialect, Engine
from sqlalchemy.pool import ConnectionPoolEntry

from ringwork.errors import (
    DatabaseError,
    DatabaseUnavailable,
    DatabaseURLError,
    RingworkError,
)

#: Execution option a connection carries when its transaction must start with BEGIN IMMEDIATE.
SQLITE_IMMEDIATE = "ringwork_sqlite_immediate"

SQLITE_BUSY_TIMEOUT_MS = 5000
#: RETURNING needs 3.35; UPDATE ... FROM needs 3.33.
MIN_SQLITE = (3, 35, 0)

#: Session settings for every PostgreSQL connection, and why:
#: * JIT compilation costs tens to hundreds of milliseconds and pays off only on long analytical
#:   queries; the claim's cost estimate can cross ``jit_above_cost``.
#: * psycopg prepares a statement after 5 executions; PostgreSQL would still re-plan the claim
#:   (a UNION of one arm per owned partition, ~10 ms to plan) every time unless told to keep
#:   the generic plan. Every ringwork statement is written so its generic plan is the right one
#:   (literals where partial indexes need them; tests/integration/test_store_explain.py).
#: * A process paused (SIGSTOP, a VM freeze) inside a transaction would keep its row locks and
#:   block the leader's epoch bumps forever; the server aborts such a transaction after 2 s
#:   of silence. Every ringwork transaction is a statement or two sent back to back.
PG_SESSION_OPTIONS = (
    "-c jit=off -c plan_cache_mode=force_generic_plan -c idle_in_transaction_session_timeout=2000"
)

_PG_ALIASES = {"postgres", "postgresql", "postgresql+psycopg", "postgres+psycopg"}
_SQLITE_ALIASES = {"sqlite", "sqlite+pysqlite"}


def _cache_long_statements() -> None:
    """Let psycopg cache the conversion of our long claim statement.

    psycopg re-parses (``%(name)s`` -> ``$n``) any statement longer than 4 KiB or with more
    than 50 parameters on *every* execution; the claim was 10-40 KiB when it had one UNION ALL
    arm per owned partition, and parsing it cost 0.5-1 ms of CPU per claim -- the largest
    single item in a worker's profile then. The limits are module constants of psycopg's
    query layer; if a future psycopg renames them this does nothing and only speed is lost.
    """
    from psycopg import _queries

    if isinstance(getattr(_queries, "MAX_CACHED_STATEMENT_LENGTH", None), int):
        _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH, 1 << 17)
    if isinstance(getattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", None), int):
        _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, 512)


def normalize_url(url: str | URL) -> URL:
    """Parse and check a database URL, rewriting PostgreSQL spellings to psycopg 3.

    Raises :class:`DatabaseURLError` with a one-line message for anything we cannot use.
    """
    try:
        parsed = sa.make_url(url)
    except (exc.ArgumentError, ValueError) as e:
        raise DatabaseURLError(f"malformed database URL {str(url)!r}: {e}") from None
    name = parsed.drivername
    if name in _PG_ALIASES:
        return parsed.set(drivername="postgresql+psycopg")
    if name in _SQLITE_ALIASES:
        if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
            raise DatabaseURLError(
                "in-memory SQLite is not supported (every connection would see its own "
                "database); use a file, e.g. sqlite:///ringwork.db"
            )
        return parsed.set(drivername="sqlite")
    safe = parsed.render_as_string(hide_password=True)
    raise DatabaseURLError(
        f"unsupported database URL {safe!r}: ringwork supports sqlite:///PATH and "
        "postgresql://USER@HOST/DB (driver psycopg 3)"
    )


def create_engine(url: str | URL) -> Engine:
    """A small-pool engine with our SQLite pragmas and BEGIN handling. Touches no database."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise DatabaseURLError(
                f"SQLite {sqlite3.sqlite_version} is too old; ringwork needs 3.35 or newer"
            )
        engine = sa.create_engine(
            parsed,
            pool_size=4,
            max_overflow=4,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", sqlite_on_connect)
        event.listen(engine, "begin", sqlite_on_begin)
        return engine
    _cache_long_statements()
    engine = sa.create_engine(parsed, pool_size=4, max_overflow=4, pool_recycle=1800)

    def connect_as_ours(
        dialect: Dialect, _record: ConnectionPoolEntry, cargs: list[Any], cparams: dict[str, Any]
    ) -> None:
        # SQLAlchemy's do_connect hook: the pool connects with pg_connect_kwargs too.
        kwargs = pg_connect_kwargs(dialect, parsed)
        cargs.clear()
        cparams.clear()
        cparams.update(kwargs)

    event.listen(engine, "do_connect", connect_as_ours)
    return engine


def pg_connect_kwargs(dialect: Dialect, url: URL) -> dict[str, Any]:
    """The keyword arguments of every psycopg connection ringwork makes to ``url``.

    The pool's (:func:`create_engine`), the LISTEN connection's and the loop claimer's alike:
    the URL as SQLAlchemy's psycopg dialect translates it (with the dialect's type adapters),
    plus our session options (:data:`PG_SESSION_OPTIONS`, after any the URL gives), a 10 s
    connect timeout and ``application_name``.
    """
    cargs, cparams = dialect.create_connect_args(url)
    options = " ".join(filter(None, [cparams.get("options"), PG_SESSION_OPTIONS]))
    return {
        **cparams,
        "conninfo": cargs[0] if cargs else "",
        "options": options,
        "connect_timeout": 10,
        "application_name": "ringwork",
    }


@contextmanager
def begin(engine: Engine, *, write: bool) -> Iterator[sa.Connection]:
    """A connection in a transaction; ``write``: SQLite takes the write lock at BEGIN."""
    with engine.connect() as conn:
        if write and engine.dialect.name == "sqlite":
            conn.execution_options(**{SQLITE_IMMEDIATE: True})
        with conn.begin():
            yield conn


@contextmanager
def transaction(engine: Engine, *, write: bool = False) -> Iterator[sa.Connection]:
    """:func:`begin`, driver errors coming out as :class:`ringwork.errors.DatabaseError`."""
    with translated(), begin(engine, write=write) as conn:
        yield conn


@contextmanager
def one_statement(engine: Engine) -> Iterator[sa.Connection]:
    """A write that is a single statement: its own transaction, without BEGIN and COMMIT.

    On PostgreSQL the statement runs in autocommit, which is still one atomic, durable
    transaction (it returns only once its commit is flushed), but one round trip instead of
    three (psycopg sends BEGIN, the statement and COMMIT separately). SQLite has no round
    trips to save and keeps ``BEGIN IMMEDIATE`` (a deferred write could fail to upgrade).
    """
    if engine.dialect.name != "postgresql":
        with transaction(engine, write=True) as conn:
            yield conn
        return
    with translated(), engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def _enter_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another process holds the file's lock.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked"
    at once (no busy handler, to avoid a deadlock) when several processes open a fresh file
    together -- three workers starting on a new database, or concurrent migrations.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)  # a back-off between attempts, not a wait for a condition
            delay = min(delay * 2, 0.1)


def sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Switch off the driver's implicit BEGIN so sqlite_on_begin decides (SQLAlchemy recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enter_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def sqlite_on_begin(conn: sa.Connection) -> None:
    if conn.get_execution_options().get(SQLITE_IMMEDIATE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def describe(engine: Engine) -> str:
    """The engine's URL without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_TRANSIENT: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
)


def _psycopg_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(all psycopg errors, its transient ones) -- empty while psycopg is not loaded.

    psycopg is imported only by PostgreSQL engines; a SQLite worker never pays its ~20 MB.
    """
    pg = sys.modules.get("psycopg")
    if pg is None:
        return (), ()
    return (pg.Error,), (pg.OperationalError, pg.InterfaceError)
# sqlite3 raises OperationalError for "no such table" and syntax errors too; only these pass.
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "readonly", "full")


def _is_transient(error: BaseException) -> bool:
    cause = getattr(error, "orig", None) or error
    if isinstance(cause, sqlite3.Error):
        text = str(cause).lower()
        return isinstance(cause, sqlite3.OperationalError) and any(
            marker in text for marker in _SQLITE_TRANSIENT
        )
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _TRANSIENT + _psycopg_errors()[1])


#: SQLite's text for SQLITE_FULL; what it means for a ringwork database, said once.
_SQLITE_FULL = "database or disk is full"
_SQLITE_FULL_HINT = (
    "the disk holding the SQLite database has no space left; nothing was written and the "
    "database is intact: free space, then retry"
)


def translate(error: BaseException, where: str = "") -> RingworkError:
    """Map a driver/SQLAlchemy exception to our tree (transient outages are retryable)."""
    if isinstance(error, RingworkError):
        return error
    cls = DatabaseUnavailable if _is_transient(error) else DatabaseError
    prefix = f"{where}: " if where else ""
    text = _first_line(error)
    if text == _SQLITE_FULL:
        text = f"{text} ({_SQLITE_FULL_HINT})"
    return cls(f"{prefix}{text}")


@contextmanager
def translated(where: str = "") -> Iterator[None]:
    """Re-raise driver errors as :class:`ringwork.errors.DatabaseError` subclasses."""
    try:
        yield
    except (exc.SQLAlchemyError, sqlite3.Error) as e:
        raise translate(e, where) from e
    except Exception as e:
        if isinstance(e, _psycopg_errors()[0]):
            raise translate(e, where) from e
        raise
