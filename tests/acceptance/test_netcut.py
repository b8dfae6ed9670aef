"""Real network cuts between workers (iptables on loopback) while PostgreSQL stays reachable.

Three real workers run a steady feed of ordered jobs; one cut is applied for CUT_S seconds, then
healed. The cut only drops the workers' ZeroMQ traffic (see tests/acceptance/netcut.py for what
each cut drops and why), never the database's. With degrade-not-stall (docs/protocol.md) every
node still reaches the database, so none must stop claiming and none may be evicted: the cut
costs the cut node its peer link, not its partitions. Each test asserts that, that no ordered
key ever had two runs overlapping, that every job succeeded after the heal (none lost) and that
the cluster is balanced afterwards; it prints the cut node's jobs/s before and during the cut.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.acceptance.cluster import Cluster, Events, Proc
from tests.acceptance.netcut import Connection, Cut, Firewall
from tests.support import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(150)]

CUT_S = 10.0  # more than three session timeouts: long enough for any eviction to happen
FEED_PER_S = 200  # ordered jobs per second, 5 ms each, over 96 keys
BASELINE_S = 3.0


@dataclass
class Worker:
    proc: Proc
    node_id: str
    router: int
    pub: int


def _port(endpoint: str | None) -> int:
    assert endpoint, "no endpoint in the registry"
    return int(endpoint.rsplit(":", 1)[1])


def workers(cluster: Cluster, procs: list[Proc]) -> tuple[Worker, list[Worker]]:
    """The leader and the followers, with their ZeroMQ ports from the node registry."""
    leader_id = cluster.status()["leader"]
    rows = {r.node_id: r for r in cluster.app.store.list_nodes()}
    found = []
    for proc in procs:
        node_id = next(n for n in rows if f"-{proc.pid}-" in n)
        found.append(Worker(proc, node_id, _port(rows[node_id].endpoint),
                            _port(rows[node_id].pub_endpoint)))
    leader = next(w for w in found if w.node_id == leader_id)
    return leader, [w for w in found if w is not leader]


def owned_by(w: Worker, *peer_ports: int) -> Callable[[Connection], bool]:
    """Client connections opened by ``w``'s processes to any of ``peer_ports``."""
    ports = set(peer_ports)
    return lambda c: c.group == w.proc.pid and c.peer in ports


# Each cut: (victim, server ports dropped outright, client connections dropped) for a cluster.
CutPlan = tuple[Worker, list[int], Callable[[Connection], bool]]


def follower_both_ways(leader: Worker, followers: list[Worker]) -> CutPlan:
    """Nothing reaches the follower's sockets; nothing leaves on its connections to the leader."""
    f = followers[0]
    return f, [f.router, f.pub], owned_by(f, leader.router, leader.pub)


def leader_both_ways(leader: Worker, followers: list[Worker]) -> CutPlan:
    """Nothing reaches the leader's sockets; nothing leaves on its connections to followers."""
    return leader, [leader.router, leader.pub], owned_by(leader, *(f.router for f in followers))


def leader_to_follower(leader: Worker, followers: list[Worker]) -> CutPlan:
    """The follower hears nothing from the leader (the leader's DEALER to the follower's ROUTER:
    Acks, Grants; the follower's SUB to the leader's PUB: state); its heartbeats still arrive."""
    f = followers[0]
    return f, [], lambda c: owned_by(leader, f.router)(c) or owned_by(f, leader.pub)(c)


def follower_to_leader(leader: Worker, followers: list[Worker]) -> CutPlan:
    """The leader hears nothing from the follower (the follower's DEALER to the leader's ROUTER:
    heartbeats); the leader's Grants and state still reach it (but no Ack: nothing to ack)."""
    f = followers[0]
    return f, [], owned_by(f, leader.router)


CUTS = {
    "follower-both-ways": follower_both_ways,
    "leader-both-ways": leader_both_ways,
    "leader-to-follower": leader_to_follower,
    "follower-to-leader": follower_to_leader,
}


class Feed:
    """Enqueue FEED_PER_S ordered jobs a second on a thread until stopped."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        batch = FEED_PER_S // 10
        while not self._stop.wait(0.1):
            jobs = [{"task": "ordered_rec", "key": f"key-{(seq + i) % 96}",
                     "payload": {"seq": seq + i, "ms": 5}} for i in range(batch)]
            self.ids += self.cluster.app.enqueue_many(jobs)
            seq += batch

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(30)
        return self.ids


@pytest.fixture
def cluster(pg_database_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(pg_database_url, cluster_name, tmp_path)
    yield c
    c.close()


@pytest.fixture
def firewall() -> Iterator[Firewall]:
    fw = Firewall()
    try:
        yield fw
    finally:
        fw.close()


def rate(events: Events, partitions: set[int], cluster: Cluster, start: float,
         end: float) -> float:
    """Jobs/s finished in ``partitions`` between ``start`` and ``end`` (wall clock)."""
    part = cluster.app.partition_for
    done = sum(1 for job, ends in events.ends.items()
               if part(events.key[job]) in partitions and any(start <= t < end for _, t in ends))
    return done / (end - start)


def overlapping_runs(events: Events) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """Pairs of runs of one ordered key whose [start, end] intervals overlap."""
    runs: dict[str, list[tuple[float, float]]] = {}
    for job, starts in events.starts.items():
        ends = events.ends.get(job, [])
        for pid, began in starts:
            mine = [t for p, t in ends if p == pid and t >= began]
            runs.setdefault(events.key[job], []).append((began, mine[0] if mine else began))
    bad = []
    for key, spans in runs.items():
        spans.sort()
        for a, b in itertools.pairwise(spans):
            if b[0] < a[1]:
                bad.append((key, a, b))
    return bad


@pytest.mark.parametrize("cut", list(CUTS))
def test_a_cut_between_workers_costs_speed_not_work(cluster: Cluster, firewall: Firewall,
                                                     cut: str) -> None:
    procs = cluster.start(3)
    before = cluster.wait_balanced(procs)
    leader, followers = workers(cluster, procs)
    victim, ports, matches = CUTS[cut](leader, followers)
    victim_parts = set(next(n for n in before["nodes"] if n["id"] == victim.node_id)["partitions"])
    feed = Feed(cluster)
    wait_for(lambda: cluster.app.store.counts_by_state()["succeeded"] > 100, 30,
             message="jobs flowing")
    t_base = time.time()
    time.sleep(BASELINE_S)  # a measurement window, not a wait for a condition

    t_cut = time.time()
    active = Cut(firewall, ports, matches)
    try:
        wait_for(lambda: active.cut_connections, 5, message="connections found and cut")
        # Let any eviction that would happen, happen: several session timeouts.
        deadline = t_cut + CUT_S
        while time.time() < deadline:
            doc = cluster.status()
            assert doc["term"] == before["term"], "an election during the cut"
            live = [n for n in doc["nodes"] if n["role"] != "stale"]
            assert len(live) == 3, f"a node went missing during the cut: {doc['nodes']}"
            mine = cluster.node_of(victim.proc, doc)
            assert mine is not None and set(mine["partitions"]) == victim_parts, mine
            time.sleep(0.5)
        t_heal = time.time()
        rules = firewall.rules()
    finally:
        active.heal()
    assert len(rules) > 1, "the cut dropped nothing"

    after = cluster.wait_balanced(procs, timeout=30)
    t_balanced = time.time()
    ids = feed.stop()
    cluster.wait_done(ids, timeout=60)

    logs = cluster.logs()
    assert "event=member_dead" not in logs  # nobody evicted: every registry row stayed fresh
    assert after["term"] == before["term"]
    assert "event=degraded " in logs, "no follower lost the leader's Acks: was anything cut?"
    counts = cluster.app.store.counts_by_state()
    assert counts["succeeded"] == len(ids) and counts["queued"] == counts["running"] == 0
    events = cluster.events()
    assert set(events.ends) >= set(ids)  # every job ran to its end (none lost)
    assert not overlapping_runs(events)
    base = rate(events, victim_parts, cluster, t_base, t_cut)
    during = rate(events, victim_parts, cluster, t_cut + 1.0, t_heal)
    print(f"\n[{cut}] victim {victim.node_id} ({len(victim_parts)} partitions): "
          f"{base:.1f} jobs/s before the cut, {during:.1f} jobs/s during it; "
          f"takeover: none needed (0 evictions, term {after['term']}); "
          f"balanced {t_balanced - t_heal:.2f}s after the heal; rules: {len(rules) - 1}")
    # Degrade, do not stall: the cut node's partitions keep flowing (the feed is the limit;
    # before degraded mode a one-way cut from the leader left 7% of it). Generous for load.
    assert during > 0.3 * base, (base, during)
