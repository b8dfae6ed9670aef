"""Hostile input against live ``ringwork worker`` processes, as an attacker on the network sends it.

* a fuzz run: 100,000+ mutations of real encoded messages of every type (flipped bytes,
  truncations, splices, field values replaced by nasty typed ones, wrong identities, multipart
  frames) sent as fast as they go to the leader's ROUTER: the leader stays the leader of the same
  term, the follower stays a member, nothing crashes;
* a flood of max-size frames: the leader's memory stays within the bound docs/operations.md
  states (per connection ``(RCVHWM + 2) * max_message_bytes``), plus slack;
* a node loop that dies anyway ends the worker process with exit code 70 and a one-line error.

Frames/s and RSS are printed (``pytest -s``) for the notes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from ringwork.node.child import VIEW_INTERVAL
from ringwork.node.sockets import RCVHWM
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.messages import Codec
from tests.acceptance.cluster import APP_SPEC, ROOT, Cluster, Proc
from tests.support import wait_for
from tests.unit.test_messages import SAMPLES

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

MAX_BYTES = ProtocolConfig(partitions=64).max_message_bytes  # the cluster app has 64


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(db_url, cluster_name, tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def two_workers(cluster: Cluster) -> tuple[Proc, dict[str, Any], dict[str, Any]]:
    """Start two workers; the leader's process and status entry, and the whole status."""
    procs = cluster.start(2)
    doc = cluster.wait_balanced(procs, 60)
    leader = next(n for n in doc["nodes"] if n["role"] == "leader")
    proc = next(p for p in procs if f"-{p.pid}-" in leader["id"])
    return proc, leader, doc


def still_fine(
    cluster: Cluster, proc: Proc, leader: dict[str, Any], before: dict[str, Any]
) -> None:
    """The leader is alive and still leads the same term; every member is still a member."""
    assert proc.popen.poll() is None, cluster.logs()
    doc = cluster.status()
    assert doc["term"] == before["term"] and doc["leader"] == leader["id"], (doc, cluster.logs())
    live = {n["id"] for n in doc["nodes"] if n["role"] != "stale"}
    assert live == {n["id"] for n in before["nodes"]}, (doc, cluster.logs())
    log = proc.log.read_text()
    assert "node_crashed" not in log and "stepped_down" not in log, log[-4000:]
    joined = set(re.findall(r"event=member_joined node=(\S+)", log))
    assert joined <= live, f"phantom members: {joined - live}"


# -- the fuzzer ----------------------------------------------------------------------------------

NASTY: list[Any] = [
    10**400, -(10**400), 2**63, -(2**63) - 1, 2**62, -1, 0, 1e308, -0.0, True, None, "",
    "\ud800", "x" * 2000, [], {}, [[-1, 1]], [[2**62, 2**62]], [[0, 1, 2]], [[1e30, 1]],
    [None], {"a": [1]}, "NaN", [[[[[[[[[[[]]]]]]]]]]],
]


class Fuzzer:
    """Mutations of real encoded messages; deterministic for one seed (printed on failure)."""

    def __init__(self, cluster_name: str, term: int, identity: str, seed: int) -> None:
        self.rng = random.Random(seed)
        self.codec = Codec(cluster_name)
        self.identity = identity
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.frames: list[bytes] = []
        for sample in SAMPLES:
            for sender in (identity, "someone-else"):
                message = dataclasses.replace(sample, sender=sender, term=term)
                self.frames.append(self.codec.encode(message))
                self.bodies.append((type(message).__name__, dataclasses.asdict(message)))
        self.mutations: list[Callable[[], list[bytes]]] = [
            self.flip, self.truncate, self.splice, self.replace_field, self.replace_field,
            self.drop_field, self.envelope, self.multipart, self.unmodified,
        ]

    def next(self) -> list[bytes]:
        return self.rng.choice(self.mutations)()

    def _pick(self) -> bytes:
        return self.rng.choice(self.frames)

    def flip(self) -> list[bytes]:
        data = bytearray(self._pick())
        for _ in range(self.rng.randint(1, 4)):
            data[self.rng.randrange(len(data))] = self.rng.randrange(256)
        return [bytes(data)]

    def truncate(self) -> list[bytes]:
        data = self._pick()
        return [data[: self.rng.randrange(len(data))]]

    def splice(self) -> list[bytes]:
        a, b = self._pick(), self._pick()
        return [a[: self.rng.randrange(len(a))] + b[self.rng.randrange(len(b)):]]

    def _encode(self, kind: str, body: Any, **envelope: Any) -> bytes:
        env = {"v": 2, "c": self.codec.cluster, "t": kind, "m": body, **envelope}
        text = json.dumps(env, ensure_ascii=self.rng.random() < 0.5)
        if self.rng.random() < 0.1:
            text = text.replace("2.0", "NaN", 1).replace("1.5", "Infinity", 1)
        return text.encode("utf-8", "surrogatepass")

    def replace_field(self) -> list[bytes]:
        kind, body = self.rng.choice(self.bodies)
        body = dict(body)
        name = self.rng.choice(sorted(body))
        body[name] = self.rng.choice(NASTY)
        return [self._encode(kind, body)]

    def drop_field(self) -> list[bytes]:
        kind, body = self.rng.choice(self.bodies)
        body = dict(body)
        del body[self.rng.choice(sorted(body))]
        body[self.rng.choice(["extra", "\udcff", "term "])] = self.rng.choice(NASTY)
        return [self._encode(kind, body)]

    def envelope(self) -> list[bytes]:
        kind, body = self.rng.choice(self.bodies)
        key = self.rng.choice(["v", "c", "t", "m"])
        return [self._encode(kind, body, **{key: self.rng.choice(NASTY)})]

    def multipart(self) -> list[bytes]:
        return [self._pick() for _ in range(self.rng.choice([2, 3, 5]))] + [b""]

    def unmodified(self) -> list[bytes]:
        return [self._pick()]  # real messages, from this identity or spoofing another


def settled(proc: Proc) -> dict[str, float]:
    """The worker's metrics once its count of dropped messages holds still for longer than the
    node process takes to report a new count (its view reaches the worker once a second)."""
    last: list[float] = []

    def total() -> dict[str, float] | None:
        metrics = proc.metrics()
        now = sum(v for k, v in metrics.items() if k.startswith("ringwork_protocol_dropped"))
        if last and last[-1] == now:
            return metrics
        last.append(now)
        return None

    return wait_for(total, 30, VIEW_INTERVAL + 0.5, "the leader drained the fuzz frames")


@pytest.mark.timeout(180)
def test_fuzzing_the_leader_changes_nothing(cluster: Cluster, cluster_name: str) -> None:
    proc, leader, before = two_workers(cluster)
    seed = random.randrange(2**32)
    print(f"\nfuzz seed {seed}")
    ctx = zmq.Context()
    try:
        dealers = []
        identities = ["fuzz-a", "fuzz-b", "\udcff-bad", "x" * 200]
        for identity in identities:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.SNDTIMEO, 5000)
            dealer.setsockopt(zmq.IDENTITY, identity.encode("utf-8", "surrogatepass"))
            dealer.connect(leader["endpoint"])
            dealers.append((dealer, Fuzzer(cluster_name, before["term"], identity, seed)))
        rss_before = rss_kb(proc.pid)
        sent = 0
        started = time.monotonic()
        deadline = started + 40
        while sent < 100_000 and time.monotonic() < deadline:
            for dealer, fuzzer in dealers:
                for _ in range(50):
                    dealer.send_multipart(fuzzer.next())
                    sent += 1
        elapsed = time.monotonic() - started
        rss_after = rss_kb(proc.pid)
        print(f"fuzz: {sent} frames in {elapsed:.1f} s = {sent / elapsed:,.0f} frames/s; "
              f"leader RSS {rss_before / 1024:.1f} MB -> {rss_after / 1024:.1f} MB")
        assert sent >= 100_000, f"only {sent} frames in {elapsed:.0f} s"
        # Judge once the leader has drained what we sent (its drop count stops moving).
        metrics = settled(proc)
        still_fine(cluster, proc, leader, before)
        dropped = {k: v for k, v in metrics.items()
                   if k.startswith("ringwork_protocol_dropped_messages_total")}
        errors = {k: v for k, v in metrics.items()
                  if k.startswith("ringwork_protocol_input_errors_total")}
        print(f"leader dropped: {dropped}\nleader errors: {errors}")
        assert sum(dropped.values()) > sent / 2
        assert all(v == 0 for k, v in dropped.items() if "decode_error" in k)
    finally:
        ctx.destroy(linger=0)


@pytest.mark.timeout(180)
def test_a_flood_of_max_size_frames_stays_within_the_memory_bound(
    cluster: Cluster, cluster_name: str
) -> None:
    proc, leader, before = two_workers(cluster)
    # The costliest frame to receive: valid JSON of the maximum size, parsed in full before it
    # is found to be a Heartbeat from someone other than the connection's identity (spoofed).
    pairs = ",".join(["[1,2]"] * (MAX_BYTES // 6 + 1))
    head = (f'{{"v":2,"c":"{cluster_name}","t":"Heartbeat","m":{{"sender":"x","term":1,'
            f'"incarnation":0,"seq":1,"sent_at":0,"released":[').encode()
    body = pairs.encode()[: MAX_BYTES - len(head) - 10].rsplit(b",", 1)[0]
    frame = head + body + b"]}}"
    assert MAX_BYTES - 100 < len(frame) <= MAX_BYTES
    connections = 4
    bound_kb = connections * (RCVHWM + 2) * (MAX_BYTES + 1024) // 1024
    ctx = zmq.Context()
    try:
        dealers = []
        for i in range(connections):
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.SNDHWM, 100_000)  # queue on our side, as fast as it goes
            dealer.setsockopt(zmq.IDENTITY, f"flood-{i}".encode())
            dealer.connect(leader["endpoint"])
            dealers.append(dealer)
        rss_before = peak = rss_kb(proc.pid)
        sent = 0
        started = time.monotonic()
        while time.monotonic() < started + 10:
            for dealer in dealers:
                try:
                    for _ in range(20):
                        dealer.send(frame, zmq.NOBLOCK)
                        sent += 1
                except zmq.Again:
                    pass
            peak = max(peak, rss_kb(proc.pid))
            time.sleep(0.005)  # let our own I/O thread push them out
        dropped = proc.metrics()
        spoofed = next(v for k, v in dropped.items() if 'reason="spoofed"' in k)
        growth = peak - rss_before
        print(f"\nflood: {sent} frames of {len(frame)} B queued in 10 s over {connections} "
              f"connections, leader handled {spoofed:.0f}; leader RSS {rss_before / 1024:.1f} MB"
              f" -> peak {peak / 1024:.1f} MB (growth {growth / 1024:.1f} MB; bound "
              f"{bound_kb / 1024:.1f} MB + 30 MB slack)")
        assert spoofed > 100, "the flood did not reach the leader"
        assert growth < bound_kb + 30 * 1024, f"RSS grew by {growth} kB"
        still_fine(cluster, proc, leader, before)
    finally:
        ctx.destroy(linger=0)


BROKEN_WORKER = """
import sys, time
import ringwork.node.driver as node
real, first = node.Node._drain_inbox, []
def broken(self):
    first.append(time.monotonic())
    if first[-1] - first[0] > 3:
        raise RuntimeError("injected node loop bug")
    real(self)
node.Node._drain_inbox = broken
from ringwork.cli import main
sys.argv = ["ringwork", "worker", sys.argv[1]]
main()
"""


@pytest.mark.timeout(120)
def test_a_worker_whose_node_loop_dies_exits_70_with_a_one_line_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = {**os.environ, "RINGWORK_DATABASE_URL": cluster.db_url, "RINGWORK_CLUSTER": cluster.name,
           "RINGWORK_LOG_LEVEL": "WARNING"}
    worker = subprocess.Popen([sys.executable, "-c", BROKEN_WORKER, APP_SPEC], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, 9)
            worker.wait(10)
    assert worker.returncode == 70, err
    last = err.strip().splitlines()[-1]
    assert last == ("error: node loop crashed: RuntimeError: injected node loop bug; "
                    "worker exits with code 70"), err
    assert "event=node_failed" in err
    assert "Traceback" in err  # the crash itself is logged with its stack, once, for the bug
