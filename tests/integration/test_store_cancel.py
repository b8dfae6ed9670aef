"""Cancel of running jobs, bulk cancel and bulk retry, on SQLite and PostgreSQL (issue 11)."""

from __future__ import annotations

import pytest

from ringwork.errors import InvalidJobState, JobNotFound
from ringwork.job import NewJob, Outcome
from ringwork.store import Store
from tests.support import own_all

NODE = "node-a"


def new(key: str = "k", partition: int = 0, **kw: object) -> NewJob:
    kw.setdefault("task", "t")
    return NewJob(key=key, partition=partition, **kw)  # type: ignore[arg-type]


def test_cancel_of_a_running_job_records_the_request_and_its_worker_ends_it(
    store: Store,
) -> None:
    epochs = own_all(store)
    [a, b] = store.enqueue([new("a"), new("b")])
    [ja, jb] = store.claim(NODE, epochs, 2)
    assert store.cancels_requested([a, b]) == []
    assert store.cancel(a) == "requested"
    first = store.get_job(a)
    assert first is not None and first.state == "running"
    assert first.cancel_requested_at is not None
    assert store.cancel(a) == "requested"  # again: the first request's time is kept
    assert store.get_job(a).cancel_requested_at == first.cancel_requested_at  # type: ignore[union-attr]
    assert store.cancels_requested([a, b, 10**12]) == [a]
    # Ended under its claim token: a stale token is fenced, the right one cancels.
    assert store.fail(NODE, a, ja.token + 1, "x", retry_delay=None,
                      cancelled=True) is Outcome.FENCED
    assert store.fail(NODE, a, ja.token, "cancelled on request", retry_delay=None,
                      cancelled=True) is Outcome.CANCELLED
    rec = store.get_job(a)
    assert rec is not None and rec.state == "cancelled" and rec.finished_at is not None
    assert rec.attempts == 1
    assert store.cancels_requested([a]) == []  # not running any more
    # A completion still wins if it got there first (the work was done).
    store.cancel(b)
    assert store.complete(NODE, [(b, jb.token)]) == []
    assert store.get_job(b).state == "succeeded"  # type: ignore[union-attr]


def test_a_failed_attempt_of_a_job_whose_cancel_was_requested_is_not_retried(
    store: Store,
) -> None:
    epochs = own_all(store)
    [a] = store.enqueue([new(max_attempts=5)])
    [job] = store.claim(NODE, epochs, 1)
    store.cancel(a)
    assert store.fail(NODE, a, job.token, "boom", retry_delay=0) is Outcome.CANCELLED
    rec = store.get_job(a)
    assert rec is not None and rec.state == "cancelled" and rec.last_error == "boom"


def test_a_cancelled_job_lost_with_its_worker_is_not_run_again(store: Store) -> None:
    epochs = own_all(store)
    [a, b] = store.enqueue([new("a"), new("b")])
    store.claim(NODE, epochs, 2)
    store.cancel(a)
    term = store.read_term().term
    store.assign(NODE, term, {0: "node-b"})  # the worker is gone: its jobs are re-queued
    assert store.get_job(a).state == "cancelled"  # type: ignore[union-attr]
    assert store.get_job(b).state == "queued"  # type: ignore[union-attr]


def test_a_released_claim_of_a_cancelled_job_ends_cancelled(store: Store) -> None:
    epochs = own_all(store)
    [a] = store.enqueue([new()])
    store.claim(NODE, epochs, 1)
    store.cancel(a)
    assert store.release_unknown(NODE, []) == [a]
    rec = store.get_job(a)
    assert rec is not None and rec.state == "cancelled" and rec.attempts == 0


def test_cancel_of_a_finished_job_is_a_one_line_error(store: Store) -> None:
    epochs = own_all(store)
    [a] = store.enqueue([new()])
    [job] = store.claim(NODE, epochs, 1)
    store.complete(NODE, [(a, job.token)])
    with pytest.raises(InvalidJobState) as info:
        store.cancel(a)
    assert str(info.value) == (
        f"job {a} is succeeded; only a queued or running job can be cancelled")
    with pytest.raises(JobNotFound):
        store.cancel(10**12)


def test_retry_of_a_cancelled_job_clears_its_request(store: Store) -> None:
    epochs = own_all(store)
    [a] = store.enqueue([new()])
    [job] = store.claim(NODE, epochs, 1)
    store.cancel(a)
    store.fail(NODE, a, job.token, "c", retry_delay=None, cancelled=True)
    store.retry(a)
    rec = store.get_job(a)
    assert rec is not None and rec.state == "queued" and rec.cancel_requested_at is None
    [again] = store.claim(NODE, epochs, 1)
    assert store.fail(NODE, a, again.token, "boom", retry_delay=0) is Outcome.RETRY


def test_cancel_task_cancels_its_queued_jobs_and_asks_its_running_ones(store: Store) -> None:
    epochs = own_all(store)
    ids = store.enqueue([new(f"k{i}", i % 4) for i in range(6)])
    other = store.enqueue([new("o", 0, task="other"), new("p", 1, task="other")])
    running = store.claim(NODE, epochs, 2)
    assert {j.task for j in running} == {"t"}
    assert store.cancel_task("t") == (4, 2)  # 4 queued cancelled, 2 running asked
    states = {i: store.get_job(i).state for i in ids}  # type: ignore[union-attr]
    assert sorted(states.values()) == ["cancelled"] * 4 + ["running"] * 2
    assert sorted(store.cancels_requested([j.id for j in running])) == sorted(
        j.id for j in running if j.task == "t")
    assert store.cancel_task("t") == (0, 0)  # nothing left to change
    assert {store.get_job(i).state for i in other} <= {"queued", "running"}  # type: ignore[union-attr]


def test_retry_all_queues_every_dead_job_of_a_task_and_skips_dedupe_collisions(
    store: Store,
) -> None:
    epochs = own_all(store)
    dead = store.enqueue([new(f"k{i}", 0, max_attempts=1) for i in range(3)])
    keyed = store.enqueue([new("d", 0, max_attempts=1, dedupe_key="same")])
    other = store.enqueue([new("o", 0, task="other", max_attempts=1)])
    for job in store.claim(NODE, epochs, 10):
        store.fail(NODE, job.id, job.token, "boom", retry_delay=0)
    assert all(store.get_job(i).state == "dead" for i in dead + keyed + other)  # type: ignore[union-attr]
    [holder] = store.enqueue([new("d2", 0, dedupe_key="same")])  # holds the key now
    assert store.retry_all("dead", "t") == (3, 1)
    assert {store.get_job(i).state for i in dead} == {"queued"}  # type: ignore[union-attr]
    assert store.get_job(keyed[0]).state == "dead"  # type: ignore[union-attr]
    assert store.get_job(other[0]).state == "dead"  # type: ignore[union-attr]
    assert store.get_job(dead[0]).attempts == 0  # type: ignore[union-attr]
    store.cancel(holder)
    assert store.retry_all() == (2, 0)  # every dead job, any task; the key is free now
    assert store.get_job(keyed[0]).state == "queued"  # type: ignore[union-attr]
    assert store.retry_all("cancelled") == (0, 1)  # the holder's key is taken back
    with pytest.raises(InvalidJobState):
        store.retry_all("running")
