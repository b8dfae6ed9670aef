"""The store facade: one object per process that the runtime, the CLI and the App talk to.

It owns the engine and decides the transaction boundaries (which calls are one autocommit
statement, which a transaction, which take SQLite's write lock up front; :mod:`.engine` runs
them and translates driver errors into :mod:`ringwork.errors`), and delegates the SQL, by
concept, to :mod:`.enqueue`, :mod:`.claim` (claim and complete), :mod:`.jobs` (the rest of a
job's life, inspection), :mod:`.referee` (term, epochs) and :mod:`.registry` (node rows). It
implements :class:`ringwork.protocol.referee.Referee`. Constructing it touches no database; the
first call (or :meth:`open`) connects, migrates and makes sure the cluster exists.

Threads: one ``Store`` is shared by every thread of a process, and every method is safe to call
from any of them (the engine's pool hands each call its own connection; :meth:`open` is locked).
In a worker: the database pool threads (``ringwork-db``) run the job writes (``exchange``,
``claim``, ``fail``, ``release_unknown``) -- or, with a node child process, its
``ringwork-store`` thread does; the node's protocol thread runs the referee and registry calls;
the event loop's default executor runs :meth:`listen`; application threads run ``enqueue`` and
the reads. :meth:`claimer` returns an object for the event loop thread alone.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ringwork.errors import ConfigurationError
from ringwork.job import AttemptRecord, Job, JobRecord, NewJob, Outcome
from ringwork.protocol.referee import NodeRecord, Ownership, TermRecord
from ringwork.store import (
    backlog,
    claim,
    cron,
    enqueue,
    external,
    jobs,
    migrate,
    reads,
    referee,
    registry,
    restarts,
    retention,
    wait,
)
from ringwork.store.aio import AsyncJobs
from ringwork.store.claim import AsyncClaimer
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


class Store:
    """Jobs, referee and registry of one cluster in one SQL database."""

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

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    # -- jobs -----------------------------------------------------------------------------------

    def enqueue(self, jobs_: Sequence[NewJob]) -> list[int]:
        """Insert jobs; their ids in input order (an unfinished duplicate's id when deduped)."""
        if not jobs_:
            return []
        self.check_partitions(jobs_)
        # A few jobs (App.enqueue's one, above all) are a single INSERT statement: run it as its
        # own transaction, one round trip, since it sits on the enqueue-to-start path.
        few = len(jobs_) < enqueue.COPY_MIN_ROWS
        with self._one_statement() if few else self._tx(write=True) as conn:
            return enqueue.enqueue(conn, self.dialect, self.cluster, self.channel, jobs_)

    def enqueue_in(
        self,
        connection: object,
        jobs_: Sequence[NewJob],
        wake: Callable[[set[int]], None],
        *,
        copy: bool = True,
    ) -> list[int]:
        """Insert jobs inside the transaction of the caller's ``connection``, which ringwork
        never commits, rolls back or closes (:mod:`.external`); ``wake`` is called with the
        partitions once it commits, on SQLite (PostgreSQL's NOTIFY rides on the commit)."""
        self.check_partitions(jobs_)

        def opened() -> sa.Dialect | None:
            # SQLite: opening writes (the migration, the cluster row) and would wait for the
            # write lock that the caller's transaction may already hold after its own writes:
            # a 5 s stall, then an error. The INSERT needs only the schema; the workers made it.
            if self.dialect == "sqlite" and not self.is_open:
                return None
            return self.engine.dialect

        return external.enqueue_external(
            connection, self.url, self.cluster, self.channel, jobs_, wake, opened, copy=copy
        )

    def check_partitions(self, jobs_: Sequence[NewJob]) -> None:
        """Every job's partition is one of this cluster's (a ``NewJob`` can say anything)."""
        for j in jobs_:
            if not 0 <= j.partition < self.partitions:
                raise ValueError(f"partition {j.partition} out of range 0..{self.partitions - 1}")

    def claim(self, node_id: str, owned: Mapping[int, int], limit: int,
              rooms: Mapping[str, int] | None = None) -> list[Job]:
        """Claim runnable jobs of partitions ``node_id`` owns at exactly the given epochs;
        ``rooms``: how many more jobs of each limited task (``concurrency=``) may start."""
        if limit <= 0 or not owned:
            return []
        with self._one_statement() if not rooms else self._tx(write=True) as conn:
            return claim.claim(conn, self.dialect, self.cluster, node_id, owned, limit, rooms)

    def complete(self, node_id: str, done: Sequence[tuple[int, int]],
                 results: Mapping[int, str] | None = None) -> list[int]:
        """Mark ``(job_id, token)`` pairs succeeded; returns the ids that were fenced.
        ``results``: job id -> result JSON text, for the jobs that keep one."""
        if not done:
            return []
        with self._tx(write=True) as conn:
            return claim.complete(conn, self.dialect, self.cluster, node_id, done, results,
                                  self.results_channel)

    def exchange(
        self, node_id: str, done: Sequence[tuple[int, int]], owned: Mapping[int, int], limit: int,
        rooms: Mapping[str, int] | None = None,
        results: Mapping[int, str] | None = None,
    ) -> tuple[list[int], list[Job]]:
        """:meth:`complete` then :meth:`claim` in ONE transaction: the worker's hot path.

        One commit (one fsync) per round instead of two, and an ordered key's next job is
        claimable in the same round that completed its predecessor. Returns (fenced ids, jobs).
        ``results``: as :meth:`complete`.
        """
        claiming = limit > 0 and bool(owned)
        if not done and not claiming:
            return [], []
        if not done:  # a claim alone: one statement (an idle worker woken by an enqueue)
            return [], self.claim(node_id, owned, limit, rooms)
        with self._tx(write=True) as conn:
            fenced = claim.complete(conn, self.dialect, self.cluster, node_id, done, results,
                                    self.results_channel)
            claimed = (
                claim.claim(conn, self.dialect, self.cluster, node_id, owned, limit, rooms)
                if claiming
                else []
            )
            return fenced, claimed

    def release_unknown(self, node_id: str, known: Sequence[int]) -> list[int]:
        """Re-queue ``running`` jobs claimed by ``node_id`` other than ``known``; their ids."""
        with self._tx(write=True) as conn:
            return jobs.release_unknown(conn, self.dialect, self.cluster, node_id, known)

    def abandon(self, node_id: str, claims: Sequence[tuple[int, int]] | None,
                error: str = jobs.ABANDONED) -> list[int]:
        """Hand back jobs ``node_id`` will not finish (``None``: all it runs); the ids."""
        with self._tx(write=True) as conn:
            return jobs.abandon(conn, self.dialect, self.cluster, node_id, claims, error)

    def fail(
        self,
        node_id: str,
        job_id: int,
        token: int,
        error: str,
        *,
        retry_delay: float | None,
        cancelled: bool = False,
    ) -> Outcome:
        """Record a failed attempt; retry after ``retry_delay`` s if attempts remain, else dead;
        ``cancelled``: the attempt ended on a cancel request (never retried)."""
        with self._tx(write=True) as conn:
            return jobs.fail(
                conn, self.dialect, self.cluster, node_id, job_id, token, error, retry_delay,
                cancelled,
            )

    def cancels_requested(self, ids: Sequence[int]) -> list[int]:
        """Which of the running jobs ``ids`` have a cancel requested (the worker's check)."""
        if not ids:
            return []
        with self._tx() as conn:
            return jobs.cancels_requested(conn, self.cluster, ids)

    def get_job(self, job_id: int) -> JobRecord | None:
        with self._tx() as conn:
            return reads.get_job(conn, self.cluster, job_id)

    def get_attempts(self, job_id: int) -> list[AttemptRecord]:
        """The job's recorded attempts, oldest first (the one running now is not among them)."""
        with self._tx() as conn:
            return reads.get_attempts(conn, self.cluster, job_id)

    def wait(self, job_id: int, timeout: float | None = None) -> JobRecord:
        """The job once finished; :class:`~ringwork.errors.WaitTimeout` after ``timeout`` s."""
        return wait.wait(self, job_id, timeout)

    async def wait_async(self, job_id: int, timeout: float | None = None) -> JobRecord:
        return await wait.wait_async(self, job_id, timeout)

    def list_jobs(
        self, *, state: str | None = None, task: str | None = None, limit: int = 50
    ) -> list[JobRecord]:
        with self._tx() as conn:
            return reads.list_jobs(conn, self.cluster, str(state) if state else None, task, limit)

    def cancel(self, job_id: int) -> str:
        """``"cancelled"`` (it was queued) or ``"requested"`` (running: its worker ends it)."""
        with self._tx(write=True) as conn:
            return jobs.cancel(conn, self.dialect, self.cluster, job_id)

    def cancel_task(self, task: str) -> tuple[int, int]:
        """Queued jobs of ``task`` cancelled, running ones asked to end: the two counts."""
        with self._tx(write=True) as conn:
            return jobs.cancel_task(conn, self.dialect, self.cluster, task)

    def retry(self, job_id: int) -> None:
        with self._tx(write=True) as conn:
            jobs.retry(conn, self.dialect, self.cluster, job_id)

    def retry_all(self, state: str = "dead", task: str | None = None) -> tuple[int, int]:
        """Every ``state`` job (of ``task``) queued again: ``(retried, skipped)``."""
        with self._tx(write=True) as conn:
            return jobs.retry_all(conn, self.dialect, self.cluster, state, task)

    def counts_by_state(self) -> dict[str, int]:
        with self._tx() as conn:
            return reads.counts_by_state(conn, self.cluster)

    def status_counts(self, cap: int = reads.STATUS_CAP) -> tuple[dict[str, int], list[str]]:
        """Exact queued and running counts, finished states counted up to ``cap``:
        ``(counts, capped states)``. Cheap on any table size; exact counts of everything are
        :meth:`counts_by_state`."""
        with self._tx() as conn:
            return reads.status_counts(conn, self.dialect, self.cluster, cap)

    def blocked_keys(self, limit: int = reads.BLOCKED_KEYS_SHOWN) -> list[tuple[str, str, int]]:
        """``(task, key, dead job id)`` of keys held by a dead ``block_key_on_dead`` job (up to
        ``limit`` + 1)."""
        with self._tx() as conn:
            return reads.blocked_keys(conn, self.cluster, limit)

    def backlog_by_partition(self) -> dict[int, int]:
        with self._tx() as conn:
            return reads.backlog_by_partition(conn, self.cluster)

    def owned_backlog(self, partitions: Sequence[int]) -> dict[int, tuple[int, float | None]]:
        """Due jobs (capped) and the oldest one's wait, of ``partitions`` (``backlog.py``)."""
        with self._tx() as conn:
            return backlog.owned_backlog(conn, self.dialect, self.cluster, partitions)

    # -- referee (ringwork.protocol.referee.Referee) ---------------------------------------------

    def read_term(self) -> TermRecord:
        with self._tx() as conn:
            return referee.read_term(conn, self.cluster)

    def claim_leadership(self, node_id: str, seen_term: int) -> int | None:
        with self._tx(write=True) as conn:
            return referee.claim_leadership(conn, self.cluster, node_id, seen_term)

    def assign(
        self,
        leader: str,
        term: int,
        owners: Mapping[int, str | None],
        keep: Collection[str] = (),
        stale_after: float = math.inf,
    ) -> dict[int, int] | None:
        for p in owners:
            if not 0 <= p < self.partitions:
                raise ValueError(f"partition {p} out of range 0..{self.partitions - 1}")
        with self._tx(write=True) as conn:
            return referee.assign(conn, self.dialect, self.cluster, leader, term, owners, keep,
                                  stale_after)

    def requeue_orphans(
        self, leader: str, term: int, keep: Collection[str], stale_after: float
    ) -> int | None:
        with self._tx(write=True) as conn:
            return referee.requeue_orphans(conn, self.dialect, self.cluster, leader, term, keep,
                                           stale_after)

    def read_partitions(self) -> dict[int, Ownership]:
        with self._tx() as conn:
            return referee.read_partitions(conn, self.cluster)

    # -- node registry --------------------------------------------------------------------------

    def register_node(
        self,
        node_id: str,
        endpoint: str,
        *,
        pub_endpoint: str | None = None,
        wake_endpoint: str | None = None,
    ) -> int:
        with self._tx(write=True) as conn:
            return registry.register_node(
                conn, self.dialect, self.cluster, node_id, endpoint, pub_endpoint, wake_endpoint
            )

    def register_counted(
        self,
        node_id: str,
        endpoint: str,
        *,
        pub_endpoint: str | None = None,
        wake_endpoint: str | None = None,
    ) -> registry.Registration:
        """:meth:`register_node`, also returning the cluster counter it bumped (a node's
        incarnation comes from it: :mod:`ringwork.store.registry`)."""
        with self._tx(write=True) as conn:
            return registry.register_counted(
                conn, self.dialect, self.cluster, node_id, endpoint, pub_endpoint, wake_endpoint
            )

    def requeue_restarted(self, node_id: str) -> int:
        """Re-queue the jobs a named node's previous process left running (:mod:`.restarts`)."""
        with self._tx(write=True) as conn:
            return restarts.requeue_restarted(conn, self.dialect, self.cluster, node_id)

    def touch_node(self, node_id: str, *, joined: bool | None = None) -> bool:
        """Refresh the node's ``last_seen``; False if it has no row (it was pruned)."""
        with self._tx(write=True) as conn:
            return registry.touch_node(conn, self.dialect, self.cluster, node_id, joined)

    def mark_joined(self, node_id: str, joined: bool) -> None:
        with self._tx(write=True) as conn:
            registry.mark_joined(conn, self.cluster, node_id, joined)

    def deregister_node(self, node_id: str) -> None:
        with self._tx(write=True) as conn:
            registry.deregister_node(conn, self.cluster, node_id)

    def list_nodes(self) -> list[NodeRecord]:
        with self._tx() as conn:
            return registry.list_nodes(conn, self.dialect, self.cluster)

    # -- retention ------------------------------------------------------------------------------

    def prune_jobs(
        self, state: str, older_than: float, *, limit: int = retention.BATCH_ROWS
    ) -> int:
        """Delete up to ``limit`` jobs in ``state`` finished at least ``older_than`` seconds ago
        (by the database's clock), in one short transaction of their own; how many went."""
        with self._tx(write=True) as conn:
            return retention.prune_jobs(
                conn, self.dialect, self.cluster, state, older_than, limit
            )

    def prune_nodes(self, older_than: float, *, keep: str | None = None) -> list[str]:
        """Delete registry rows untouched for ``older_than`` seconds (not ``keep``'s)."""
        with self._tx(write=True) as conn:
            return retention.prune_nodes(conn, self.dialect, self.cluster, older_than, keep)

    # -- periodic tasks -------------------------------------------------------------------------

    def cron_state(
        self, prefixes: Mapping[str, str]
    ) -> tuple[datetime, dict[str, dict[str, Any]]]:
        """The database's time and, per ``task -> dedupe-key prefix``, the newest periodic job
        (``id``, ``state``, ``dedupe_key``), read together (:mod:`.cron`)."""
        with self._tx() as conn:
            return cron.database_now(conn, self.dialect), cron.newest(conn, self.cluster, prefixes)

    def cron_round(
        self,
        prefixes: Mapping[str, str],
        plan: Callable[[datetime, dict[str, dict[str, Any]]], Sequence[NewJob]],
    ) -> tuple[datetime, list[NewJob], list[int]]:
        """One round of the leader's cron chore: read the database's time and each task's newest
        tick, ``plan`` the ticks' jobs from them, insert those -- with no other round able to
        insert between the read and the insert, so a tick whose job already finished is never
        enqueued again, even by two leaders at once. ``(now, jobs, ids)``.

        PostgreSQL: one transaction under an advisory lock that only cron rounds take. SQLite:
        the scan for the newest ticks runs before the write lock (a large table costs the claim
        nothing); under the lock only the rows inserted since are read (a primary-key range:
        SQLite's ids are given and committed in order, one writer at a time).
        """
        if self.dialect == "postgresql":
            with self._tx() as conn:
                cron.lock_rounds(conn, self.cluster)
                now = cron.database_now(conn, self.dialect)
                new = list(plan(now, cron.newest(conn, self.cluster, prefixes)))
                ids = enqueue.enqueue(conn, self.dialect, self.cluster, self.channel, new)
            return now, new, ids
        with self._tx() as conn:
            seen = cron.max_id(conn)
            newest = cron.newest(conn, self.cluster, prefixes)
        with self._tx(write=True) as conn:
            now = cron.database_now(conn, self.dialect)
            newest = cron.merged(newest, cron.newer(conn, self.cluster, prefixes, seen))
            new = list(plan(now, newest))
            ids = enqueue.enqueue(conn, self.dialect, self.cluster, self.channel, new)
        return now, new, ids

    # -- wake-ups -------------------------------------------------------------------------------

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
