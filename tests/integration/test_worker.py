"""The worker runtime against real SQLite and PostgreSQL, in-process (one worker thread)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

from ringwork import App, Job
from ringwork.errors import DatabaseUnavailable
from ringwork.job import NewJob
from ringwork.worker import cluster_node
from tests.support import running_worker, wait_for


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=8, cluster=cluster_name)
    app.configure(concurrency=4, poll_interval=5.0, retry_base=0.05, retry_max=0.2)
    yield app
    app.close()


def states(app: App, ids: list[int]) -> list[str]:
    return [app.get_job(i).state for i in ids]  # type: ignore[union-attr]


def all_in(app: App, ids: list[int], state: str) -> bool:
    return all(s == state for s in states(app, ids))


def test_runs_plain_and_async_handlers_within_concurrency(app: App) -> None:
    lock = threading.Lock()
    running = {"now": 0, "max": 0}
    seen: list[tuple[str, int, str, int, object, int]] = []

    def enter() -> None:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])

    def leave() -> None:
        with lock:
            running["now"] -= 1

    @app.task("plain")
    def plain(job: Job) -> None:
        enter()
        time.sleep(0.02)
        seen.append(("plain", job.id, job.key, job.partition, job.payload, job.attempt))
        leave()

    @app.task("coro")
    async def coro(job: Job) -> None:
        enter()
        await asyncio.sleep(0.02)
        seen.append(("coro", job.id, job.key, job.partition, job.payload, job.attempt))
        leave()

    ids = app.enqueue_many(
        [{"task": "plain" if i % 2 else "coro", "key": f"k{i}", "payload": {"i": i}}
         for i in range(40)]
    )
    with running_worker(app):
        wait_for(lambda: all_in(app, ids, "succeeded"), 30, message="all jobs succeeded")
    assert running["max"] <= 4
    assert running["max"] >= 2  # it really ran jobs concurrently
    assert len(seen) == 40
    for kind, job_id, key, partition, payload, attempt in seen:
        i = ids.index(job_id)
        assert key == f"k{i}" and payload == {"i": i} and attempt == 1
        assert partition == app.partition_for(key)
        assert kind == ("plain" if i % 2 else "coro")
    record = app.get_job(ids[0])
    assert record is not None and record.started_at and record.finished_at
    assert record.attempts == 1 and record.claimed_by is not None


def test_failure_is_retried_with_backoff_then_dead_with_error(app: App) -> None:
    attempts: dict[int, list[int]] = defaultdict(list)

    @app.task("once", max_attempts=3)
    def once(job: Job) -> None:
        attempts[job.id].append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("first try fails")

    @app.task("never", max_attempts=2)
    def never(job: Job) -> None:
        attempts[job.id].append(job.attempt)
        raise ValueError(f"bad payload {job.payload}")

    ok = app.enqueue("once", "a")
    bad = app.enqueue("never", "b", {"x": 1})
    with running_worker(app):
        wait_for(lambda: states(app, [ok, bad]) == ["succeeded", "dead"], 30,
                 message="retry then dead")
    assert attempts[ok] == [1, 2]
    assert attempts[bad] == [1, 2]
    dead = app.get_job(bad)
    assert dead is not None and dead.attempts == 2
    assert dead.last_error is not None
    assert dead.last_error.startswith("ValueError: bad payload {'x': 1}")
    assert "Traceback" in dead.last_error and "never" in dead.last_error


def test_unknown_task_is_dead_lettered_and_worker_keeps_going(app: App) -> None:
    @app.task("known")
    def known(job: Job) -> None: ...

    stray_job = NewJob(task="vanished", key="k", partition=app.partition_for("k"))
    [stray] = app.store.enqueue([stray_job])
    good = app.enqueue("known", "k2")
    with running_worker(app):
        wait_for(lambda: states(app, [stray, good]) == ["dead", "succeeded"], 30,
                 message="unknown task dead-lettered")
    record = app.get_job(stray)
    assert record is not None and "task 'vanished' is not registered" in (record.last_error or "")


def test_idle_worker_wakes_up_without_waiting_for_the_poll(app: App) -> None:
    started: dict[int, float] = {}

    @app.task("ping")
    def ping(job: Job) -> None:
        started[job.id] = time.monotonic()

    with running_worker(app):
        latencies = []
        for i in range(5):
            t0 = time.monotonic()
            job_id = app.enqueue("ping", f"k{i}")
            wait_for(lambda job_id=job_id: job_id in started, 4.0, 0.002, "job start")
            latencies.append(started[job_id] - t0)
    # poll_interval is 5 s: only a wake-up explains starts well under a second.
    assert max(latencies) < 1.0, latencies


def test_ordered_task_runs_one_at_a_time_per_key_in_order(app: App) -> None:
    app.configure(concurrency=8)
    log: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    @app.task("ledger", ordered=True)
    def ledger(job: Job) -> None:
        with lock:
            log.append(("S", job.key, job.payload["n"]))
        time.sleep(0.003)
        with lock:
            log.append(("E", job.key, job.payload["n"]))

    jobs = [{"task": "ledger", "key": f"acct-{i % 3}", "payload": {"n": i}} for i in range(30)]
    ids = app.enqueue_many(jobs)
    with running_worker(app):
        wait_for(lambda: all_in(app, ids, "succeeded"), 30, message="ordered jobs done")
    running: dict[str, int | None] = defaultdict(lambda: None)
    last: dict[str, int] = defaultdict(lambda: -1)
    for kind, key, n in log:
        if kind == "S":
            assert running[key] is None, f"{key}: job {n} started while {running[key]} ran"
            assert n > last[key], f"{key}: job {n} started after {last[key]}"
            running[key], last[key] = n, n
        else:
            running[key] = None


def test_graceful_stop_finishes_in_flight_jobs(app: App) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    @app.task("slow")
    def slow(job: Job) -> None:
        entered.release()
        release.wait(10)

    ids = app.enqueue_many([{"task": "slow", "key": f"k{i}"} for i in range(3)])
    with running_worker(app) as worker:
        for _ in range(3):
            assert entered.acquire(timeout=10)
        worker.request_stop()
        threading.Timer(0.2, release.set).start()
    assert all_in(app, ids, "succeeded")


def test_database_errors_are_retried_without_losing_outcomes(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[int] = []

    @app.task("t")
    def t(job: Job) -> None:
        done.append(job.id)

    store = app.store
    real_exchange = store.exchange
    failures = {"exchange": 5}

    def flaky_exchange(*args, **kwargs):  # type: ignore[no-untyped-def]
        if failures["exchange"] and (args[1] or failures["exchange"] > 3):
            # Fail claims first, then rounds that carry finished jobs' outcomes.
            failures["exchange"] -= 1
            raise DatabaseUnavailable("simulated outage")
        return real_exchange(*args, **kwargs)

    monkeypatch.setattr(store, "exchange", flaky_exchange)
    ids = app.enqueue_many([{"task": "t", "key": f"k{i}"} for i in range(10)])
    # The node on a thread: the worker then writes through the store patched here.
    with running_worker(app, coordinator=cluster_node(app, process=False)):
        wait_for(lambda: all_in(app, ids, "succeeded"), 30, message="jobs after outage")
    assert failures == {"exchange": 0}
    assert sorted(done) == sorted(ids)  # each ran exactly once: outcomes were kept, not re-run


def test_worker_that_loses_its_partitions_stops_claiming_them(app: App) -> None:
    """Another process takes the partitions (epoch bump): the worker reports them lost and
    claims nothing more there; the job it runs finishes under its own claim."""
    lost: list[set[int]] = []
    app.on_lost(lost.append)
    release = threading.Event()

    @app.task("block")
    def block(job: Job) -> None:
        release.wait(10)

    job_id = app.enqueue("block", "k")
    with running_worker(app) as worker:
        wait_for(lambda: app.get_job(job_id).state == "running", 10)  # type: ignore[union-attr]
        store = app.store
        term = store.claim_leadership("usurper", store.read_term().term)
        assert term is not None
        assert store.assign("usurper", term, dict.fromkeys(range(8), "usurper")) is not None
        wait_for(lambda: lost, 10, message="lost callback")
        assert not worker.coordinator.claimable()
        release.set()
        # Fenced by job: the worker lives (its registry row is fresh), so its running job kept
        # its claim through the epoch bump and its completion is accepted -- run once.
        wait_for(lambda: worker.stats.succeeded == 1, 10, message="completion written")
        assert worker.stats.fenced == 0
    record = app.get_job(job_id)
    assert record is not None and record.state == "succeeded" and record.attempts == 1
    assert lost[0] == set(range(8))


def test_claims_of_a_round_whose_commit_reply_was_lost_are_run(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round commits but the worker hears an error (connection cut after COMMIT): the jobs it
    claimed are running in the database and in no memory. They must be released and run."""
    ran: list[int] = []

    @app.task("t")
    def t(job: Job) -> None:
        ran.append(job.id)

    store = app.store
    real_exchange = store.exchange
    lost_round: list[list[int]] = []

    def exchange(*args, **kwargs):  # type: ignore[no-untyped-def]
        fenced, jobs = real_exchange(*args, **kwargs)
        if jobs and not lost_round:
            lost_round.append([j.id for j in jobs])
            raise DatabaseUnavailable("simulated: connection lost after COMMIT")
        return fenced, jobs

    monkeypatch.setattr(store, "exchange", exchange)
    ids = app.enqueue_many([{"task": "t", "key": f"k{i}"} for i in range(8)])
    with running_worker(app, coordinator=cluster_node(app, process=False)):
        wait_for(lambda: all_in(app, ids, "succeeded"), 30, message="every job ran")
    assert lost_round and set(lost_round[0]) <= set(ran)
    assert sorted(ran) == sorted(ids)
    for job_id in lost_round[0]:
        record = app.get_job(job_id)
        assert record is not None and record.attempts == 1  # the lost claim's attempt given back
