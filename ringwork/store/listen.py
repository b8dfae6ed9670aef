"""Wake-ups on PostgreSQL: LISTEN on the cluster's channel, NOTIFY from enqueue.

Enqueue calls ``pg_notify(channel, '3,17,42')`` in its own transaction (so the wake-up is
delivered exactly when the jobs become visible) with the partitions that got runnable jobs, or
:data:`WAKE_ALL` when there are more than ``enqueue.WAKE_LIST_MAX``. A worker waits on a
dedicated connection outside the pool, so an idle worker starts a new job within milliseconds
instead of a poll period.

Threads: :meth:`ringwork.store.Store.listen` connects on whichever thread calls it (the worker
runs it in its event loop's default executor, since connecting blocks); the worker then polls
the :class:`Listener` from its event loop thread, and may close it from either.

The channel is derived from a hash of the cluster name: a channel is an identifier of at most
63 bytes, while cluster names are free text.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ringwork.store.engine import translated

if TYPE_CHECKING:
    import psycopg


#: The payload that wakes every partition (the enqueue's list would be too long).
WAKE_ALL = "*"


def channel_for(cluster: str) -> str:
    return "ringwork_" + hashlib.sha1(cluster.encode()).hexdigest()[:20]


def results_channel_for(cluster: str) -> str:
    """The channel a completion that writes results notifies with the jobs' ids."""
    return "ringwork_r_" + hashlib.sha1(cluster.encode()).hexdigest()[:20]


class Listener:
    """A LISTEN connection. Not thread-safe: one thread waits on it; any thread may close it.

    Either block in :meth:`wait`, or register :meth:`fileno` with an event loop and call
    :meth:`poll` when it is readable (what the worker does: no thread hand-off per wake-up).
    """

    def __init__(self, conn: psycopg.Connection, channel: str, partitions: int) -> None:
        self._conn = conn
        self._partitions = partitions
        self.channel = channel
        from psycopg import sql

        with translated("LISTEN"):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def wait(self, timeout: float) -> set[int]:
        """Partitions notified within ``timeout`` seconds (empty on timeout).

        Returns as soon as one notification arrives, with any others already pending.
        Raises :class:`ringwork.errors.DatabaseUnavailable` if the connection is lost.
        """
        with translated("waiting for notifications"):
            received = list(self._conn.notifies(timeout=max(0.0, timeout), stop_after=1))
            if received:
                received += list(self._conn.notifies(timeout=0))
        return self._partitions_of(received)

    def fileno(self) -> int:
        """The connection's socket: readable when a notification (or an error) arrives."""
        return self._conn.fileno()

    def poll(self) -> set[int]:
        """Partitions notified so far, without waiting (for an event loop's reader callback).

        Raises :class:`ringwork.errors.DatabaseUnavailable` if the connection is lost.
        """
        with translated("reading notifications"):
            received = list(self._conn.notifies(timeout=0))
        return self._partitions_of(received)

    def _partitions_of(self, received: list[psycopg.Notify]) -> set[int]:
        found: set[int] = set()
        for note in received:
            if note.payload == WAKE_ALL:
                found.update(range(self._partitions))
                continue
            for part in note.payload.split(","):
                if part.strip().isdigit():
                    found.add(int(part))
        return found

    def close(self) -> None:
        if not self._conn.closed:
            self._conn.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
