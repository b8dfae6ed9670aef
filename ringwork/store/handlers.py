"""Connections for transactional handlers: the user's writes and the job's completion, together.

A task declared ``transactional=True`` runs its handler inside a transaction on the app's
database and the worker writes the job's completion -- fenced by the claim token and the attempt
(``claim.attempt_completion``) -- in that same transaction before it commits
(:mod:`ringwork.worker.transactional`).
These connections come from engines of their own, not from the store's pool:

* one connection is held for a handler's whole run, so the pool is sized to the worker's
  concurrency (the store's small pool would run dry and stall the claim path);
* the handler's own queries should plan as the user expects: no ``plan_cache_mode`` or
  ``jit`` override, which ringwork's connections carry for its own statements;
* ringwork's 2 s ``idle_in_transaction_session_timeout`` would abort any handler that spends
  two seconds between statements; each transaction sets its own instead (:func:`idle_limit`).

SQLite keeps the store's pragmas, with a deferred ``BEGIN``: the handler's transaction takes the
database's single write lock at its first write and holds it until the commit, and every other
writer -- the cluster's own bookkeeping included -- waits meanwhile. So on SQLite a handler
should write last and be quick about it; one that reads, then writes after another connection
wrote, fails that attempt with "database is locked" and is retried (docs/guarantees.md).
Async handlers get an ``AsyncConnection``: psycopg's async driver on PostgreSQL, aiosqlite on
SQLite.

Threads: engines are thread-safe; sync connections are used on handler threads, async ones on
the worker's event loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

from ringwork.store.engine import SQLITE_BUSY_TIMEOUT_MS, sqlite_on_begin, sqlite_on_connect

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

#: How long a transactional handler's transaction may sit idle between statements when its task
#: has no timeout (PostgreSQL): longer than any sane pause, short enough that a frozen process
#: does not hold its row locks forever.
DEFAULT_IDLE = 60.0
#: The idle limit once the job's completion is written (ringwork's own connections' 2 s): the
#: completion holds the job row's lock until the commit, and the leader's re-queue of a dead
#: worker's jobs waits for that lock inside the referee's transaction, with every worker behind
#: it. A process frozen between the completion and the commit must not stall them for a minute.
COMPLETED_IDLE_MS = 2000


def handler_engine(url: URL, size: int) -> Engine:
    """A sync engine for ``size`` handlers at once, on the store's database."""
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            url, pool_size=size, max_overflow=0,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", sqlite_on_connect)
        event.listen(engine, "begin", sqlite_on_begin)
        return engine
    return sa.create_engine(
        url, pool_size=size, max_overflow=0, pool_recycle=1800, pool_pre_ping=True,
        connect_args={"application_name": "ringwork-handler", "connect_timeout": 10},
    )


def handler_async_engine(url: URL, size: int) -> AsyncEngine:
    """The async twin of :func:`handler_engine` (psycopg's async driver; aiosqlite). Imported
    here: ``sqlalchemy.ext.asyncio`` costs start-up time that apps without one do not pay."""
    from sqlalchemy.ext.asyncio import create_async_engine

    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url.set(drivername="sqlite+aiosqlite"), pool_size=size, max_overflow=0,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine.sync_engine, "connect", sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", sqlite_on_begin)
        return engine
    return create_async_engine(
        url, pool_size=size, max_overflow=0, pool_recycle=1800, pool_pre_ping=True,
        connect_args={"application_name": "ringwork-handler", "connect_timeout": 10},
    )


def idle_limit(dialect: str, timeout: float | None) -> tuple[str, dict[str, Any]] | None:
    """The statement that bounds this transaction's idle time (PostgreSQL; None elsewhere):
    the task's timeout plus a margin, or :data:`DEFAULT_IDLE`."""
    if dialect != "postgresql":
        return None
    seconds = DEFAULT_IDLE if timeout is None else timeout + 5.0
    ms = min(2**31 - 1, math.ceil(seconds * 1000))
    return _set_idle(ms)


def completed_idle_limit(dialect: str) -> tuple[str, dict[str, Any]] | None:
    """The statement that brings the idle limit down to :data:`COMPLETED_IDLE_MS`, run just
    before the completion (PostgreSQL; None elsewhere)."""
    return _set_idle(COMPLETED_IDLE_MS) if dialect == "postgresql" else None


def _set_idle(ms: int) -> tuple[str, dict[str, Any]]:
    # SET LOCAL takes no bind parameter; set_config(..., true) is the same, parameterised.
    return "SELECT set_config('idle_in_transaction_session_timeout', %(ms)s, true)", {
        "ms": str(ms)}
