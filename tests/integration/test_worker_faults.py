"""Handlers and callbacks that misbehave: the worker keeps its slots, its drain and its stop.

The jobs and the cluster are the in-memory twins of ``tests/twins.py``; the App's SQLite file
is only opened for its dialect. Each test names the bug it pins (issue 10).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ringwork import App, Job
from ringwork.worker import Worker
from tests.support import wait_for
from tests.twins import FixedCoordinator, MemoryJobs

PARTITIONS = 4


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = App(database_url=f"sqlite:///{tmp_path}/faults.db", partitions=PARTITIONS,
              cluster="faults")
    app.configure(concurrency=2, poll_interval=0.5, retry_base=0.01, retry_max=0.02,
                  shutdown_grace=20.0)
    yield app
    app.close()


@pytest.fixture
def jobs() -> MemoryJobs:
    return MemoryJobs(PARTITIONS)


@pytest.fixture
def coordinator(jobs: MemoryJobs) -> FixedCoordinator:
    return FixedCoordinator(jobs, epochs=jobs.move(range(PARTITIONS), "node-a"))


@contextmanager
def twin_worker(app: App, jobs: MemoryJobs, coordinator: FixedCoordinator,
                stop_within: float = 5.0) -> Iterator[Worker]:
    """A worker on a thread writing to ``jobs``; it must stop within ``stop_within`` s."""
    worker = Worker(app, coordinator=coordinator)  # type: ignore[arg-type]
    worker.writes = jobs
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run(install_signals=False)),
                              name="test-worker", daemon=True)
    thread.start()
    try:
        assert worker.wait_ready(10), "worker did not start"
        yield worker
    finally:
        stopped_at = time.monotonic()
        worker.request_stop()
        thread.join(60)
        took = time.monotonic() - stopped_at
    assert not thread.is_alive(), "worker did not stop"
    assert result == [0]
    assert took < stop_within, f"stop took {took:.1f} s"


@pytest.mark.parametrize("raised", [asyncio.CancelledError, KeyboardInterrupt, SystemExit])
def test_async_handler_raising_a_base_exception_fails_the_attempt(
    app: App, jobs: MemoryJobs, coordinator: FixedCoordinator, raised: type[BaseException]
) -> None:
    """Bug 2: the job stayed in flight forever (its slot lost, the stop waiting out the grace).
    A BaseException a handler raises is a failed attempt, retried by the task's policy, for
    ``async def`` handlers as for plain ones."""
    attempts: list[int] = []

    @app.task("t", max_attempts=3)
    async def t(job: Job) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise raised("from the handler")

    job_id = jobs.enqueue("t", "k", 1)
    with twin_worker(app, jobs, coordinator):
        wait_for(lambda: jobs.state(job_id) == "succeeded", 10, message="retried and done")
    assert attempts == [1, 2]
    assert (jobs.rows[job_id].last_error or "").startswith(raised.__name__)


def test_sync_and_async_handlers_share_one_exception_policy(
    app: App, jobs: MemoryJobs, coordinator: FixedCoordinator
) -> None:
    @app.task("plain", max_attempts=1)
    def plain(job: Job) -> None:
        raise KeyboardInterrupt("plain")

    @app.task("coro", max_attempts=1)
    async def coro(job: Job) -> None:
        raise KeyboardInterrupt("coro")

    ids = [jobs.enqueue("plain", "a", 0), jobs.enqueue("coro", "b", 1)]
    with twin_worker(app, jobs, coordinator) as worker:
        wait_for(lambda: all(jobs.state(i) == "dead" for i in ids), 10, message="both dead")
        # The store marks a job dead on the database thread; the pump counts it when the call
        # returns to the loop, a moment later.
        wait_for(lambda: worker.stats.dead == 2, 5, message="both counted dead")
    assert [jobs.rows[i].last_error.split(":")[0] for i in ids] == ["KeyboardInterrupt"] * 2  # type: ignore[union-attr]


def test_partition_callbacks_do_not_wait_behind_busy_handlers(
    app: App, jobs: MemoryJobs, coordinator: FixedCoordinator
) -> None:
    """Bug 3: callbacks ran on the handler pool, so every busy handler delayed them."""
    release = threading.Event()
    called: list[set[int]] = []
    entered: list[int] = []
    app.on_revoked(called.append)

    @app.task("block")
    def block(job: Job) -> None:
        entered.append(job.id)
        release.wait(30)

    ids = [jobs.enqueue("block", f"k{p}", p) for p in (0, 1)]  # concurrency is 2: all busy
    try:
        with twin_worker(app, jobs, coordinator):
            wait_for(lambda: all(jobs.state(i) == "running" for i in ids), 10)
            wait_for(lambda: len(entered) == 2, 10, message="both handlers entered")
            coordinator.revoke([3])
            wait_for(lambda: called, 3, message="the callback while handlers are busy")
            assert called == [{3}]
            release.set()
    finally:
        release.set()


def test_async_partition_callbacks_are_awaited(
    app: App, jobs: MemoryJobs, coordinator: FixedCoordinator
) -> None:
    """Bug 3: an ``async def`` callback was called on a thread and its coroutine dropped."""
    seen: list[tuple[str, set[int]]] = []

    @app.on_assigned
    async def assigned(partitions: set[int]) -> None:
        await asyncio.sleep(0)
        seen.append(("assigned", partitions))

    @app.on_lost
    async def lost(partitions: set[int]) -> None:
        await asyncio.sleep(0)
        seen.append(("lost", partitions))

    @app.on_revoked
    async def failing(partitions: set[int]) -> None:
        raise RuntimeError("a failing callback is logged, never fatal")

    with twin_worker(app, jobs, coordinator):
        coordinator.revoke([2])
        coordinator.assign([2])
        coordinator.lose([3])
        wait_for(lambda: len(seen) == 2, 3, message="both async callbacks")
    assert sorted(seen) == [("assigned", {2}), ("lost", {3})]
