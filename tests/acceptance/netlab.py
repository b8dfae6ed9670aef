"""Several "hosts" on one machine: network namespaces on a bridge, with a slow, lossy network.

:class:`NetLab` makes a bridge in the root namespace (``10.213.X.1/24``, a subnet no one else
uses: X is picked so that no address or route of the machine is in it) and one namespace per
host, each with a veth into the bridge. Every packet a host sends out is delayed and sometimes
dropped: by ``tc netem`` when the kernel has it, else by :mod:`tests.acceptance.netdelay` (a
user-space NFQUEUE delayer, one per namespace, behind an iptables rule of that namespace only).
PostgreSQL is reached through a small TCP forwarder on the bridge address to 127.0.0.1:5432, so
the shared server is not reconfigured. :meth:`close` removes everything it made, in reverse,
whatever state a failed test left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def free_subnet() -> int:
    """An X such that 10.213.X.0/24 is not used by any address or route of this machine."""
    used = sh("ip", "-o", "addr").stdout + sh("ip", "route").stdout + sh("ip", "netns").stdout
    for _ in range(100):
        x = random.randint(1, 254)
        if f"10.213.{x}." not in used and f"rw{x}n" not in used:
            return x
    raise RuntimeError("no free 10.213.X.0/24 subnet")


class Forwarder:
    """TCP forwarder on a thread of its own (its own asyncio loop): listen -> target."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.host, self.target = host, target
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="netlab-forwarder",
                                       daemon=True)
        self.thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("forwarder did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, self.host, 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class NetLab:
    hosts: int
    delay_ms: int = 20
    loss_percent: float = 1.0
    x: int = field(default_factory=free_subnet)
    namespaces: list[str] = field(default_factory=list)
    delayers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    bridge: str | None = None
    forwarder: Forwarder | None = None
    #: "netem" or "nfqueue": how the delay and loss are made (printed by the test).
    shaping: str = ""

    @property
    def gateway(self) -> str:
        return f"10.213.{self.x}.1"

    def address(self, i: int) -> str:
        return f"10.213.{self.x}.{11 + i}"

    def namespace(self, i: int) -> str:
        return f"rw{self.x}n{i}"

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(i)]

    def open(self) -> NetLab:
        bridge = f"rw{self.x}br"
        sh("ip", "link", "add", bridge, "type", "bridge")
        self.bridge = bridge
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        for i in range(self.hosts):
            ns, outer, inner = self.namespace(i), f"rw{self.x}v{i}", f"rw{self.x}p{i}"
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", outer, "master", bridge, "up")
            run = self.exec_prefix(i)
            sh(*run, "ip", "link", "set", inner, "name", "eth0")
            sh(*run, "ip", "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            sh(*run, "ip", "link", "set", "eth0", "up")
            sh(*run, "ip", "link", "set", "lo", "up")
            self._shape(i)
        self.forwarder = Forwarder(self.gateway, ("127.0.0.1", 5432))
        return self

    def _shape(self, i: int) -> None:
        run = self.exec_prefix(i)
        netem = sh(*run, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay",
                   f"{self.delay_ms}ms", "loss", f"{self.loss_percent}%", check=False)
        if netem.returncode == 0:
            self.shaping = "netem"
            return
        # No sch_netem in this kernel: the same delay and loss from user space.
        self.shaping = "nfqueue (no sch_netem in this kernel: " + netem.stderr.strip() + ")"
        delayer = subprocess.Popen(
            [*run, sys.executable, "-m", "tests.acceptance.netdelay", "--delay",
             str(self.delay_ms / 1000), "--loss", str(self.loss_percent / 100)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.delayers.append(delayer)
        assert delayer.stdout is not None
        line = delayer.stdout.readline().decode()
        if "ready" not in line:
            raise RuntimeError(f"netdelay did not start: {line}")
        sh(*run, "iptables", "-A", "OUTPUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", "0",
           "--queue-bypass")

    def close(self) -> None:
        for delayer in self.delayers:
            if delayer.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(delayer.pid, signal.SIGKILL)
            delayer.wait(10)
            if delayer.stdout is not None:
                delayer.stdout.close()
        for i, ns in reversed(list(enumerate(self.namespaces))):
            # Delete the veth pair from our side first: a deleted namespace lives on (with its
            # end of the pair) as long as orphaned TCP sockets in it retransmit to dead peers.
            sh("ip", "link", "del", f"rw{self.x}v{i}", check=False)
            sh("ip", "netns", "del", ns, check=False)
        if self.bridge is not None:
            sh("ip", "link", "del", self.bridge, check=False)
        if self.forwarder is not None:
            self.forwarder.close()

    def leftovers(self) -> list[str]:
        """Links and namespaces of this lab still present (empty after :meth:`close`)."""
        tag = f"rw{self.x}"
        found = sh("ip", "-o", "link").stdout.splitlines() + sh("ip", "netns").stdout.splitlines()
        return [line for line in found if tag in line]
