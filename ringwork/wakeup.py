"""Wake-ups: an enqueuer nudges idle workers so a new job starts in milliseconds, not a poll.

A nudge is one UDP datagram to each worker's ``wake_endpoint`` from the node registry, sent after
the enqueue has committed. It is fire-and-forget on purpose: losing one costs at most a poll
interval (the backstop), and it never blocks or fails an enqueue. It serves SQLite; PostgreSQL
workers are woken by the NOTIFY the enqueue statement sends (see the store), not by both.

Datagram format: ``RWK1 <cluster> <p1,p2,...>`` in ASCII. Anything else is ignored.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ringwork.addresses import bind_error

if TYPE_CHECKING:
    from ringwork.store import Store

MAGIC = b"RWK1"
MAX_DATAGRAM = 1200  # stay under typical MTUs; a longer partition list is sent as "all"
REGISTRY_TTL = 1.0  # seconds a cached view of the registry is trusted


def parse_endpoint(endpoint: str) -> tuple[str, int] | None:
    """``udp://host:port`` -> ``(host, port)``; ``None`` for anything else."""
    parts = urlsplit(endpoint)
    if parts.scheme != "udp" or not parts.hostname or parts.port is None:
        return None
    return parts.hostname, parts.port


def encode(cluster: str, partitions: Iterable[int]) -> bytes:
    body = ",".join(str(p) for p in sorted(partitions))
    datagram = b"%s %s %s" % (MAGIC, cluster.encode(), body.encode())
    if len(datagram) > MAX_DATAGRAM:
        datagram = b"%s %s *" % (MAGIC, cluster.encode())
    return datagram


def decode(cluster: str, datagram: bytes) -> set[int] | None:
    """Partitions named by a nudge for ``cluster`` (``set()`` means all); ``None`` if not ours."""
    try:
        magic, name, body = datagram.split(b" ", 2)
        if magic != MAGIC or name.decode() != cluster:
            return None
        if body == b"*":
            return set()
        return {int(p) for p in body.split(b",") if p}
    except (ValueError, UnicodeDecodeError):
        return None


class WakeSender:
    """Sends nudges to every registered worker of the store's cluster."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._targets: list[tuple[str, int]] = []
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> list[tuple[str, int]]:
        with self._lock:
            now = time.monotonic()
            if now - self._fetched_at > REGISTRY_TTL:
                self._fetched_at = now
                try:
                    nodes = self._store.list_nodes()
                except Exception:  # a nudge is best effort: polling covers a failed lookup
                    nodes = []
                targets = (parse_endpoint(n.wake_endpoint or "") for n in nodes)
                self._targets = [t for t in targets if t is not None]
            return self._targets

    def nudge(self, partitions: Iterable[int]) -> None:
        # The known workers are nudged first; only then is a stale view of the registry re-read
        # (a database round trip), and workers it newly lists are nudged too. So the read never
        # sits between an enqueue's commit and the datagrams of workers we already knew.
        datagram = encode(self._store.cluster, partitions)
        known = self._targets
        self._send(datagram, known)
        self._send(datagram, [t for t in self._refresh() if t not in known])

    def _send(self, datagram: bytes, targets: list[tuple[str, int]]) -> None:
        for target in targets:
            # Unreachable or gone: the registry forgets it and polling covers the gap.
            with contextlib.suppress(OSError):
                self._sock.sendto(datagram, target)

    def close(self) -> None:
        self._sock.close()


class WakeReceiver:
    """A worker's UDP socket for nudges; the runtime registers its fd with the event loop."""

    def __init__(self, cluster: str, host: str = "127.0.0.1", advertise: str | None = None) -> None:
        self.cluster = cluster
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, 0))
        except OSError as exc:  # the first socket bound on the --bind host: name the cause
            self.sock.close()
            raise bind_error("--bind, UDP wake-ups", host, None, exc) from None
        self.sock.setblocking(False)
        port = self.sock.getsockname()[1]
        self.endpoint = f"udp://{advertise or host}:{port}"

    def drain(self) -> set[int] | None:
        """Read every pending datagram; the union of partitions (``set()`` = all) or ``None``."""
        woken: set[int] | None = None
        while True:
            try:
                datagram = self.sock.recv(MAX_DATAGRAM + 64)
            except (BlockingIOError, InterruptedError):
                return woken
            except OSError:
                return woken
            parts = decode(self.cluster, datagram)
            if parts is None:
                continue
            if woken is None:
                woken = set(parts)
            elif not parts or not woken:
                woken = set()
            else:
                woken |= parts

    def close(self) -> None:
        self.sock.close()
