"""Real network cuts on loopback with iptables, for the cluster acceptance tests.

Each :class:`Firewall` owns one iptables chain with a unique name, jumped to from ``INPUT -i lo``
and ``OUTPUT -o lo``; it only ever holds rules for ports the test itself chose or discovered
(the workers' ZeroMQ ports, from the node registry, and the ephemeral ports of their own
connections), never the database's, so other tests' traffic is never cut. ``close()`` flushes
and deletes the chain and its jumps, and is safe to call twice; use it in a ``finally`` or a
fixture teardown.

What "cut" means for ZeroMQ. Every node binds a ROUTER and a PUB. A follower's messages to the
leader travel on the follower's DEALER connection to the leader's ROUTER; the leader's messages
to a follower travel on the *leader's* DEALER connection to the follower's ROUTER; the leader's
state snapshots on each follower's SUB connection to the leader's PUB. So each direction of the
protocol has TCP connections of its own, and a one-way cut of the *messages* is made by dropping
every segment (both ways: TCP needs both) of the connections that carry that direction. A
connection is matched either by a server port (all of its connections) or by the pair
(ephemeral port, server port) of one client connection, found with ``ss`` by the process group
that owns it; a :class:`Cut` re-scans while it is active, so a connection ZeroMQ re-opens is cut
too (a message or two may pass in the re-scan interval).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_SS_LINE = re.compile(r"\S+:(\d+)\s+\S+:(\d+)\s+users:\((.*)\)")
_PID = re.compile(r"pid=(\d+)")


def iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``iptables -w`` (wait for the xtables lock: other tests use it at the same time)."""
    exe = shutil.which("iptables") or "/usr/sbin/iptables"
    return subprocess.run([exe, "-w", "5", *args], check=check, capture_output=True, text=True,
                          timeout=30)


@dataclass(frozen=True)
class Connection:
    """One end of an established TCP connection on loopback, as ``ss`` shows it."""

    local: int
    peer: int
    group: int  # process group of the owner (a worker and any process it spawns share it)


def connections() -> list[Connection]:
    out = subprocess.run(["ss", "-Htnp", "state", "established"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        m = _SS_LINE.search(line)
        if not m:
            continue
        for pid in {int(p) for p in _PID.findall(m.group(3))}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                found.append(Connection(int(m.group(1)), int(m.group(2)), os.getpgid(pid)))
    return found


class Firewall:
    """A dedicated iptables chain for one test (see the module docstring)."""

    def __init__(self) -> None:
        self.chain = f"RWCUT-{uuid.uuid4().hex[:12]}"  # under iptables' 28-character limit
        self._rules: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()
        iptables("-N", self.chain)
        iptables("-I", "INPUT", "1", "-i", "lo", "-j", self.chain)
        iptables("-I", "OUTPUT", "1", "-o", "lo", "-j", self.chain)

    def _drop(self, *match: str) -> None:
        with self._lock:
            if match not in self._rules:
                iptables("-A", self.chain, "-p", "tcp", *match, "-j", "DROP")
                self._rules.add(match)

    def drop_port(self, port: int) -> None:
        """Drop every segment to or from ``port`` (all connections of a server socket)."""
        self._drop("--dport", str(port))
        self._drop("--sport", str(port))

    def drop_connection(self, a: int, b: int) -> None:
        """Drop every segment, both ways, of the one connection between ports ``a`` and ``b``."""
        self._drop("--sport", str(a), "--dport", str(b))
        self._drop("--sport", str(b), "--dport", str(a))

    def heal(self) -> None:
        with self._lock:
            iptables("-F", self.chain)
            self._rules.clear()

    def rules(self) -> list[str]:
        return iptables("-S", self.chain).stdout.splitlines()

    def close(self) -> None:
        for args in (("-D", "INPUT", "-i", "lo", "-j", self.chain),
                     ("-D", "OUTPUT", "-o", "lo", "-j", self.chain),
                     ("-F", self.chain), ("-X", self.chain)):
            iptables(*args, check=False)


class Cut:
    """An active cut: server ports dropped outright, plus every client connection that
    ``matches`` (re-scanned every ``interval`` seconds until :meth:`heal`)."""

    def __init__(self, firewall: Firewall, ports: Iterable[int],
                 matches: Callable[[Connection], bool], interval: float = 0.2) -> None:
        self.firewall = firewall
        self.matches = matches
        self.interval = interval
        self.cut_connections: set[tuple[int, int]] = set()
        for port in ports:
            firewall.drop_port(port)
        self._stop = threading.Event()
        self._scan()
        self._thread = threading.Thread(target=self._loop, name="netcut-rescan", daemon=True)
        self._thread.start()

    def _scan(self) -> None:
        for conn in connections():
            if self.matches(conn) and (conn.local, conn.peer) not in self.cut_connections:
                self.firewall.drop_connection(conn.local, conn.peer)
                self.cut_connections.add((conn.local, conn.peer))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._scan()

    def heal(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.firewall.heal()
