"""What every part of the store facade stands on: the engine, opened once, and the transaction
boundaries.

:class:`StoreBase` owns the engine (created on the first call, or :meth:`~StoreBase.open`, which
also migrates and makes sure the cluster exists) and hands the facade's parts -- the job writes in
:mod:`.store`, the reads and admin actions in :mod:`.inspection`, the referee and registry in
:mod:`.cluster_calls`, the leader's chores in :mod:`.chores` -- the two ways a call may touch the
database: ``_tx`` (a transaction; ``write=True`` takes SQLite's write lock up front) and
``_one_statement`` (one autocommit statement, one round trip). It also makes the connections
that live on an event loop (:meth:`~StoreBase.claimer`, :meth:`~StoreBase.aio`) or listen
(:meth:`~StoreBase.listen`).

Threads: shared by every thread of a process; :meth:`open` is locked, and the engine's pool hands
each call its own connection. :meth:`claimer` returns an object for one event loop thread alone.
"""

from __future__ import annotations

import functools
import threading
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ringwork.errors import ConfigurationError
from ringwork.store import migrate, referee
from ringwork.store.aio import AsyncJobs
from ringwork.store.claim_async import AsyncClaimer
from ringwork.store.engine import (
    begin,
    create_engine,
    describe,
    normalize_url,
    one_statement,
    pg_connect_kwargs,
    transaction,
    translated,
)
from ringwork.store.listen import Listener, channel_for, results_channel_for


class StoreBase:
    """One cluster's engine and transactions; the parts of :class:`~ringwork.store.Store`
    build on it."""

    def __init__(
        self, url: str, *, cluster: str = "default", partitions: int = 64, migrate: bool = True
    ) -> None:
        if partitions < 1:
            raise ConfigurationError(f"partitions must be at least 1, not {partitions}")
        if not cluster:
            raise ConfigurationError("cluster name must not be empty")
        self.url = url
        self.cluster = cluster
        self.partitions = partitions
        self.migrate = migrate
        self.channel = channel_for(cluster)
        #: Notified with the ids of finished ``store_result`` jobs (PostgreSQL; ``app.wait``).
        self.results_channel = results_channel_for(cluster)
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._aio: AsyncJobs | None = None

    def __repr__(self) -> str:
        return f"Store({describe(self._engine) if self._engine else '...'}, {self.cluster!r})"

    @functools.cached_property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"`` (from the URL; no connection needed)."""
        return str(normalize_url(self.url).get_backend_name())

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, migrate (or check the schema), ensure the cluster. Idempotent, thread-safe."""
        if self._engine is not None:
            return
        with self._lock:
            if self._engine is not None:
                return
            engine = create_engine(self.url)
            try:
                with translated(f"cannot use database {describe(engine)}"):
                    if self.migrate:
                        migrate.upgrade_engine(engine)
                    else:
                        migrate.check_engine(engine)
                    with begin(engine, write=True) as conn:
                        referee.ensure_cluster(conn, self.dialect, self.cluster, self.partitions)
            except BaseException:
                engine.dispose()
                raise
            self._engine = engine

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` has run (an asyncio caller opens the store in a thread first)."""
        return self._engine is not None

    def close(self) -> None:
        with self._lock:
            if self._aio is not None:
                self._aio.close()
                self._aio = None
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (opens the store). For tests and tools, not the hot path."""
        self.open()
        assert self._engine is not None
        return self._engine

    def _tx(self, *, write: bool = False) -> AbstractContextManager[sa.Connection]:
        return transaction(self.engine, write=write)

    def _one_statement(self) -> AbstractContextManager[sa.Connection]:
        return one_statement(self.engine)

    # -- connections of their own ------------------------------------------------------------

    def claimer(self) -> AsyncClaimer | None:
        """A claim that runs on an asyncio loop (PostgreSQL; ``None`` on SQLite).

        Its own connection, made like the pool's; it connects on first use.
        """
        engine = self.engine
        if engine.dialect.name != "postgresql":
            return None
        return AsyncClaimer(engine.dialect, pg_connect_kwargs(engine.dialect, engine.url),
                            self.cluster)

    def aio(self) -> AsyncJobs | None:
        """Enqueue and ``get_job`` for an asyncio loop (PostgreSQL; ``None`` on SQLite).

        One per store, its connections made like the pool's; it needs the store open (call
        :meth:`open` off the loop first: opening may migrate).
        """
        engine = self.engine
        if engine.dialect.name != "postgresql":
            return None
        with self._lock:
            if self._aio is None:
                self._aio = AsyncJobs(
                    engine.dialect, pg_connect_kwargs(engine.dialect, engine.url),
                    self.cluster, self.channel,
                )
            return self._aio

    def listen(self) -> Listener | None:
        """A LISTEN connection for this cluster's enqueue notifications (``None`` on SQLite).

        Made like the pool's connections (:func:`~ringwork.store.engine.pg_connect_kwargs`);
        it blocks while connecting (up to the connect timeout): call it off the event loop.
        """
        engine = self.engine
        if engine.dialect.name != "postgresql":
            return None
        import psycopg

        kwargs = pg_connect_kwargs(engine.dialect, engine.url)
        with translated("LISTEN connection"):
            conn = psycopg.connect(**kwargs, autocommit=True)
        try:
            return Listener(conn, self.channel, self.partitions)
        except BaseException:
            conn.close()
            raise
