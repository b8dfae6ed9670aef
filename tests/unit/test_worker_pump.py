"""The pump, the ownership events and the revocation drain, on the in-memory twins.

No database and no socket: the jobs live in :class:`tests.twins.MemoryJobs` (fenced like the
store), ownership comes from :class:`tests.twins.FixedCoordinator`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ringwork import App, Job
from ringwork.errors import DatabaseUnavailable
from tests.twins import FixedCoordinator, MemoryJobs, WorkerParts, until

PARTITIONS = 4


def make_app(**settings: Any) -> App:
    app = App(database_url="sqlite:///never-opened.db", partitions=PARTITIONS, cluster="twin")
    app.configure(**{"concurrency": 2, "poll_interval": 0.05, "retry_base": 0.01,
                     "retry_max": 0.02, "shutdown_grace": 5.0, **settings})
    return app


def run(app: App, body: Callable[[WorkerParts, MemoryJobs, FixedCoordinator], Awaitable[None]],
        jobs: MemoryJobs | None = None) -> WorkerParts:
    jobs = jobs or MemoryJobs(PARTITIONS)
    coordinator = FixedCoordinator(jobs, epochs=jobs.move(range(PARTITIONS), "node-a"))
    parts = WorkerParts(app, jobs, coordinator)

    async def main() -> None:
        await parts.start()
        await body(parts, jobs, coordinator)

    asyncio.run(asyncio.wait_for(main(), 30))
    return parts


def test_claims_never_exceed_free_capacity_and_every_job_succeeds_once() -> None:
    app = make_app()
    running, peak, ran = [0], [0], []
    lock = threading.Lock()

    @app.task("t")
    def t(job: Job) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
            ran.append(job.id)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        ids = [jobs.enqueue("t", f"k{i}", i % PARTITIONS) for i in range(9)]
        parts.wakeups.wake()
        await until(lambda: all(jobs.state(i) == "succeeded" for i in ids), message="all done")
        await parts.stop()

    parts = run(app, body)
    assert peak[0] <= 2 and sorted(ran) == list(range(1, 10))
    assert parts.stats.succeeded == 9 and parts.stats.claimed == 9


def test_a_revoked_partition_is_confirmed_the_moment_its_last_outcome_is_written() -> None:
    app = make_app()
    release = threading.Event()

    @app.task("t")
    def t(job: Job) -> None:
        release.wait(10)

    async def body(parts: WorkerParts, jobs: MemoryJobs, coord: FixedCoordinator) -> None:
        job_id = jobs.enqueue("t", "k", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "running")
        states_at_confirm: list[str] = []
        real = coord.revoke_done
        coord.revoke_done = lambda ps: (states_at_confirm.append(jobs.state(job_id)),  # type: ignore[method-assign]
                                        real(ps))
        coord.revoke([1, 2])
        await until(lambda: coord.confirmed)
        assert coord.confirmed == [frozenset({2})]  # nothing of 2: at once
        assert parts.ownership.revoking == {1}
        release.set()
        await until(lambda: len(coord.confirmed) == 2, message="1 confirmed")
        assert coord.confirmed[1] == frozenset({1})
        assert states_at_confirm[1] == "succeeded"  # written before it was handed over
        assert not parts.ownership.revoking
        await parts.stop()

    run(app, body)


def test_a_revocation_waits_for_a_claiming_round_that_is_out() -> None:
    app = make_app()
    entered, go = threading.Event(), threading.Event()

    @app.task("t")
    def t(job: Job) -> None:
        pass

    class HeldJobs(MemoryJobs):
        def exchange(self, *args: Any, **kwargs: Any) -> Any:
            if args[3] and not entered.is_set():  # the first claiming round
                entered.set()
                go.wait(10)
            return super().exchange(*args, **kwargs)

    async def body(parts: WorkerParts, jobs: MemoryJobs, coord: FixedCoordinator) -> None:
        job_id = jobs.enqueue("t", "k", 3)
        parts.wakeups.wake()
        await until(entered.is_set)
        coord.revoke([3])
        await asyncio.sleep(0.2)
        assert not coord.confirmed  # the round may bring back a job of 3
        go.set()
        await until(lambda: coord.confirmed, message="confirmation after the round")
        assert jobs.state(job_id) == "succeeded"
        await parts.stop()

    run(app, body, HeldJobs(PARTITIONS))


def test_outcomes_of_a_lost_partition_are_dropped_and_completions_with_stale_tokens_fenced(
) -> None:
    app = make_app()
    release = threading.Event()

    @app.task("t")
    def t(job: Job) -> None:
        release.wait(10)

    async def body(parts: WorkerParts, jobs: MemoryJobs, coord: FixedCoordinator) -> None:
        lost_job, fenced_job = jobs.enqueue("t", "a", 0), jobs.enqueue("t", "b", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(lost_job) == jobs.state(fenced_job) == "running")
        coord.lose([0])  # reported: the outcome is dropped
        jobs.move([1], "node-a")  # a newer epoch nobody told the worker of: the store fences
        release.set()
        await until(lambda: parts.stats.dropped == 1 and parts.stats.fenced == 1)
        assert jobs.state(lost_job) == "queued" and jobs.state(fenced_job) == "queued"
        await parts.stop()

    parts = run(app, body)
    assert parts.stats.succeeded == 0


def test_outcomes_survive_an_outage_and_are_written_once() -> None:
    app = make_app(db_backoff_max=0.05)

    @app.task("t")
    def t(job: Job) -> None:
        pass

    class Flaky(MemoryJobs):
        failures = 3

        def exchange(self, *args: Any, **kwargs: Any) -> Any:
            if args[1] and self.failures:  # rounds carrying outcomes fail first
                self.failures -= 1
                raise DatabaseUnavailable("simulated")
            return super().exchange(*args, **kwargs)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        ids = [jobs.enqueue("t", f"k{i}", i % PARTITIONS) for i in range(4)]
        parts.wakeups.wake()
        await until(lambda: all(jobs.state(i) == "succeeded" for i in ids))
        await parts.stop()

    parts = run(app, body, Flaky(PARTITIONS))
    assert parts.stats.succeeded == 4 and parts.stats.fenced == 0


def test_a_failed_attempt_is_retried_when_due_without_waiting_for_the_poll() -> None:
    app = make_app(poll_interval=30.0)
    attempts: list[int] = []

    @app.task("t", max_attempts=2)
    async def t(job: Job) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise asyncio.CancelledError()  # raised by the handler: a failed attempt

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("t", "k", 2)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "succeeded", 3, "the retry (poll is 30 s)")
        await parts.stop()

    parts = run(app, body)
    assert attempts == [1, 2] and parts.stats.retried == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_grace_abandons_what_still_runs_and_the_leave_is_not_held_up(kind: str) -> None:
    app = make_app(shutdown_grace=0.2)
    release = threading.Event()

    if kind == "sync":
        @app.task("t")
        def t(job: Job) -> None:
            release.wait(10)
    else:
        @app.task("t")
        async def t(job: Job) -> None:
            await asyncio.sleep(10)

    async def body(parts: WorkerParts, jobs: MemoryJobs, coord: FixedCoordinator) -> None:
        job_id = jobs.enqueue("t", "k", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "running")
        started = time.monotonic()
        await parts.stop()
        assert time.monotonic() - started < 1.5
        # Nothing written, nothing given back: the hand-over of partition 1 re-queues it.
        assert jobs.state(job_id) == "running" and jobs.calls.count("fail") == 0
        assert coord.confirmed_partitions() == set(range(PARTITIONS))
        release.set()

    parts = run(app, body)
    assert parts.stats.abandoned == 1
