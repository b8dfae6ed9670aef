"""Job lifecycle against the real databases: enqueue, claim, complete, fail, cancel, retry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from ringwork.errors import InvalidJobState, JobNotFound
from ringwork.job import JobState, NewJob, Outcome
from ringwork.store import Store
from ringwork.store.jobs import WORKER_GONE
from ringwork.store.schema import jobs as jobs_table
from tests.support import own_all

NODE = "node-a"


def new(key: str = "k", partition: int = 0, **kw: object) -> NewJob:
    kw.setdefault("task", "t")
    return NewJob(key=key, partition=partition, **kw)  # type: ignore[arg-type]


def test_enqueue_one_and_many_returns_ids_in_order(store: Store) -> None:
    [one] = store.enqueue([new("a", 1, payload={"x": 1})])
    many = store.enqueue([new(f"k{i}", i % 8, payload=[i]) for i in range(50)])
    assert len(many) == 50 and len(set(many)) == 50
    assert many == sorted(many) and many[0] > one
    rec = store.get_job(many[7])
    assert rec is not None
    assert (rec.key, rec.partition, rec.payload, rec.state) == ("k7", 7, [7], "queued")
    assert rec.attempts == 0 and rec.max_attempts == 5 and rec.claimed_by is None
    for ts in (rec.run_at, rec.enqueued_at):
        assert ts is not None and ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - ts) < timedelta(minutes=1)
    assert store.get_job(10**12) is None


def test_bulk_enqueue_is_one_statement_per_chunk(store: Store, count_statements) -> None:
    with count_statements(store.engine) as log:
        ids = store.enqueue([new(f"k{i}", i % 8) for i in range(900)])
    assert len(set(ids)) == 900
    assert log.count == 1, log.statements
    with count_statements(store.engine) as log:
        store.enqueue([new(f"k{i}", i % 8) for i in range(2500)])
    assert log.count == 3  # chunks of 1000


def test_payload_round_trips_json_types(store: Store) -> None:
    payloads = [None, "text", 3, 2.5, True, [1, "a"], {"nested": {"k": [None]}}, "0123"]
    ids = store.enqueue([new(payload=p) for p in payloads])
    assert [store.get_job(i).payload for i in ids] == payloads  # type: ignore[union-attr]


def test_dedupe_returns_existing_while_unfinished(store: Store) -> None:
    epochs = own_all(store)
    first = store.enqueue([new("a", 0, dedupe_key="d")])[0]
    # Same task + dedupe key: the same job; another task is a different job.
    assert store.enqueue([new("other-key", 3, dedupe_key="d")]) == [first]
    other_task = store.enqueue([new("a", 0, task="t2", dedupe_key="d")])[0]
    assert other_task != first
    # Within one batch, and mixed with plain jobs.
    batch = store.enqueue([new(dedupe_key="e"), new(), new(dedupe_key="d"), new(dedupe_key="e")])
    assert batch[0] == batch[3] and batch[2] == first and len(set(batch)) == 3
    # Still deduped while running...
    claimed = store.claim(NODE, epochs, 100)
    job = next(j for j in claimed if j.id == first)
    assert store.enqueue([new(dedupe_key="d")]) == [first]
    # ...but once it finished a new job is created.
    assert store.complete(NODE, [(job.id, job.token)]) == []
    again = store.enqueue([new(dedupe_key="d")])[0]
    assert again != first
    assert store.get_job(again).state == "queued"  # type: ignore[union-attr]


def test_partition_count_mismatch_is_a_clear_error(db_url: str, store: Store) -> None:
    from ringwork.errors import PartitionCountMismatch

    other = Store(db_url, cluster=store.cluster, partitions=32)
    with pytest.raises(PartitionCountMismatch) as info:
        other.open()
    assert str(info.value) == (
        f"cluster '{store.cluster}' has 8 partitions in the database, the app says 32"
    )
    other.close()


def test_claim_orders_by_priority_then_fifo_and_respects_run_at(store: Store) -> None:
    epochs = own_all(store)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    ids = store.enqueue(
        [
            new("a", 0),
            new("b", 1, priority=5),
            new("c", 2),
            new("d", 3, priority=5),
            new("e", 0, run_at=later, priority=100),
            new("f", 1, priority=-1),
            new("g", 2, run_at=datetime.now(timezone.utc) - timedelta(seconds=5)),
        ]
    )
    claimed = store.claim(NODE, epochs, 3)
    assert [j.id for j in claimed] == [ids[1], ids[3], ids[0]]
    claimed += store.claim(NODE, epochs, 100)
    assert [j.id for j in claimed] == [ids[1], ids[3], ids[0], ids[2], ids[6], ids[5]]
    assert all(j.attempt == 1 and j.token == epochs[j.partition] for j in claimed)
    rec = store.get_job(ids[1])
    assert rec is not None and rec.state == "running" and rec.claimed_by == NODE
    assert rec.started_at is not None and rec.claim_epoch == epochs[1]
    assert store.claim(NODE, epochs, 100) == []  # the future job stays queued


def test_claim_only_owned_partitions_at_current_epoch(store: Store) -> None:
    term = store.claim_leadership("L", 0)
    assert term == 1
    epochs = store.assign("L", term, {0: NODE, 1: NODE, 2: "node-b"})
    assert epochs == {0: 1, 1: 1, 2: 1}
    ids = store.enqueue([new(f"k{p}", p) for p in range(4)])
    # Asking for partitions we do not own, or at a stale epoch, or as another node: nothing.
    assert store.claim(NODE, {2: 1, 3: 0}, 10) == []
    assert store.claim(NODE, {0: 0, 1: 7}, 10) == []
    assert store.claim("node-c", {0: 1}, 10) == []
    got = store.claim(NODE, {0: 1, 1: 1, 2: 1}, 10)
    assert sorted(j.id for j in got) == ids[:2]
    assert [j.id for j in store.claim("node-b", {2: 1}, 10)] == [ids[2]]


def test_completion_with_stale_token_is_fenced(store: Store) -> None:
    epochs = own_all(store)
    ids = store.enqueue([new(f"k{i}", 0) for i in range(4)])
    a, b, c, d = store.claim(NODE, epochs, 4)
    # Wrong token, wrong node, unknown job: fenced, nothing changes.
    fenced = store.complete(NODE, [(a.id, a.token + 1), (b.id, b.token), (10**12, 1)])
    assert fenced == [a.id, 10**12]
    assert store.complete("node-z", [(c.id, c.token)]) == [c.id]
    assert store.get_job(a.id).state == "running"  # type: ignore[union-attr]
    assert store.get_job(c.id).state == "running"  # type: ignore[union-attr]
    # Completing twice: the second is fenced (the job is not running any more).
    assert store.complete(NODE, [(b.id, b.token)]) == [b.id]
    rec = store.get_job(b.id)
    assert rec is not None and rec.state == "succeeded" and rec.finished_at is not None
    # A reassignment bumps the epoch: the old tokens are dead even though the ids match.
    term = store.read_term().term
    store.assign(NODE, term, {0: NODE})
    assert store.complete(NODE, [(c.id, c.token), (d.id, d.token)]) == [c.id, d.id]
    assert store.fail(NODE, c.id, c.token, "late", retry_delay=0) is Outcome.FENCED
    assert len(ids) == 4


def test_fail_retries_with_backoff_then_dead(store: Store) -> None:
    epochs = own_all(store)
    [jid] = store.enqueue([new(max_attempts=2)])
    [job] = store.claim(NODE, epochs, 1)
    before = datetime.now(timezone.utc)
    assert store.fail(NODE, job.id, job.token, "boom 1", retry_delay=30) is Outcome.RETRY
    rec = store.get_job(jid)
    assert rec is not None and rec.state == "queued" and rec.last_error == "boom 1"
    assert rec.attempts == 1 and rec.claimed_by is None
    assert rec.run_at is not None and rec.run_at >= before + timedelta(seconds=29)
    assert store.claim(NODE, epochs, 1) == []  # backing off
    # Make it due now, run the second (last) attempt and fail it.
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(jobs_table)
            .where(jobs_table.c.id == jid)
            .values(run_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        )
    [job] = store.claim(NODE, epochs, 1)
    assert job.attempt == 2
    # A stale token changes nothing.
    assert store.fail(NODE, job.id, job.token - 1, "zombie", retry_delay=1) is Outcome.FENCED
    assert store.fail(NODE, job.id, job.token, "boom 2", retry_delay=1) is Outcome.DEAD
    rec = store.get_job(jid)
    assert rec is not None and rec.state == "dead" and rec.last_error == "boom 2"
    assert rec.finished_at is not None and rec.attempts == 2


def test_fail_without_retry_delay_dead_letters_at_once(store: Store) -> None:
    epochs = own_all(store)
    [jid] = store.enqueue([new(task="nobody-handles-this")])
    [job] = store.claim(NODE, epochs, 1)
    assert store.fail(NODE, job.id, job.token, "unknown task", retry_delay=None) is Outcome.DEAD
    rec = store.get_job(jid)
    assert rec is not None and rec.state == "dead" and rec.attempts == 1


def test_cancel_and_retry(store: Store) -> None:
    epochs = own_all(store)
    a, b = store.enqueue([new("a"), new("b", 1)])
    store.cancel(a)
    assert store.get_job(a).state == "cancelled"  # type: ignore[union-attr]
    with pytest.raises(InvalidJobState):
        store.cancel(a)
    with pytest.raises(JobNotFound):
        store.cancel(10**12)
    with pytest.raises(JobNotFound):
        store.retry(10**12)
    [job] = store.claim(NODE, epochs, 10)
    assert store.cancel(b) == "requested"  # issue 11: a running job's cancel is recorded
    with pytest.raises(InvalidJobState):
        store.retry(b)
    store.fail(NODE, job.id, job.token, "bad", retry_delay=None)
    store.retry(b)
    rec = store.get_job(b)
    assert rec is not None and rec.state == "queued" and rec.attempts == 0
    assert rec.last_error == "bad" and rec.finished_at is None
    store.retry(a)  # a cancelled job can be retried too
    assert {j.id for j in store.claim(NODE, epochs, 10)} == {a, b}


def test_retry_refuses_to_duplicate_an_unfinished_dedupe_key(store: Store) -> None:
    [a] = store.enqueue([new(dedupe_key="d")])
    store.cancel(a)
    [b] = store.enqueue([new(dedupe_key="d")])
    assert b != a
    with pytest.raises(InvalidJobState, match="dedupe"):
        store.retry(a)
    assert store.get_job(a).state == "cancelled"  # type: ignore[union-attr]


def test_ordered_keys_run_one_at_a_time_in_fifo_order(store: Store) -> None:
    epochs = own_all(store)
    k1 = store.enqueue([new("k1", 0, ordered=True, priority=p) for p in (0, 9, 5)])
    k2 = store.enqueue([new("k2", 0, ordered=True), new("k2", 0, ordered=True)])
    plain = store.enqueue([new("k1", 0), new("k1", 0)])  # not ordered: never blocked
    # One per ordered key per batch, and only the head of each key.
    first = store.claim(NODE, epochs, 100)
    assert sorted(j.id for j in first) == sorted([k1[0], k2[0], *plain])
    assert store.claim(NODE, epochs, 100) == []
    # The head fails and waits to retry: it still blocks the rest of its key.
    head = next(j for j in first if j.id == k1[0])
    assert store.fail(NODE, head.id, head.token, "x", retry_delay=3600) is Outcome.RETRY
    assert store.claim(NODE, epochs, 100) == []
    # k2's head succeeds: its next job becomes runnable.
    k2head = next(j for j in first if j.id == k2[0])
    store.complete(NODE, [(k2head.id, k2head.token)])
    assert [j.id for j in store.claim(NODE, epochs, 100)] == [k2[1]]
    # k1's head is given up (dead): FIFO moves on, ignoring priority across the key.
    with store.engine.begin() as conn:
        conn.execute(sa.update(jobs_table).where(jobs_table.c.id == k1[0]).values(state="dead"))
    assert [j.id for j in store.claim(NODE, epochs, 100)] == [k1[1]]
    assert store.claim(NODE, epochs, 100) == []


def test_at_most_one_running_job_per_ordered_key_is_a_constraint(store: Store) -> None:
    a, b = store.enqueue([new("k", 0, ordered=True), new("k", 0, ordered=True)])
    running = sa.update(jobs_table).values(state="running", claimed_by="x", claim_epoch=1)
    with store.engine.begin() as conn:
        conn.execute(running.where(jobs_table.c.id == a))
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(running.where(jobs_table.c.id == b))


def test_counts_backlog_and_listing(store: Store) -> None:
    epochs = own_all(store)
    store.enqueue([new(f"k{i}", i % 3, task="a" if i < 4 else "b") for i in range(6)])
    [job] = store.claim(NODE, {0: epochs[0]}, 1)
    store.complete(NODE, [(job.id, job.token)])
    counts = store.counts_by_state()
    assert counts == {"queued": 5, "running": 0, "succeeded": 1, "dead": 0, "cancelled": 0}
    assert set(counts) == {s.value for s in JobState}
    assert store.backlog_by_partition() == {0: 1, 1: 2, 2: 2}
    listed = store.list_jobs()
    assert [r.id for r in listed] == sorted((r.id for r in listed), reverse=True)
    assert len(store.list_jobs(limit=2)) == 2
    assert {r.task for r in store.list_jobs(task="b")} == {"b"}
    assert [r.id for r in store.list_jobs(state="succeeded")] == [job.id]
    assert store.list_jobs(state=JobState.SUCCEEDED)[0].id == job.id
    with pytest.raises(ValueError):
        store.list_jobs(state="bogus")


def test_clusters_are_isolated(store: Store, make_store) -> None:
    other = make_store(cluster=store.cluster + "-other")
    [a] = store.enqueue([new()])
    assert other.get_job(a) is None
    assert other.counts_by_state()["queued"] == 0
    with pytest.raises(JobNotFound):
        other.cancel(a)


def test_a_worker_hands_back_what_it_will_not_finish_fenced_by_claim(store: Store) -> None:
    """At the end of a shutdown grace: each job goes back to the queue at once with its
    attempt counted and an error that says why (dead if that was its last attempt, cancelled
    if a cancel was asked); a pair whose claim is not this worker's is refused."""
    epochs = own_all(store, NODE)
    a, b, c, d = store.enqueue([new("a"), new("b", max_attempts=1), new("c"), new("d")])
    claimed = {j.id: j for j in store.claim(NODE, epochs, 4)}
    assert store.cancel(c) == "requested"
    pairs = [(i, claimed[i].token) for i in (a, b, c)]
    assert store.abandon("someone-else", pairs) == []
    assert store.abandon(NODE, [*pairs, (d, claimed[d].token + 1)]) == [a, b, c]
    ra, rb, rc, rd = (store.get_job(i) for i in (a, b, c, d))
    assert ra is not None and ra.state == "queued" and ra.attempts == 1 and ra.claimed_by is None
    assert ra.last_error == f"abandoned at shutdown after the grace period (worker {NODE})"
    assert rb is not None and rb.state == "dead" and rb.finished_at is not None
    assert rc is not None and rc.state == "cancelled"
    assert rd is not None and rd.state == "running"  # a stale token: not handed back
    # The node of a worker process that died hands back everything it still runs.
    assert store.abandon(NODE, None, WORKER_GONE) == [d]
    rd = store.get_job(d)
    assert rd is not None and rd.state == "queued" and "its process died" in str(rd.last_error)
    [again] = store.claim(NODE, epochs, 1)
    assert again.attempt == 2
