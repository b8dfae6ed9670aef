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

from collections.abc import Callable, Mapping, Sequence

import sqlalchemy as sa

from ringwork.job import Job, NewJob, Outcome
from ringwork.store import claim, enqueue, external, jobs
from ringwork.store.chores import Chores
from ringwork.store.cluster_calls import ClusterCalls
from ringwork.store.inspection import Inspection


class Store(Inspection, ClusterCalls, Chores):
    """Jobs, referee and registry of one cluster in one SQL database.

    This class holds the job writes of the hot path; its bases hold the rest by concept
    (:mod:`.base` the engine and transactions, :mod:`.inspection`, :mod:`.cluster_calls`,
    :mod:`.chores`).
    """

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
