"""A caller's connection: jobs written inside the application's own transaction.

``App.enqueue(..., connection=conn)`` must make the job exist if and only if the caller's
transaction commits -- an order rolled back must not leave its job behind (a "ghost job"), and a
job must never run before the row that caused it is visible. So the job's INSERT runs on the
caller's connection, inside whatever transaction it has (SQLAlchemy and psycopg both begin one
implicitly), and ringwork never commits, rolls back or closes it.

What is accepted (:func:`resolve`):

* a SQLAlchemy ``Connection``; a ``Session`` is resolved to ``session.connection()``, the
  connection of the session's current transaction;
* on PostgreSQL, a raw psycopg 3 ``Connection`` (Django's ``django.db.connection.connection``):
  the same INSERT, compiled by SQLAlchemy's psycopg dialect, runs through it (never COPY: see
  :func:`_via_psycopg`).

Asyncio connections are :mod:`.aio`'s business; this module says so in one line if handed one.

The connection must be on the app's database. The check is cheap, no round trip: the dialect,
then on PostgreSQL the database name and port libpq reports for the connection (or its URL),
on SQLite the database file. A mismatch is one :class:`ConfigurationError` line.

The wake-up. PostgreSQL: the statement's ``pg_notify`` is queued in the caller's transaction and
delivered by the server at its commit, never on rollback -- nothing to do here. SQLite has no
notifications; ringwork nudges the workers by UDP, which must happen *after* the commit (a nudge
before it finds no row and the job waits for the next poll). A ``Session`` has ``after_commit``.
A ``Connection`` has only a ``commit`` event, which SQLAlchemy fires just *before* it asks the
driver to commit, so the hook runs the driver's commit itself at that moment -- the commit the
caller is making, a few microseconds early -- and nudges only if it succeeded; SQLAlchemy's
commit, next, then finds nothing left to do (on failure it tries again and reports the error as
usual, and no nudge is sent). A rollback drops the pending nudge.

Threads: the caller's, the one that owns the connection; hooks run on the thread that commits.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Dialect

from ringwork.errors import ConfigurationError
from ringwork.job import NewJob
from ringwork.log import log_event
from ringwork.store import enqueue
from ringwork.store.engine import normalize_url, translated

Wake = Callable[[set[int]], None]

_ACCEPTED = (
    "a SQLAlchemy Connection or Session (or, on PostgreSQL, a psycopg Connection)"
)


def describe_type(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _loaded(module: str, name: str) -> type | None:
    """A class from a library the caller has imported, without importing it ourselves.

    An object of ``sqlalchemy.orm.Session`` can only exist once ``sqlalchemy.orm`` is loaded;
    the same holds for psycopg. A SQLite app never pays for importing either.
    """
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls if isinstance(cls, type) else None


def is_async_connection(obj: object) -> bool:
    """An asyncio connection or session (SQLAlchemy's or psycopg's): for ``enqueue_async``."""
    kinds = [
        _loaded("sqlalchemy.ext.asyncio", "AsyncConnection"),
        _loaded("sqlalchemy.ext.asyncio", "AsyncSession"),
        _loaded("psycopg", "AsyncConnection"),
    ]
    return any(k is not None and isinstance(obj, k) for k in kinds)


# -- the same-database check -------------------------------------------------------------------


def check_same_database(app_url: str, dialect: str, url: sa.URL | None, info: Any = None) -> None:
    """Raise unless the caller's connection (``url``, and libpq's ``info`` when known) is on
    the app's database ``app_url``. Cheap: nothing is sent to the server."""
    ours = normalize_url(app_url)
    app_dialect = ours.get_backend_name()
    safe = ours.render_as_string(hide_password=True)
    if dialect != app_dialect:
        raise ConfigurationError(
            f"connection= is a {dialect} connection but the app's database is {safe}"
        )
    if dialect == "sqlite":
        theirs = url.database if url is not None else None
        if not theirs or not ours.database or not _same_file(theirs, ours.database):
            raise ConfigurationError(
                f"connection= is on SQLite database {theirs!r}, not the app's {safe}"
            )
        return
    if info is not None:  # psycopg's ConnectionInfo: what libpq actually connected to
        name, port = info.dbname, info.port
    elif url is not None:
        name, port = url.database, url.port
    else:
        return
    if ours.database and name and name != ours.database:
        raise ConfigurationError(
            f"connection= is on PostgreSQL database {name!r}, not the app's {safe}"
        )
    if ours.port and port and int(port) != ours.port:
        raise ConfigurationError(
            f"connection= is on PostgreSQL port {port}, not the app's {safe}"
        )


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


# -- SQLite wake-ups after the commit -----------------------------------------------------------


class _AfterCommit:
    """Partitions waiting for one connection's (or session's) commit, then the nudges.

    One per connection or session, made on its first enqueue and kept in a weak map, so its
    listeners are registered once however many jobs it writes. Pending partitions are kept per
    wake-up callback: two apps (two clusters) may write jobs in one transaction.
    """

    def __init__(self) -> None:
        self.pending: dict[Wake, set[int]] = {}

    def add(self, wake: Wake, partitions: set[int]) -> None:
        self.pending.setdefault(wake, set()).update(partitions)

    def committed(self, *_: object) -> None:
        """Session ``after_commit``: the transaction is committed."""
        self._wake_all()

    def committing(self, conn: sa.Connection) -> None:
        """Connection ``commit``: SQLAlchemy is about to commit; do it, then nudge."""
        if not self.pending:
            return
        try:
            conn.connection.dbapi_connection.commit()  # type: ignore[union-attr]
        except Exception:  # SQLAlchemy's own commit runs next and reports it; no nudge
            self.pending = {}
            return
        self._wake_all()

    def rolled_back(self, *_: object) -> None:
        self.pending = {}

    def _wake_all(self) -> None:
        pending, self.pending = self.pending, {}
        for wake, partitions in pending.items():
            # The commit has happened: whatever a nudge meets must not come out of the
            # caller's commit() as if the commit had failed. The poll covers a lost nudge.
            try:
                wake(partitions)
            except Exception as exc:
                log_event("wake_after_commit_failed", logging.WARNING, error=repr(exc))


_hooks: weakref.WeakKeyDictionary[Any, _AfterCommit] = weakref.WeakKeyDictionary()
_hooks_lock = threading.Lock()  # connections of many threads register at once


def _after_commit(owner: Any, *, session: bool) -> _AfterCommit:
    with _hooks_lock:
        hook = _hooks.get(owner)
        if hook is not None:
            return hook
        hook = _hooks[owner] = _AfterCommit()
    if session:
        event.listen(owner, "after_commit", hook.committed)
        event.listen(owner, "after_rollback", hook.rolled_back)
    else:
        event.listen(owner, "commit", hook.committing)
        event.listen(owner, "rollback", hook.rolled_back)
    return hook


# -- running the enqueue ------------------------------------------------------------------------


def enqueue_external(
    connection: object,
    store_url: str,
    cluster: str,
    channel: str,
    new: Sequence[NewJob],
    wake: Wake,
    opened: Callable[[], Dialect | None],
    *,
    copy: bool = True,
) -> list[int]:
    """Insert ``new`` in ``connection``'s transaction; the ids (see the module docstring).

    ``opened``: opens the app's store (its schema is then migrated) and returns its SQLAlchemy
    dialect, which compiles the statements for a raw psycopg connection (``None``: SQLite,
    left closed); called once the argument's kind is known, so a wrong argument never touches
    a database. ``copy=False`` when the connection cannot ``COPY`` (inside ``run_sync``).
    """
    if connection is None or isinstance(connection, (str, bytes, int, float)):
        raise ConfigurationError(
            f"connection= must be {_ACCEPTED}, not {describe_type(connection)}"
        )
    if is_async_connection(connection):
        raise ConfigurationError(
            f"connection= is an asyncio connection ({describe_type(connection)}): "
            "use enqueue_async / enqueue_many_async with it"
        )
    session_cls = _loaded("sqlalchemy.orm", "Session")
    if session_cls is not None and isinstance(connection, session_cls):
        opened()
        return _via_session(connection, store_url, cluster, channel, new, wake, copy=copy)
    if isinstance(connection, sa.Connection):
        opened()
        return _via_connection(connection, store_url, cluster, channel, new, wake, copy=copy)
    pg_cls = _loaded("psycopg", "Connection")
    if pg_cls is not None and isinstance(connection, pg_cls):
        dialect = opened()
        if dialect is None:
            raise ConfigurationError(
                "connection= is a psycopg (PostgreSQL) connection but the app's database is "
                "SQLite"
            )
        return _via_psycopg(connection, store_url, cluster, channel, new, dialect)
    raise ConfigurationError(f"connection= must be {_ACCEPTED}, not {describe_type(connection)}")


def _checked(conn: sa.Connection, store_url: str) -> str:
    """The connection's dialect name, once it is known to be open and on the app's database."""
    if conn.closed:
        raise ConfigurationError("connection= is closed")
    dialect = conn.dialect.name
    info = None
    if dialect == "postgresql" and conn.dialect.driver in ("psycopg", "psycopg_async"):
        info = getattr(conn.connection.driver_connection, "info", None)
    url = conn.engine.url
    if dialect == "sqlite" and not url.database:  # an engine made with creator=: ask SQLite
        rows = conn.exec_driver_sql("PRAGMA database_list").fetchall()
        url = url.set(database=next((r[2] for r in rows if r[1] == "main"), None))
    check_same_database(store_url, dialect, url, info)
    return dialect


def _via_session(
    session: Any, store_url: str, cluster: str, channel: str, new: Sequence[NewJob],
    wake: Wake, *, copy: bool,
) -> list[int]:
    with translated("connection= (a Session)"):
        try:
            conn = session.connection()
        except sa.exc.InvalidRequestError as exc:  # no bind, or a session in no state for one
            first = str(exc).strip().splitlines()[0]
            raise ConfigurationError(
                f"connection= is a Session that cannot give a connection: {first}"
            ) from None
    dialect = _checked(conn, store_url)
    ids = _run(conn, dialect, cluster, channel, new, copy=copy)
    if dialect == "sqlite":
        _after_commit(session, session=True).add(wake, {j.partition for j in new})
    return ids


def _via_connection(
    conn: sa.Connection, store_url: str, cluster: str, channel: str, new: Sequence[NewJob],
    wake: Wake, *, copy: bool,
) -> list[int]:
    dialect = _checked(conn, store_url)
    ids = _run(conn, dialect, cluster, channel, new, copy=copy)
    if dialect == "sqlite":
        parts = {j.partition for j in new}
        if _committed_already(conn):
            wake(parts)  # autocommit: the INSERT committed as it ran; no commit to wait for
        else:
            _after_commit(conn, session=False).add(wake, parts)
    return ids


def _committed_already(conn: sa.Connection) -> bool:
    """SQLite: is no transaction open after our INSERT (the connection is in autocommit)?

    Asked of SQLite itself (``sqlite3.Connection.in_transaction``), which is right whatever
    mode SQLAlchemy, the engine or the driver were set to; an adapted driver without the
    attribute (aiosqlite's) is taken to be in a transaction.
    """
    raw = conn.connection.dbapi_connection
    return getattr(raw, "in_transaction", True) is False


def _run(
    conn: sa.Connection, dialect: str, cluster: str, channel: str, new: Sequence[NewJob],
    *, copy: bool,
) -> list[int]:
    # COPY goes through the driver connection, which must be psycopg 3's own.
    copy = copy and conn.dialect.driver == "psycopg"
    with translated("enqueue in the caller's transaction"):
        steps = enqueue.enqueue_steps(dialect, cluster, channel, new, copy=copy)
        return enqueue.run_connection(conn, steps)


def _via_psycopg(
    raw: Any, store_url: str, cluster: str, channel: str, new: Sequence[NewJob], dialect: Dialect
) -> list[int]:
    if raw.closed:
        raise ConfigurationError("connection= is closed")
    check_same_database(store_url, "postgresql", None, raw.info)
    from psycopg.rows import dict_row

    # No COPY: its rows carry the transaction's now() as read back through this connection,
    # whose loaders are the caller's (Django's turn timestamptz into naive local time when
    # USE_TZ is off); the INSERT computes every time in the server.
    steps = enqueue.enqueue_steps("postgresql", cluster, channel, new, copy=False)
    with translated("enqueue in the caller's transaction"):
        # In autocommit (Django outside atomic()) a batch of several statements still goes in
        # as one transaction of its own. Otherwise psycopg has begun (or begins at our first
        # statement) the caller's transaction, which we join; raw.transaction() there would
        # COMMIT a transaction it had to begin itself.
        several = raw.autocommit and enqueue.statement_count("postgresql", new) > 1
        scope = raw.transaction() if several else contextlib.nullcontext()
        with scope, raw.cursor(row_factory=dict_row) as cur:
            answer: Any = None
            try:
                while True:
                    step = steps.send(answer)
                    if isinstance(step, enqueue.Query):
                        cur.execute(compiled(step.statement, dialect), step.params)
                        answer = cur.fetchall()
                    else:
                        with cur.copy(step.sql) as out:
                            out.write(step.data)
                        answer = None
            except StopIteration as done:
                ids: list[int] = done.value
                return ids


@functools.lru_cache(maxsize=32)
def compiled(statement: Any, dialect: Dialect) -> str:
    """A statement's text for the psycopg driver (``%(name)s`` placeholders), compiled once."""
    return str(statement.compile(dialect=dialect))
