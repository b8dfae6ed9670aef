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


def test_a_revoked_partition_is_confirmed_at_once_and_its_running_job_finishes_here() -> None:
    """Fenced by job: the revocation does not wait for the job (the leader moves the
    partition at once), the job keeps its claim across the move, and its completion is
    accepted: nothing runs twice, nothing waits."""
    app = make_app()
    release = threading.Event()

    @app.task("t")
    def t(job: Job) -> None:
        release.wait(10)

    async def body(parts: WorkerParts, jobs: MemoryJobs, coord: FixedCoordinator) -> None:
        job_id = jobs.enqueue("t", "k", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "running")
        coord.revoke([1, 2])
        await until(lambda: coord.confirmed_partitions() == {1, 2}, message="confirmed")
        assert jobs.state(job_id) == "running" and not parts.ownership.revoking
        jobs.move([1], "node-b")  # the leader hands it over; node-b claims its other jobs
        other = jobs.enqueue("t", "k2", 1)
        assert [j.id for j in jobs.claim("node-b", {1: jobs.owners[1][1]}, 5)] == [other]
        release.set()
        await until(lambda: jobs.state(job_id) == "succeeded", message="written under its claim")
        assert jobs.rows[job_id].attempts == 1
        await parts.stop()

    parts = run(app, body)
    assert parts.stats.succeeded == 1 and parts.stats.fenced == 0


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


def test_outcomes_of_a_lost_partition_are_written_and_refused_only_if_the_job_was_re_queued(
) -> None:
    app = make_app()
    release = threading.Event()

    @app.task("t")
    def t(job: Job) -> None:
        release.wait(10)

    async def body(parts: WorkerParts, jobs: MemoryJobs, coord: FixedCoordinator) -> None:
        kept, requeued = jobs.enqueue("t", "a", 0), jobs.enqueue("t", "b", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(kept) == jobs.state(requeued) == "running")
        coord.lose([0])  # taken while we live: the job keeps its claim
        coord.lose([1], dead=True)  # we were declared dead: the move re-queued its job
        release.set()
        await until(lambda: parts.stats.succeeded + parts.stats.fenced == 2)
        assert jobs.state(kept) == "succeeded" and jobs.state(requeued) == "queued"
        await parts.stop()

    parts = run(app, body)
    assert parts.stats.succeeded == 1 and parts.stats.fenced == 1


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
def test_the_grace_hands_back_what_still_runs_and_the_leave_is_not_held_up(kind: str) -> None:
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
        # Handed back by the worker itself (its claim would outlive the move otherwise),
        # the attempt counted, saying why; the partitions were given away at the stop.
        assert jobs.state(job_id) == "queued" and jobs.calls.count("abandon") == 1
        assert jobs.rows[job_id].attempts == 1
        assert "abandoned at shutdown after the grace period" in str(jobs.rows[job_id].last_error)
        assert coord.confirmed_partitions() == set(range(PARTITIONS))
        release.set()

    parts = run(app, body)
    assert parts.stats.abandoned == 1


def test_newly_assigned_partitions_are_claimed_from_first_once_each() -> None:
    """A moved partition's jobs waited through the move (a dead owner's through its failover):
    the next claims serve each newly assigned partition once before the older backlog."""
    app = make_app(concurrency=1)
    order: list[int] = []
    gate = threading.Event()

    @app.task("t")
    def t(job: Job) -> None:
        gate.wait(10)
        order.append(job.partition)

    assigned: list[set[int]] = []
    app.on_assigned(assigned.append)
    jobs = MemoryJobs(PARTITIONS)
    coordinator = FixedCoordinator(jobs, epochs=jobs.move([0, 1], "node-a"))
    parts = WorkerParts(app, jobs, coordinator)

    async def main() -> None:
        await parts.start()
        old = [jobs.enqueue("t", f"old{i}", i % 2) for i in range(6)]  # partitions 0 and 1
        new = [jobs.enqueue("t", f"new{p}", p) for p in (2, 3)]  # newer ids, not ours yet
        parts.wakeups.wake()
        await until(lambda: jobs.state(old[0]) == "running", message="the first old job runs")
        coordinator.assign([2, 3])
        await until(lambda: {2, 3} in assigned, message="the assignment reached the worker")
        gate.set()
        await until(lambda: all(jobs.state(i) == "succeeded" for i in old + new),
                    message="all done")
        await parts.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert order[0] in (0, 1)  # running when the partitions came
    assert sorted(order[1:3]) == [2, 3], order  # then each new partition, once
    assert set(order[3:]) == {0, 1}
