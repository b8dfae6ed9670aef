"""The store's part for the leader's chores: retention's pruning and the periodic tasks' rounds.

Threads: the leader's ``ringwork-housekeeping`` thread; ``prune_jobs`` also ``ringwork jobs
prune``; ``cron_state`` also ``ringwork cron``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ringwork.job import NewJob
from ringwork.store import cron, enqueue, retention
from ringwork.store.base import StoreBase


class Chores(StoreBase):
    """Pruning and cron rounds, each in short transactions of their own."""

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
