"""Noticing cancel requests for the jobs this worker runs.

``app.cancel(id)`` on a running job only records the request on the job's row
(``cancel_requested_at``); the worker running it must notice. While it runs jobs, the watch
asks the database every :data:`CHECK_INTERVAL` which of them have a request -- one
primary-key probe per job in flight, and no query at all while nothing runs -- and hands each
to :meth:`.Executor.request_cancel`. So a worker learns of a cancel within
``CHECK_INTERVAL`` plus one query, on SQLite and PostgreSQL alike.

Why a poll rather than the wake-up channels: the enqueue wake-ups (NOTIFY, UDP nudges) name
partitions to claim from and are dropped when a socket is busy or the LISTEN connection is
down; a cancel carried that way would need its own payload, a delivery that may be lost, and a
backstop anyway. The backstop alone meets the bound, costs ~2 reads a second per busy worker,
and cannot miss a request.

Thread: the worker's event loop; the query runs on the database threads. Failures are the
database's outages: logged by the pump's writes already, here only skipped until the next
check (the request stays on the row).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ringwork.errors import DatabaseError
from ringwork.log import log_event
from ringwork.worker.database import Database
from ringwork.worker.executor import Executor

#: Seconds between two checks while jobs run: a cancel is noticed within this (plus a query).
CHECK_INTERVAL = 0.5


class CancelWatch:
    """Polls ``reads.cancels_requested(ids)`` for the executor's running jobs."""

    def __init__(self, node_id: str, reads: Any, executor: Executor, db: Database,
                 interval: float = CHECK_INTERVAL) -> None:
        self.node_id = node_id
        #: Anything with ``cancels_requested(ids) -> ids``: the app's store, or a test twin.
        self.reads = reads
        self.executor = executor
        self.db = db
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def check(self) -> list[int]:
        """One check: the ids whose cancel reached the executor now."""
        ids = self.executor.running_ids()
        if not ids:
            return []
        try:
            requested = await self.db.timed("cancel_check", self.reads.cancels_requested, ids)
        except DatabaseError:
            return []  # an outage: the request stays on the row for the next check
        seen = [i for i in requested if self.executor.request_cancel(i)]
        if seen:
            log_event("cancel_requested", node=self.node_id, jobs=",".join(map(str, seen)))
        return seen

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # never let the watch die: the next check tries again
                log_event("cancel_check_failed", node=self.node_id, error=repr(exc))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
