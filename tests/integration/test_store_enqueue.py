"""Bulk enqueue on both databases: PostgreSQL COPYs big chunks without dedupe keys, the rest (and
SQLite) go through one INSERT .. SELECT per chunk. Both must store exactly the same rows, so
every test here runs twice: with COPY taking every chunk it may, and with the default size
threshold (small batches, as most of these are, then take the INSERT)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from ringwork import App
from ringwork.errors import DatabaseError
from ringwork.job import NewJob
from ringwork.store import Store
from ringwork.store import enqueue as store_jobs
from tests.support import own_all

NODE = "node-a"
# Every character the COPY text format or JSON must escape, plus non-ASCII.
AWKWARD = ["tab\there", "new\nline", "cr\rhere", "back\\slash", 'qu"ote', "\\N", "ключ", "😀", ""]


@pytest.fixture(autouse=True, params=["copy", "insert"])
def enqueue_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "copy":
        monkeypatch.setattr(store_jobs, "COPY_MIN_ROWS", 1)
    return str(request.param)


def test_awkward_keys_tasks_and_payloads_round_trip(store: Store) -> None:
    payloads = [{"s": s, "list": [s, 1.5, None, True]} for s in AWKWARD] + ["\\", "\t", None]
    jobs = [
        NewJob(task=f"t{AWKWARD[i % len(AWKWARD)]}", key=AWKWARD[i % len(AWKWARD)],
               partition=i % store.partitions, payload=p, priority=i - 3)
        for i, p in enumerate(payloads)
    ]
    ids = store.enqueue(jobs)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for job_id, job in zip(ids, jobs, strict=True):
        rec = store.get_job(job_id)
        assert rec is not None
        assert (rec.task, rec.key, rec.partition, rec.payload, rec.priority) == (
            job.task, job.key, job.partition, job.payload, job.priority)
        assert (rec.state, rec.attempts, rec.max_attempts, rec.ordered, rec.dedupe_key) == (
            "queued", 0, 5, False, None)


def test_awkward_cluster_name(make_store) -> None:
    s = make_store(cluster="a\tb\\c\nd")
    [job_id] = s.enqueue([NewJob(task="t", key="k", partition=1, payload=[1])])
    rec = s.get_job(job_id)
    assert rec is not None and rec.cluster == "a\tb\\c\nd"


def test_prepared_jobs_store_their_encoded_payload(store: Store) -> None:
    app = App(partitions=store.partitions)

    @app.task("t")
    def t(job: object) -> None: ...

    encode = __import__("json").dumps
    built = [app._build(encode, "t", f"k{i}", {"i": i, "s": "\\"}) for i in range(3)]
    ids = store.enqueue(built)
    assert [store.get_job(i).payload for i in ids] == [  # type: ignore[union-attr]
        {"i": i, "s": "\\"} for i in range(3)
    ]


def test_ids_follow_input_order_across_chunks(store: Store) -> None:
    jobs = [NewJob(task="t", key=f"k{i}", partition=i % store.partitions, payload=i)
            for i in range(2345)]
    ids = store.enqueue(jobs)
    assert ids == sorted(ids) and len(set(ids)) == 2345
    for i in (0, 999, 1000, 2344):
        assert store.get_job(ids[i]).payload == i  # type: ignore[union-attr]


def test_mixed_batch_with_dedupe_keys_keeps_order_and_dedupes(store: Store) -> None:
    [held] = store.enqueue([NewJob(task="t", key="k", partition=0, dedupe_key="d1")])
    jobs = [
        NewJob(task="t", key="a", partition=1, payload=1),
        NewJob(task="t", key="b", partition=2, dedupe_key="d1"),
        NewJob(task="t", key="c", partition=3, payload=3),
        NewJob(task="t", key="d", partition=4, dedupe_key="d2"),
        NewJob(task="t", key="e", partition=5, dedupe_key="d2"),
    ]
    ids = store.enqueue(jobs)
    assert ids[1] == held and ids[3] == ids[4]
    fresh = [ids[0], ids[2], ids[3]]
    assert fresh == sorted(fresh) and fresh[0] > held
    assert store.get_job(ids[2]).payload == 3  # type: ignore[union-attr]


def test_run_at_and_priority_are_honoured(store: Store) -> None:
    epochs = own_all(store)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    naive_past = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=1)
    ids = store.enqueue([
        NewJob(task="t", key="a", partition=0, run_at=later),
        NewJob(task="t", key="b", partition=0, run_at=naive_past),
        NewJob(task="t", key="c", partition=0, priority=5),
    ])
    rec = store.get_job(ids[0])
    assert rec is not None and rec.run_at == later
    rec = store.get_job(ids[1])
    assert rec is not None and rec.run_at == naive_past.replace(tzinfo=timezone.utc)
    claimed = store.claim(NODE, epochs, 10)
    assert [j.id for j in claimed] == [ids[2], ids[1]]


def test_ordered_jobs_keep_fifo(store: Store) -> None:
    epochs = own_all(store)
    ids = store.enqueue([NewJob(task="o", key="k", partition=2, payload=i, ordered=True)
                         for i in range(3)])
    order = []
    for _ in range(3):
        [job] = store.claim(NODE, epochs, 10)
        order.append(job.id)
        assert store.complete(NODE, [(job.id, job.token)]) == []
    assert order == ids


@pytest.mark.postgres
def test_failed_copy_rolls_back_rows_and_notify(pg_database_url: str, enqueue_path: str) -> None:
    with Store(pg_database_url, cluster=f"enqueue-rollback-{enqueue_path}", partitions=8) as s:
        listener = s.listen()
        assert listener is not None
        try:
            with pytest.raises(DatabaseError):
                s.enqueue([NewJob(task="t", key="ok", partition=1),
                           NewJob(task="t", key="nul\x00", partition=2)])
            assert s.counts_by_state()["queued"] == 0
            assert listener.wait(0.3) == set()
            s.enqueue([NewJob(task="t", key="ok", partition=3)])
            assert listener.wait(5) == {3}
        finally:
            listener.close()


@pytest.mark.postgres
def test_text_that_is_not_utf8_is_a_database_error(pg_database_url: str, enqueue_path: str) -> None:
    store = Store(pg_database_url, cluster=f"enqueue-surrogate-{enqueue_path}", partitions=8)
    for job in (NewJob(task="t", key="a\ud800", partition=1),
                NewJob(task="t", key="a\ud800", partition=1, dedupe_key="d")):
        with pytest.raises(DatabaseError):
            store.enqueue([job])
    assert store.counts_by_state()["queued"] == 0
    store.close()


@pytest.mark.postgres
def test_notify_names_only_partitions_with_due_jobs(
    pg_database_url: str, enqueue_path: str
) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    with Store(pg_database_url, cluster=f"enqueue-notify-{enqueue_path}", partitions=8) as s:
        listener = s.listen()
        assert listener is not None
        try:
            s.enqueue([NewJob(task="t", key="a", partition=1, run_at=later)])
            assert listener.wait(0.3) == set()
            s.enqueue([
                NewJob(task="t", key="a", partition=1, run_at=later),
                NewJob(task="t", key="b", partition=2, run_at=datetime(2000, 1, 1)),
                NewJob(task="t", key="c", partition=5),
            ])
            seen: set[int] = set()
            deadline = time.monotonic() + 5
            while seen != {2, 5} and time.monotonic() < deadline:
                seen |= listener.wait(0.5)
            assert seen == {2, 5}
            s.enqueue([NewJob(task="t", key="d", partition=6, dedupe_key="x"),
                       NewJob(task="t", key="e", partition=7)])
            seen = set()
            deadline = time.monotonic() + 5
            while seen != {6, 7} and time.monotonic() < deadline:
                seen |= listener.wait(0.5)
            assert seen == {6, 7}
        finally:
            listener.close()


@pytest.mark.postgres
@pytest.mark.parametrize("due", ["now", "run_at"])
@pytest.mark.parametrize("spread", [store_jobs.WAKE_LIST_MAX, store_jobs.WAKE_LIST_MAX + 1])
def test_a_wake_up_lists_partitions_up_to_the_limit_then_wakes_everyone(
    pg_database_url: str, monkeypatch: pytest.MonkeyPatch, enqueue_path: str, due: str,
    spread: int,
) -> None:
    """The 1000-partition rule is the same in the INSERT's SQL and in the COPY path's Python.

    ``due``: jobs due at once (the COPY path's NOTIFY rides on its id statement) or by an
    absolute ``run_at`` in the past (a NOTIFY of its own, after the COPY).
    """
    partitions = spread + 100
    monkeypatch.setattr(store_jobs, "ENQUEUE_CHUNK", 10 * partitions)  # one statement
    if enqueue_path == "insert":
        monkeypatch.setattr(store_jobs, "COPY_MIN_ROWS", 10 * partitions)
    past = datetime.now(timezone.utc) - timedelta(hours=1) if due == "run_at" else None
    with Store(pg_database_url, cluster=f"wake-{spread}-{enqueue_path}-{due}",
               partitions=partitions) as s:
        listener = s.listen()
        assert listener is not None
        try:
            s.enqueue([NewJob(task="t", key=f"k{p}", partition=p, run_at=past)
                       for p in range(spread)])
            seen = listener.wait(5.0)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                seen |= listener.poll()
        finally:
            listener.close()
    everyone = spread > store_jobs.WAKE_LIST_MAX
    assert seen == set(range(partitions if everyone else spread))
