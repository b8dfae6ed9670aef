"""Blocking store calls off the event loop, and the backoff while the database is away.

Database calls are blocking (SQLAlchemy Core, or a pipe to the node process) and run on two
daemon threads, so a slow query never stalls the loop and a hung one never holds up the exit.
An outage costs time but loses nothing: callers keep what they meant to write and try again.

Thread: the loop calls everything here; the calls themselves run on the database threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ringwork.errors import DatabaseError, DatabaseUnavailable, RingworkError
from ringwork.log import log_event
from ringwork.worker.measures import Histograms
from ringwork.worker.threads import DaemonPool

T = TypeVar("T")


class Database:
    """Runs store calls on the database threads; counts consecutive failures for the backoff."""

    def __init__(self, node_id: str, backoff_max: float,
                 round_trips: Histograms | None = None) -> None:
        self.node_id = node_id
        #: Seconds per store call, by the call's name (for ``/metrics``).
        self.round_trips = round_trips
        self.backoff_max = backoff_max
        self.failures = 0  # consecutive failed calls: sets the backoff
        self._pool = DaemonPool(2, "ringwork-db")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        future = self._pool.submit(lambda: fn(*args, **kwargs))
        return await asyncio.wrap_future(future)

    async def timed(self, op: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:meth:`call`, its round trip (as the loop waits it) measured as ``op``."""
        start = time.perf_counter()
        try:
            return await self.call(fn, *args, **kwargs)
        finally:
            self.observe(op, time.perf_counter() - start)

    def observe(self, op: str, seconds: float) -> None:
        if self.round_trips is not None:
            self.round_trips.observe(op, seconds)

    def succeeded(self) -> None:
        self.failures = 0

    async def outage(self, what: str, exc: RingworkError) -> None:
        """Log and back off; the caller retries."""
        self.failures += 1
        delay = min(self.backoff_max, 0.05 * 2**self.failures)
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log_event("database_unavailable", node=self.node_id, during=what,
                  retry_in=f"{delay:.2f}", error=first_line)
        await asyncio.sleep(delay)

    async def with_retry(self, what: str, stopping: Callable[[], bool],
                         fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)`` until it works, while the database is unavailable and not stopping."""
        while not stopping():
            try:
                return await self.call(fn, *args)
            except DatabaseError as exc:
                if not isinstance(exc, DatabaseUnavailable):
                    raise
                await self.outage(what, exc)
        return None

    def close(self) -> None:
        self._pool.shutdown()
