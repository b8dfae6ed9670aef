"""Static membership (``--node-name``) with real worker processes, on SQLite and PostgreSQL.

A rolling restart of named workers moves no partition to another node and runs no job twice;
a named worker killed outright gets its partitions back, and its stuck jobs re-queued, when it
comes back under its name; one that does not come back fails over after session_timeout; and
unnamed workers keep today's behaviour (a SIGTERM hands the partitions over at once).

Ownership is watched from the partitions table on a thread of the test, every 20 ms, and the
leaders' logs are read for every assignment they wrote; waits are conditions with deadlines.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringwork.store.restarts import restarted_error
from tests.acceptance.cluster import Cluster, Proc
from tests.support import wait_for

pytestmark = pytest.mark.slow

#: Longer than the clusters of the other acceptance tests (3 s): a restart must come back
#: within it, and a Python worker takes 1-2 s to start on an idle machine, 4-6 s on a loaded
#: one (measured here at a load average of 13).
SESSION = 10.0
NAMES = ("static-a", "static-b", "static-c")


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, cluster_name, tmp_path, session_timeout=SESSION)
    yield c
    c.close()


def start_named(cluster: Cluster, name: str) -> Proc:
    [proc] = cluster.start(1, "--node-name", name)
    return proc


def owners(cluster: Cluster) -> dict[int, tuple[str | None, int]]:
    return {p: (row.owner, row.epoch) for p, row in cluster.app.store.read_partitions().items()}


def named_balanced(cluster: Cluster, names: tuple[str, ...]) -> dict[str, object] | None:
    """The status if exactly ``names`` are live, one leads, and they own all 64 in balance."""
    doc = cluster.status()
    live = {n["name"]: n for n in doc["nodes"] if n["role"] != "stale"}
    if set(live) != set(names) or sum(n["role"] == "leader" for n in live.values()) != 1:
        return None
    counts = sorted(len(n["partitions"]) for n in live.values())
    owned = sorted(p for n in live.values() for p in n["partitions"])
    lo, hi = 64 // len(names), -(-64 // len(names))
    if owned != list(range(64)) or counts[0] < lo or counts[-1] > hi:
        return None
    return doc


class Watch:
    """Reads the partitions table every 20 ms on a thread; remembers every owner it saw."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: dict[int, set[str | None]] = {p: set() for p in range(64)}
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for p, (owner, _) in owners(self.cluster).items():
                self.seen[p].add(owner)
            self.reads += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Feeder:
    """Enqueues a few jobs every 50 ms on a thread until stopped: jobs arrive throughout."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(0.05):
            jobs = [{"task": "rec", "key": f"key-{(seq + i) % 200}",
                     "payload": {"seq": seq + i, "ms": 5}} for i in range(8)]
            self.ids += self.cluster.app.enqueue_many(jobs)
            seq += len(jobs)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(10)
        return self.ids


def moves_logged(cluster: Cluster) -> list[str]:
    """Every ``rebalance`` a leader logged that moved a partition (``moves=N``, N > 0)."""
    found = []
    for proc in cluster.procs:
        for line in proc.log.read_text().splitlines():
            m = re.search(r"event=rebalance .*moves=(\d+)", line)
            if m and int(m.group(1)) > 0:
                found.append(line)
    return found


def test_rolling_restart_of_named_nodes_moves_nothing_and_runs_nothing_twice(
    cluster: Cluster,
) -> None:
    procs = {name: start_named(cluster, name) for name in NAMES}
    doc = wait_for(lambda: named_balanced(cluster, NAMES), 60, 0.1, "3 named nodes balanced")
    assert all(n["name"] == n["id"] for n in doc["nodes"])  # type: ignore[attr-defined]
    first = moves_logged(cluster)  # the first balance places every partition: that is no move
    original = {p: owner for p, (owner, _) in owners(cluster).items()}
    assert set(original.values()) == set(NAMES)
    watch, feeder = Watch(cluster), Feeder(cluster)
    try:
        wait_for(lambda: cluster.app.store.counts_by_state()["succeeded"] > 100, 60, 0.1,
                 "jobs flowing")
        for name in NAMES:
            mine = {p for p, o in original.items() if o == name}
            epochs = {p: e for p, (_, e) in owners(cluster).items() if p in mine}
            proc = procs[name]
            stopped_at = cluster.signal(proc, signal.SIGTERM)
            assert proc.popen.wait(30) == 0, cluster.logs()
            procs[name] = start_named(cluster, name)

            def back(name: str = name, mine: set[int] = mine,
                     epochs: dict[int, int] = epochs) -> bool:
                now = owners(cluster)
                written = all(now[p][0] == name and now[p][1] > epochs[p] for p in mine)
                # ... and the new process heard it (it claims them):
                return written and "event=partition_assigned" in procs[name].log.read_text()

            wait_for(back, 60, 0.05, f"{name} has its partitions back at new epochs")
            took = time.time() - stopped_at
            assert took < 3 * SESSION, took
            wait_for(lambda: named_balanced(cluster, NAMES), 30, 0.1, "balanced again")
    finally:
        ids = feeder.stop()
        watch.stop()
    assert watch.reads > 50
    wrong = {p: seen - {original[p]} for p, seen in watch.seen.items() if seen - {original[p]}}
    assert not wrong, (wrong, cluster.logs())  # no partition was ever anyone else's
    assert moves_logged(cluster) == first, cluster.logs()
    cluster.wait_done(ids, timeout=90)
    counts = cluster.app.store.counts_by_state()
    assert counts["succeeded"] == len(ids) and counts["queued"] == counts["running"] == 0
    events = cluster.events()
    assert set(events.ends) >= set(ids)
    twice = {job: starts for job, starts in events.starts.items() if len(starts) > 1}
    assert not twice, list(twice.items())[:5]


def test_named_node_killed_gets_its_partitions_and_stuck_jobs_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    procs = {name: start_named(cluster, name) for name in NAMES}
    wait_for(lambda: named_balanced(cluster, NAMES), 60, 0.1, "3 named nodes balanced")
    original = {p: owner for p, (owner, _) in owners(cluster).items()}
    victim = NAMES[1]
    gate = tmp_path / "gate"
    # A job that runs until we say so, in one of the victim's partitions: it is in flight when
    # the victim is killed, and stays "running" under its name in the table.
    key = next(f"k{i}" for i in range(10_000)
               if original[cluster.app.partition_for(f"k{i}")] == victim)
    [job_id] = cluster.app.enqueue_many(
        [{"task": "gated", "key": key, "payload": {"gate": str(gate)}}])
    wait_for(lambda: cluster.app.get_job(job_id).state == "running", 30, 0.05, "gated runs")
    watch = Watch(cluster)
    try:
        cluster.kill9(procs[victim])
        gate.touch()  # its rerun finishes at once
        procs[victim] = start_named(cluster, victim)
        wait_for(lambda: cluster.app.get_job(job_id).state == "succeeded", 60, 0.05,
                 "the stuck job re-queued by the restart and run again")
        wait_for(lambda: named_balanced(cluster, NAMES), 30, 0.1, "balanced again")
    finally:
        watch.stop()
    record = cluster.app.get_job(job_id)
    assert record.attempts == 2 and record.last_error == restarted_error(victim)
    assert "event=restart_requeued" in procs[victim].log.read_text()
    wrong = {p: seen - {original[p]} for p, seen in watch.seen.items() if seen - {original[p]}}
    assert not wrong, (wrong, cluster.logs())


def test_named_node_that_does_not_come_back_fails_over_after_session_timeout(
    cluster: Cluster,
) -> None:
    procs = {name: start_named(cluster, name) for name in NAMES}
    wait_for(lambda: named_balanced(cluster, NAMES), 60, 0.1, "3 named nodes balanced")
    victim = NAMES[2]
    mine = {p for p, (o, _) in owners(cluster).items() if o == victim}
    stopped_at = cluster.signal(procs[victim], signal.SIGTERM)
    assert procs[victim].popen.wait(30) == 0, cluster.logs()

    def moved() -> bool:
        return all(owners(cluster)[p][0] not in (victim, None) for p in mine)

    wait_for(moved, 4 * SESSION, 0.05, f"{victim}'s partitions failed over")
    took = time.time() - stopped_at
    # Kept for it for about session_timeout (counted from its last heartbeat, up to a
    # heartbeat before the stop), then failed over like a dead node's.
    assert SESSION - 1.0 <= took <= 3 * SESSION, took
    survivors = NAMES[:2]
    wait_for(lambda: named_balanced(cluster, survivors), 30, 0.1, "survivors balanced")
    doc = cluster.status()
    stale = [n for n in doc["nodes"] if n["name"] == victim]
    assert [n["role"] for n in stale] in ([], ["stale"])  # its row ages out; nothing owns it
    ids = cluster.enqueue(300, keys=64)
    cluster.wait_done(ids)


def test_unnamed_nodes_hand_over_at_once_on_sigterm(cluster: Cluster) -> None:
    procs = cluster.start(3)
    doc = cluster.wait_balanced(procs)
    assert all(n["name"] == n["id"] for n in doc["nodes"])
    target = procs[-1]
    node = cluster.node_of(target, doc)
    assert node is not None
    stopped_at = cluster.signal(target, signal.SIGTERM)
    assert target.popen.wait(30) == 0, cluster.logs()
    cluster.wait_balanced(procs[:-1], timeout=SESSION)
    assert time.time() - stopped_at < SESSION  # a leave: nobody waited out the session
    # A restart is a new member under a new id: its partitions come from the others.
    [again] = cluster.start(1)
    doc = cluster.wait_balanced([*procs[:-1], again])
    new = cluster.node_of(again, doc)
    assert new is not None and new["id"] != node["id"]
