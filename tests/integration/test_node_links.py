"""The driver's half of fast suspicion, on real sockets: what the socket monitor of a DEALER to a
peer reports as ``LinkChanged`` (``ringwork/node/peers.py``) when the peer's process dies on
this (live) host, and when its connection is reset while it lives."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import zmq

from ringwork.node.peers import Peers
from ringwork.node.sockets import SocketMaker
from tests.support import wait_for

ROUTER = """
import sys, zmq
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER)
print(router.bind_to_random_port("tcp://127.0.0.1"), flush=True)
while True:
    router.recv_multipart()
"""


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.term()


def dial(ctx: zmq.Context, endpoint: str) -> tuple[Peers, list[str]]:
    seen: list[str] = []
    peers = Peers(SocketMaker(ctx, None), "me", lambda node: endpoint, lambda: None, Counter(),
                  on_link=lambda peer, change: seen.append(f"{peer}:{change}"))
    peers.send_or_hold("p", b"hello")
    return peers, seen


def watch(peers: Peers, seen: list[str], done: str, count: int = 1) -> None:
    def enough() -> bool:
        peers.read_monitors()
        peers.flush_held()
        return seen.count(done) >= count

    wait_for(enough, 5, 0.005, f"{count} x {done}: {seen}")


def test_a_killed_peer_closes_then_refuses(ctx: zmq.Context) -> None:
    proc = subprocess.Popen([sys.executable, "-c", ROUTER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        peers, seen = dial(ctx, f"tcp://127.0.0.1:{port}")
        watch(peers, seen, "p:connected")
        proc.kill()
        proc.wait(10)
        killed = time.monotonic()
        watch(peers, seen, "p:refused", 2)
        took = time.monotonic() - killed
        after = seen[seen.index("p:connected") + 1:]
        assert after[0] == "p:closed" and "p:connected" not in after, seen
        assert took < 2.0, took  # ~0.1 s: reconnects back off from 20 ms
        peers.close()
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_a_reset_connection_to_a_live_peer_reconnects(ctx: zmq.Context) -> None:
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    peers, seen = dial(ctx, f"tcp://127.0.0.1:{port}")
    try:
        watch(peers, seen, "p:connected")
        done = subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{port}"],
                              capture_output=True, text=True, timeout=30)
        if "ESTAB" not in done.stdout:
            pytest.skip(f"ss -K killed nothing here: {done.stderr.strip()}")
        watch(peers, seen, "p:connected", 2)
        after = seen[seen.index("p:connected") + 1:]
        assert after[0] == "p:closed" and "p:refused" not in after, seen
    finally:
        peers.close()
        router.close(0)
