"""Live updates: the server-sent event stream, and the feed of rebalances it notices.

Every ``interval`` (1 s) the stream reads a small snapshot of the cluster (job counts, term,
live nodes, each partition's owner and epoch) and sends it when it differs from the last one
sent; the page's script then reloads the part of the page that shows data. It polls on
PostgreSQL too: the store's LISTEN channel (:mod:`ringwork.store.listen`) carries enqueue
wake-ups only, while a screen changes on completions, heartbeats and rebalances as well, none
of which notify.

The store keeps each partition's current owner and epoch, not their history, so the feed of
rebalances is what this dashboard process saw change between two reads (since it started):
:class:`Moves`. Every snapshot and every partition-map page feeds it.

Threads: the stream is a coroutine on the server's event loop; snapshots are read in a worker
thread (``anyio.to_thread``). :class:`Moves` is fed from both, under its lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Rebalances the feed keeps.
FEED_LENGTH = 50
#: Seconds between keep-alive comments when nothing changes (proxies close idle streams).
KEEPALIVE = 15.0


@dataclass(frozen=True)
class Move:
    """Partitions that went from one owner to another between two reads."""

    at: float
    source: str | None
    target: str | None
    partitions: tuple[int, ...]
    epochs: tuple[int, ...]


@dataclass(frozen=True)
class Rebalance:
    """What changed between two reads: one entry of the feed."""

    at: float
    term: int | None
    moves: tuple[Move, ...]

    @property
    def moved(self) -> int:
        return sum(len(m.partitions) for m in self.moves)


class Moves:
    """Owner and epoch changes seen between consecutive reads of the partitions table."""

    def __init__(self, length: int = FEED_LENGTH) -> None:
        self._lock = threading.Lock()
        self._last: dict[int, tuple[str | None, int]] | None = None
        self._feed: deque[Rebalance] = deque(maxlen=length)

    def observe(self, owners: Mapping[int, tuple[str | None, int]], term: int | None = None,
                now: Callable[[], float] = time.time) -> Rebalance | None:
        """Compare ``owners`` (partition -> (owner, epoch)) with the last read; the
        rebalance seen, if any, is added to the feed."""
        with self._lock:
            last, self._last = self._last, dict(owners)
            if last is None:
                return None
            groups: dict[tuple[str | None, str | None], list[tuple[int, int]]] = {}
            for p, (owner, epoch) in sorted(owners.items()):
                before = last.get(p)
                if before is None or before[1] == epoch:
                    continue
                groups.setdefault((before[0], owner), []).append((p, epoch))
            if not groups:
                return None
            at = now()
            moves = tuple(Move(at, s, t, tuple(p for p, _ in ps), tuple(e for _, e in ps))
                          for (s, t), ps in groups.items())
            entry = Rebalance(at, term, moves)
            self._feed.appendleft(entry)
            return entry

    def feed(self) -> list[Rebalance]:
        """Newest first."""
        with self._lock:
            return list(self._feed)


def owners_of(snapshot: Mapping[str, Any]) -> dict[int, tuple[str | None, int]]:
    return {int(p): (o, int(e)) for p, (o, e) in snapshot["owners"].items()}


async def stream(read: Callable[[], dict[str, Any]], moves: Moves, interval: float,
                 limit: int | None, disconnected: Callable[[], Any]) -> AsyncIterator[str]:
    """SSE frames: a snapshot now, then each one that differs from the last sent.

    A read that fails (the database is away) sends an ``error`` event with its one line and
    keeps trying; ``limit``: stop after that many snapshots (for scripts and tests).
    """
    import anyio

    from ringwork.dashboard.guard import one_line

    sent = 0
    last: dict[str, Any] | None = None
    quiet_since = time.monotonic()
    while limit is None or sent < limit:
        try:
            snap = await anyio.to_thread.run_sync(read)
        except Exception as exc:
            yield f"event: error\ndata: {json.dumps(one_line(exc))}\n\n"
            snap = None
        if snap is not None:
            moves.observe(owners_of(snap), snap.get("term"))
            if snap != last:
                last = snap
                sent += 1
                quiet_since = time.monotonic()
                yield f"data: {json.dumps(snap)}\n\n"
        if limit is not None and sent >= limit:
            return
        if time.monotonic() - quiet_since > KEEPALIVE:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await anyio.sleep(interval)
        if await disconnected():
            return
