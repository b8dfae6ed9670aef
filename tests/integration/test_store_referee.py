"""The referee in SQL: term CAS, partition epochs and re-queueing, node registry, wake-ups."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from ringwork.job import NewJob, Outcome
from ringwork.protocol.referee import Ownership, TermRecord
from ringwork.store import Store
from ringwork.store.schema import nodes as nodes_table


def test_fresh_cluster_has_term_zero_and_unowned_partitions(store: Store) -> None:
    assert store.read_term() == TermRecord(term=0, leader=None)
    assert store.read_partitions() == {p: Ownership(p, None, 0) for p in range(8)}


def test_claim_leadership_is_compare_and_set(store: Store) -> None:
    assert store.claim_leadership("a", 0) == 1
    assert store.claim_leadership("b", 0) is None  # saw an old term
    assert store.read_term() == TermRecord(term=1, leader="a")
    assert store.claim_leadership("b", 1) == 2
    assert store.read_term() == TermRecord(term=2, leader="b")


def test_two_contenders_with_the_same_seen_term_exactly_one_wins(make_store) -> None:
    stores = [make_store() for _ in range(6)]
    for s in stores:
        s.open()
    for _round in range(3):
        seen = stores[0].read_term().term
        barrier = threading.Barrier(len(stores))
        results: dict[str, int | None] = {}

        def contend(i: int, s: Store, seen: int = seen, barrier=barrier, results=results) -> None:
            barrier.wait(timeout=10)
            results[f"n{i}"] = s.claim_leadership(f"n{i}", seen)

        threads = [threading.Thread(target=contend, args=(i, s)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        winners = [n for n, term in results.items() if term is not None]
        assert len(results) == len(stores) and len(winners) == 1
        assert results[winners[0]] == seen + 1
        assert stores[0].read_term() == TermRecord(term=seen + 1, leader=winners[0])


def test_assign_bumps_epochs_and_rejects_a_stale_term(store: Store) -> None:
    term = store.claim_leadership("L", 0)
    assert term is not None
    assert store.assign("L", term, {0: "a", 1: "b"}) == {0: 1, 1: 1}
    assert store.assign("L", term, {1: "a", 2: None}) == {1: 2, 2: 1}
    parts = store.read_partitions()
    assert parts[0] == Ownership(0, "a", 1) and parts[1] == Ownership(1, "a", 2)
    assert parts[2] == Ownership(2, None, 1) and parts[3] == Ownership(3, None, 0)
    assert store.assign("L", term, {}) == {}
    # Another node takes the term: the old leader's writes change nothing.
    assert store.claim_leadership("M", term) == term + 1
    assert store.assign("L", term, {0: "L"}) is None
    assert store.assign("M", term, {0: "M"}) is None  # right leader, wrong term
    assert store.assign("L", term + 1, {0: "L"}) is None  # right term, wrong leader
    assert store.read_partitions() == parts
    with pytest.raises(ValueError):
        store.assign("M", term + 1, {8: "M"})


def test_reassignment_requeues_running_jobs_of_the_old_epoch(store: Store) -> None:
    term = store.claim_leadership("L", 0)
    assert term is not None
    epochs = store.assign("L", term, {0: "a", 1: "a"})
    assert epochs is not None
    ids = store.enqueue(
        [
            NewJob(task="t", key="x", partition=0),
            NewJob(task="t", key="y", partition=0, max_attempts=1),
            NewJob(task="t", key="z", partition=1),
        ]
    )
    claimed = {j.id: j for j in store.claim("a", epochs, 10)}
    assert set(claimed) == set(ids)
    # Partition 0 moves to b: its running jobs go back to the queue (attempt already counted),
    # or dead when that was the last attempt; partition 1's job is untouched.
    new = store.assign("L", term, {0: "b"})
    assert new == {0: 2}
    x, y, z = (store.get_job(i) for i in ids)
    assert x is not None and x.state == "queued" and x.attempts == 1 and x.claimed_by is None
    assert y is not None and y.state == "dead" and y.finished_at is not None
    assert y.last_error is not None and "worker a was lost" in y.last_error
    assert z is not None and z.state == "running" and z.claimed_by == "a"
    # The old owner is fenced; the new owner runs the job again with the new token.
    old = claimed[ids[0]]
    assert store.complete("a", [(old.id, old.token)]) == [old.id]
    assert store.fail("a", old.id, old.token, "late", retry_delay=1) is Outcome.FENCED
    [again] = store.claim("b", {0: 2}, 10)
    assert (again.id, again.attempt, again.token) == (ids[0], 2, 2)
    assert store.complete("b", [(again.id, again.token)]) == []
    assert store.complete("a", [(claimed[ids[2]].id, claimed[ids[2]].token)]) == []


def test_registry_orders_by_registration_and_is_idempotent(store: Store) -> None:
    s1 = store.register_node("n1", "tcp://h:1", pub_endpoint="tcp://h:2")
    s2 = store.register_node("n2", "tcp://h:3", wake_endpoint="udp://h:4")
    s3 = store.register_node("n3", "tcp://h:5")
    assert s1 < s2 < s3
    assert store.register_node("n1", "tcp://h:9") == s1  # same node: same seq, new endpoint
    nodes = store.list_nodes()
    assert [n.node_id for n in nodes] == ["n1", "n2", "n3"]
    assert [n.registered_seq for n in nodes] == [s1, s2, s3]
    n1, n2 = nodes[0], nodes[1]
    assert (n1.endpoint, n1.pub_endpoint, n1.wake_endpoint) == ("tcp://h:9", None, None)
    assert (n2.endpoint, n2.pub_endpoint, n2.wake_endpoint) == ("tcp://h:3", None, "udp://h:4")
    assert n1.last_seen.utcoffset() == timedelta(0)
    assert all(0.0 <= n.age < 60 for n in nodes)
    before = n2.last_seen
    deadline = time.monotonic() + 5
    while True:  # clocks have a resolution: touch until last_seen moves
        store.touch_node("n2")
        after = next(n for n in store.list_nodes() if n.node_id == "n2").last_seen
        if after > before or time.monotonic() > deadline:
            break
    assert after > before
    # Age is measured by the store's clock: it grows while a node stays silent.
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(nodes_table)
            .where(nodes_table.c.cluster == store.cluster, nodes_table.c.node_id == "n3")
            .values(last_seen=datetime.now(timezone.utc) - timedelta(seconds=30))
        )
    ages = {n.node_id: n.age for n in store.list_nodes()}
    assert 29 < ages["n3"] < 90 and ages["n2"] < 29
    store.deregister_node("n2")
    store.touch_node("n2")  # unknown node: no-op
    assert [n.node_id for n in store.list_nodes()] == ["n1", "n3"]
    # A node that comes back after leaving is a new member: it queues behind the others.
    assert store.register_node("n2", "tcp://h:3") > s3


def test_concurrent_registrations_get_distinct_increasing_seqs(make_store) -> None:
    stores = [make_store() for _ in range(4)]
    for s in stores:
        s.open()
    seqs: dict[str, int] = {}

    def register(i: int, s: Store) -> None:
        for k in range(5):
            seqs[f"n{i}-{k}"] = s.register_node(f"n{i}-{k}", f"tcp://h:{i}{k}")

    threads = [threading.Thread(target=register, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(set(seqs.values())) == 20
    assert [n.node_id for n in stores[0].list_nodes()] == sorted(seqs, key=seqs.__getitem__)


def test_listen_on_sqlite_is_none(tmp_path) -> None:
    with Store(f"sqlite:///{tmp_path / 'x.db'}", cluster="c", partitions=4) as s:
        assert s.listen() is None


@pytest.mark.postgres
def test_listen_notify_wakes_with_the_enqueued_partitions(pg_database_url: str) -> None:
    with (
        Store(pg_database_url, cluster="listen-a", partitions=16) as s,
        Store(pg_database_url, cluster="listen-b", partitions=16) as other,
    ):
        listener = s.listen()
        assert listener is not None
        try:
            assert listener.wait(0.05) == set()
            other.enqueue([NewJob(task="t", key="k", partition=1)])  # another cluster
            assert listener.wait(0.2) == set()
            started = time.monotonic()
            s.enqueue([NewJob(task="t", key=f"k{p}", partition=p) for p in (3, 5, 3)])
            assert listener.wait(5) == {3, 5}
            assert time.monotonic() - started < 2
            # Two batches before anyone waits: both are reported by one wait.
            s.enqueue([NewJob(task="t", key="a", partition=7)])
            s.enqueue([NewJob(task="t", key="b", partition=9)])
            deadline = time.monotonic() + 5
            seen: set[int] = set()
            while seen != {7, 9} and time.monotonic() < deadline:
                seen |= listener.wait(1)
            assert seen == {7, 9}
            # Jobs that are not due yet wake nobody.
            later = datetime.now(timezone.utc) + timedelta(hours=1)
            s.enqueue([NewJob(task="t", key="c", partition=2, run_at=later)])
            assert listener.wait(0.2) == set()
        finally:
            listener.close()


def _age_row(store: Store, node_id: str, seconds: float) -> None:
    """Make ``node_id``'s registry row look ``seconds`` old (by moving its last touch back)."""
    with store.engine.begin() as conn:
        seen = conn.execute(sa.select(nodes_table.c.last_seen).where(
            nodes_table.c.node_id == node_id, nodes_table.c.cluster == store.cluster)).scalar_one()
        conn.execute(sa.update(nodes_table).where(
            nodes_table.c.node_id == node_id, nodes_table.c.cluster == store.cluster,
        ).values(last_seen=seen - timedelta(seconds=seconds)))


def test_a_move_keeps_the_running_jobs_of_a_live_claimer(store: Store) -> None:
    """Fenced by job: the claimer is a member (``keep``) or fresh in the registry, so its jobs
    stay running under their claim when their partition moves, and their completion under
    that claim is accepted; the new owner claims the partition's other jobs at once."""
    term = store.claim_leadership("L", 0)
    assert term is not None
    store.register_node("a", "tcp://a", pub_endpoint=None, wake_endpoint=None)
    epochs = store.assign("L", term, {0: "a"})
    assert epochs is not None
    first, second, third = store.enqueue(
        [NewJob(task="t", key=k, partition=0) for k in ("x", "y", "z")])
    held = {j.id: j for j in store.claim("a", epochs, 2)}
    assert set(held) == {first, second}
    # A member: kept even with no registry row; a fresh row: kept without being a member.
    assert store.assign("L", term, {0: "b"}, keep=("a", "L"), stale_after=30.0) == {0: 2}
    assert store.assign("L", term, {0: "c"}, keep=("L",), stale_after=30.0) == {0: 3}
    for i in (first, second):
        record = store.get_job(i)
        assert record is not None and record.state == "running" and record.claimed_by == "a"
    [other] = store.claim("c", {0: 3}, 10)
    assert other.id == third
    job = held[first]
    assert store.complete("a", [(job.id, job.token)]) == []  # accepted under its claim
    record = store.get_job(first)
    assert record is not None and record.state == "succeeded" and record.attempts == 1


def test_a_move_re_queues_the_jobs_of_a_stale_claimer_that_is_no_member(store: Store) -> None:
    term = store.claim_leadership("L", 0)
    assert term is not None
    store.register_node("a", "tcp://a", pub_endpoint=None, wake_endpoint=None)
    epochs = store.assign("L", term, {0: "a"})
    assert epochs is not None
    [jid] = store.enqueue([NewJob(task="t", key="x", partition=0)])
    [job] = store.claim("a", epochs, 1)
    _age_row(store, "a", 60)
    # Still a member: kept (it may only be cut off from the database).
    assert store.assign("L", term, {0: "b"}, keep=("a",), stale_after=30.0) == {0: 2}
    assert store.get_job(jid).state == "running"  # type: ignore[union-attr]
    # No member and stale: dead; the job goes back to the queue, its late completion refused.
    assert store.assign("L", term, {0: "c"}, keep=("L",), stale_after=30.0) == {0: 3}
    record = store.get_job(jid)
    assert record is not None and record.state == "queued" and record.claimed_by is None
    assert store.complete("a", [(job.id, job.token)]) == [job.id]


def test_the_sweep_re_queues_jobs_a_dead_node_carried_past_a_move(store: Store) -> None:
    """A node kept its job when the partition moved on, then died: no later move of that
    partition would find the job, so the leader's sweep does (under the leader's term)."""
    term = store.claim_leadership("L", 0)
    assert term is not None
    for node in ("a", "b"):
        store.register_node(node, f"tcp://{node}", pub_endpoint=None, wake_endpoint=None)
    epochs = store.assign("L", term, {0: "a", 1: "b"})
    assert epochs is not None
    carried_id, current_id = store.enqueue(
        [NewJob(task="t", key="x", partition=0), NewJob(task="t", key="y", partition=1)])
    store.claim("a", {0: epochs[0]}, 1)
    store.claim("b", {1: epochs[1]}, 1)
    assert store.assign("L", term, {0: "b"}, keep=("a", "b"), stale_after=30.0) is not None
    assert store.requeue_orphans("L", term, ("a", "b"), 30.0) == 0
    _age_row(store, "a", 60)
    _age_row(store, "b", 60)
    assert store.requeue_orphans("L", term + 1, ("b",), 30.0) is None  # not our term: nothing
    assert store.get_job(carried_id).state == "running"  # type: ignore[union-attr]
    # a is dead now; b is stale too, but its job is of the current epoch: the move of its
    # partition decides about that one, not the sweep.
    assert store.requeue_orphans("L", term, (), 30.0) == 1
    assert store.get_job(carried_id).state == "queued"  # type: ignore[union-attr]
    assert store.get_job(current_id).state == "running"  # type: ignore[union-attr]
