"""Results and history in the store: results ride on the completion, one attempt row per
attempt that changed its job (each path), retention takes them along, and waiting."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from ringwork.errors import JobNotFound, WaitTimeout
from ringwork.job import NewJob
from ringwork.store import Store
from ringwork.store.schema import attempts as attempts_table
from tests.support import own_all

NODE = "node-a"


def new(key: str = "k", partition: int = 0) -> NewJob:
    return NewJob(task="t", key=key, partition=partition)


def outcomes(store: Store, job_id: int) -> list[tuple[int, str | None, str]]:
    return [(a.attempt, a.node, a.outcome) for a in store.get_attempts(job_id)]


def test_completion_writes_results_and_one_attempt_row_per_job(store: Store) -> None:
    epochs = own_all(store, NODE)
    ids = store.enqueue([new(f"k{i}", i % 8) for i in range(4)])
    jobs = store.claim(NODE, epochs, 10)
    assert sorted(j.id for j in jobs) == ids
    done = [(j.id, j.token) for j in jobs]
    results = {ids[0]: json.dumps({"n": 1, "s": "é"}), ids[1]: json.dumps("text")}
    fenced, _ = store.exchange(NODE, done, {}, 0, results=results)
    assert fenced == []
    got = {i: store.get_job(i) for i in ids}
    assert got[ids[0]].result == {"n": 1, "s": "é"}  # type: ignore[union-attr]
    assert got[ids[1]].result == "text"  # type: ignore[union-attr]
    assert got[ids[2]].result is None and got[ids[2]].state == "succeeded"  # type: ignore
    for job in jobs:
        [row] = store.get_attempts(job.id)
        assert (row.attempt, row.node, row.epoch, row.outcome) == (1, NODE, job.token,
                                                                   "succeeded")
        assert row.error is None and row.started_at is not None
        assert row.finished_at is not None and row.finished_at >= row.started_at
    # A repeated completion (a round whose reply was lost) is fenced and adds no row.
    assert sorted(store.complete(NODE, done, results)) == sorted(ids)
    assert all(len(store.get_attempts(i)) == 1 for i in ids)


def test_a_fenced_completion_writes_neither_result_nor_attempt(store: Store) -> None:
    epochs = own_all(store, NODE)
    [jid] = store.enqueue([new()])
    [job] = store.claim(NODE, epochs, 1)
    assert store.complete("intruder", [(job.id, job.token)], {job.id: "1"}) == [job.id]
    assert store.complete(NODE, [(job.id, job.token + 1)], {job.id: "1"}) == [job.id]
    assert store.get_attempts(jid) == []
    assert store.get_job(jid).result is None  # type: ignore[union-attr]


def test_attempts_are_read_within_the_cluster(store: Store, make_store) -> None:
    epochs = own_all(store, NODE)
    [jid] = store.enqueue([new()])
    [job] = store.claim(NODE, epochs, 1)
    store.complete(NODE, [(job.id, job.token)])
    assert len(store.get_attempts(jid)) == 1
    assert make_store(cluster="elsewhere").get_attempts(jid) == []


def test_failures_cancels_and_hand_backs_are_recorded(store: Store) -> None:
    epochs = own_all(store, NODE)
    [jid] = store.enqueue([NewJob(task="t", key="k", partition=0, max_attempts=5)])
    [job] = store.claim(NODE, epochs, 1)
    store.fail(NODE, job.id, job.token, "ValueError: boom", retry_delay=0.0)
    [job] = store.claim(NODE, epochs, 1)
    assert store.abandon(NODE, [(job.id, job.token)]) == [jid]
    [job] = store.claim(NODE, epochs, 1)
    store.fail(NODE, job.id, job.token, "cancelled on request", retry_delay=None,
               cancelled=True)
    history = store.get_attempts(jid)
    assert [(a.attempt, a.node, a.outcome) for a in history] == [
        (1, NODE, "failed"), (2, NODE, "abandoned"), (3, NODE, "cancelled")]
    assert history[0].error == "ValueError: boom"
    assert "abandoned at shutdown" in (history[1].error or "")
    assert all(a.epoch == epochs[0] for a in history)
    # A fenced failure records nothing.
    store.fail(NODE, job.id, job.token, "late", retry_delay=0.0)
    assert len(store.get_attempts(jid)) == 3


def test_a_dead_workers_jobs_are_recorded_lost_by_the_requeue(store: Store) -> None:
    term = store.claim_leadership("L", 0)
    assert term is not None
    epochs = store.assign("L", term, {0: "a"})
    assert epochs is not None
    [jid] = store.enqueue([new()])
    [job] = store.claim("a", epochs, 1)
    # "a" has no registry row and is no member: dead; moving the partition re-queues its job.
    assert store.assign("L", term, {0: "c"}, keep=("L",), stale_after=30.0) == {0: 2}
    assert store.get_job(jid).state == "queued"  # type: ignore[union-attr]
    [row] = store.get_attempts(jid)
    assert (row.attempt, row.node, row.epoch, row.outcome) == (1, "a", job.token, "lost")
    assert "worker a was lost" in (row.error or "")
    assert store.complete("a", [(job.id, job.token)]) == [job.id]  # late: fenced, no row
    assert len(store.get_attempts(jid)) == 1


def test_a_worker_process_death_hands_back_all_with_rows(store: Store) -> None:
    epochs = own_all(store, NODE)
    ids = store.enqueue([new(f"k{i}", i % 8) for i in range(3)])
    store.claim(NODE, epochs, 10)
    assert sorted(store.abandon(NODE, None, "gone {node}")) == ids
    for jid in ids:
        assert outcomes(store, jid) == [(1, NODE, "abandoned")]
        assert store.get_attempts(jid)[0].error == f"gone {NODE}"


def test_retention_deletes_the_attempts_of_pruned_jobs(store: Store) -> None:
    epochs = own_all(store, NODE)
    old, young = store.enqueue([new("a"), new("b")])
    jobs = store.claim(NODE, epochs, 10)
    store.complete(NODE, [(j.id, j.token) for j in jobs])
    with store.engine.begin() as conn:  # make one of them finished long ago
        conn.execute(sa.text("UPDATE ringwork_jobs SET finished_at = :t WHERE id = :i"),
                     {"t": "2000-01-01 00:00:00.000000", "i": old})
    assert store.prune_jobs("succeeded", 3600) == 1
    with store.engine.connect() as conn:
        left = conn.execute(sa.select(attempts_table.c.job_id).where(
            attempts_table.c.job_id.in_([old, young]))).scalars().all()
    assert left == [young]


def test_wait_returns_the_finished_job_or_times_out(store: Store) -> None:
    epochs = own_all(store, NODE)
    [jid] = store.enqueue([new()])
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=f"job {jid} did not finish within 0.2 s"):
        store.wait(jid, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2.0
    with pytest.raises(TimeoutError):  # WaitTimeout is a builtin TimeoutError too
        store.wait(jid, timeout=0)
    with pytest.raises(JobNotFound):
        store.wait(10**12, timeout=1)

    def finish() -> None:
        [job] = store.claim(NODE, epochs, 1)
        store.complete(NODE, [(job.id, job.token)], {job.id: "[1, 2]"})

    timer = threading.Timer(0.3, finish)
    timer.start()
    try:
        record = store.wait(jid, timeout=10)
    finally:
        timer.join()
    assert record.state == "succeeded" and record.result == [1, 2]


def test_wait_async(store: Store) -> None:
    epochs = own_all(store, NODE)
    [jid] = store.enqueue([new()])

    async def main() -> None:
        with pytest.raises(WaitTimeout):
            await store.wait_async(jid, timeout=0.1)
        waiter = asyncio.create_task(store.wait_async(jid, timeout=10))
        await asyncio.sleep(0)  # let the waiter take its first look (the job is not done yet)
        [job] = await asyncio.to_thread(store.claim, NODE, epochs, 1)
        await asyncio.to_thread(store.fail, NODE, job.id, job.token, "E", retry_delay=None)
        record = await waiter
        assert record.state == "dead" and record.last_error == "E"

    asyncio.run(main())


def _slow_reads_and_a_finisher(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Callable[[], None],
                                                                list[float]]:
    """A queued job, reads 5 s apart (so only the NOTIFY can end a wait soon), and a call that
    finishes the job with a result (its time recorded) once the waiter has read the row and
    found it unfinished -- it LISTENs before that first read, so it is listening by then."""
    if store.dialect != "postgresql":
        pytest.skip("LISTEN is PostgreSQL's")
    from ringwork.store import wait as waiting

    monkeypatch.setattr(waiting, "FIRST_PAUSE", 5.0)
    monkeypatch.setattr(waiting, "MAX_PAUSE", 5.0)
    looked = threading.Event()
    read = waiting._finished

    def first_look(store_: Any, job_id: int) -> Any:
        record = read(store_, job_id)
        if record is None:
            looked.set()
        return record

    monkeypatch.setattr(waiting, "_finished", first_look)
    epochs = own_all(store, NODE)
    [jid] = store.enqueue([new()])
    finished_at: list[float] = []

    def finish() -> None:
        assert looked.wait(10), "the waiter never read the job"
        [job] = store.claim(NODE, epochs, 1)
        store.complete(NODE, [(job.id, job.token)], {job.id: '"ok"'})
        finished_at.append(time.monotonic())

    return jid, finish, finished_at


@pytest.mark.postgres
def test_postgres_wait_wakes_on_the_results_notification(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    jid, finish, finished_at = _slow_reads_and_a_finisher(store, monkeypatch)
    finisher = threading.Thread(target=finish)
    finisher.start()
    try:
        record = store.wait(jid, timeout=20)
    finally:
        finisher.join()
    assert record.result == "ok"
    assert time.monotonic() - finished_at[0] < 2.0


@pytest.mark.postgres
def test_postgres_wait_async_wakes_on_the_results_notification(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The async waiter listens too."""
    from ringwork.store import wait as waiting

    jid, finish, finished_at = _slow_reads_and_a_finisher(store, monkeypatch)

    async def main() -> None:
        waiter = asyncio.ensure_future(waiting.wait_async(store, jid, 20))
        await asyncio.to_thread(finish)  # once the waiter has read the row
        record = await waiter
        assert record.result == "ok"
        assert time.monotonic() - finished_at[0] < 2.0

    asyncio.run(main())
