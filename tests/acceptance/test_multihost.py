"""Workers on three "hosts": network namespaces on a bridge, 20 ms delay and 1% loss per hop.

Our stand-in for a multi-host deployment. It checks that ``--bind`` on a non-loopback address
(and ``--bind tcp://0.0.0.0:PORT --advertise ADDR``) works with the fixed ports the firewall
rules in docs/operations.md name, that the cluster forms and balances over a slow, lossy
network, that it goes 60 s without a false eviction, and that it fails over on ``kill -9``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.acceptance.cluster import Cluster, Proc
from tests.acceptance.netlab import NetLab
from tests.support import wait_for

PORT = 7000  # the same port in every namespace: each is a host of its own
SOAK = 60.0


@pytest.fixture
def lab() -> Iterator[NetLab]:
    for tool in ("ip", "tc", "iptables"):
        assert shutil.which(tool), f"{tool} is missing: .ci/run installs iproute2 and iptables"
    lab = NetLab(hosts=3)
    try:
        yield lab.open()
    finally:
        lab.close()
    assert lab.leftovers() == []


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, cluster_name, tmp_path, session_timeout=3.0)
    yield c
    c.close()


def owners(cluster: Cluster) -> dict[int, tuple[str | None, int]]:
    return {p: (o.owner, o.epoch) for p, o in cluster.app.store.read_partitions().items()}


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_three_hosts_form_one_cluster_hold_it_and_fail_over(
    lab: NetLab, cluster: Cluster, db_url: str
) -> None:
    print(f"network shaping: {lab.shaping}")
    assert lab.forwarder is not None
    worker_url = sa.make_url(db_url).set(host=lab.gateway, port=lab.forwarder.port)
    url = worker_url.render_as_string(hide_password=False)
    binds = [
        ["--bind", f"tcp://{lab.address(0)}:{PORT}"],
        ["--bind", f"tcp://{lab.address(1)}:{PORT}"],
        ["--bind", f"tcp://0.0.0.0:{PORT}", "--advertise", lab.address(2)],
    ]
    procs: list[Proc] = []
    for i, bind in enumerate(binds):
        procs += cluster.start(1, *bind, prefix=lab.exec_prefix(i), db_url=url)

    started = time.monotonic()
    doc = cluster.wait_balanced(procs, timeout=60)
    print(f"formed and balanced in {time.monotonic() - started:.1f}s")
    counts = sorted(len(n["partitions"]) for n in doc["nodes"])
    assert counts == [21, 21, 22]
    for i, proc in enumerate(procs):
        node = cluster.node_of(proc, doc)
        assert node is not None
        assert node["endpoint"] == f"tcp://{lab.address(i)}:{PORT}"
        assert node["pub_endpoint"] == f"tcp://{lab.address(i)}:{PORT + 1}"

    # 60 s over the slow, lossy links: no false eviction, no partition moves, no stale node.
    term, before = doc["term"], owners(cluster)
    ids = cluster.enqueue(600, ms=5)
    soak_end = time.monotonic() + SOAK
    while time.monotonic() < soak_end:
        now = cluster.status()
        roles = sorted(n["role"] for n in now["nodes"])
        assert now["term"] == term, (now, cluster.logs())
        assert roles == ["follower", "follower", "leader"], (now, cluster.logs())
        assert owners(cluster) == before, cluster.logs()
        time.sleep(1.0)
    cluster.wait_done(ids, timeout=30)
    print(f"{SOAK:.0f}s soak: term {term} kept, 0 partition moves, {len(ids)} jobs done")
    assert not any("event=join_failed" in p.log.read_text() for p in procs), cluster.logs()

    # kill -9 the leader: the survivors re-elect, take its partitions, and run its jobs.
    leader = next(p for p in procs if cluster.node_of(p)["role"] == "leader")  # type: ignore[index]
    victim_parts = set(cluster.node_of(leader)["partitions"])  # type: ignore[index]
    survivors = [p for p in procs if p is not leader]
    killed = time.monotonic()
    cluster.kill9(leader)
    after = cluster.wait_balanced(survivors, timeout=45)
    print(f"failover: balanced on 2 nodes {time.monotonic() - killed:.1f}s after kill -9")
    assert after["term"] > term
    key = next(k for k in (f"victim-{i}" for i in range(10_000))
               if cluster.app.partition_for(k) in victim_parts)
    job = cluster.app.enqueue("rec", key, {"seq": -1, "ms": 1})
    wait_for(lambda: cluster.app.get_job(job).state == "succeeded", 30, 0.1,  # type: ignore[union-attr]
             "a job in a partition of the killed worker")
