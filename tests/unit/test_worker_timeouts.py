"""Per-task timeouts and cancelling running jobs, on the in-memory twins (issue 11, items 2-3).

The jobs live in :class:`tests.twins.MemoryJobs` (fenced like the store); ``request_cancel``
there is what ``store.cancel`` does to a running job's row, and the worker's cancel watch polls
it every 0.05 s here.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from typing import Any

from ringwork import App, Job
from ringwork.worker.ledger import CANCELLED, Ledger
from tests.twins import FixedCoordinator, MemoryJobs, WorkerParts, until
from tests.unit.test_worker_pump import make_app, run


def test_an_async_handler_past_its_timeout_is_cancelled_retried_then_dead() -> None:
    app = make_app()
    starts: list[int] = []
    cancelled: list[int] = []

    @app.task("slow", timeout=0.2, max_attempts=2)
    async def slow(job: Job) -> None:
        starts.append(job.attempt)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(job.attempt)
            raise

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("slow", "k", 0, max_attempts=2)
        parts.wakeups.wake()
        began = time.monotonic()
        await until(lambda: jobs.state(job_id) == "dead", 10, "dead after two timeouts")
        took = time.monotonic() - began
        assert 0.4 <= took < 3, took
        row = jobs.rows[job_id]
        assert row.attempts == 2
        assert row.last_error is not None and "timed out after 0.2 s" in row.last_error
        await parts.stop()

    parts = run(app, body)
    assert starts == [1, 2] and cancelled == [1, 2]
    assert parts.stats.retried == 1 and parts.stats.dead == 1 and parts.stats.succeeded == 0


def test_a_sync_handler_past_its_timeout_is_recorded_at_the_deadline_its_late_success_dropped(
) -> None:
    app = make_app()
    release = threading.Event()
    returned = threading.Event()
    saw_flag: list[bool] = []

    @app.task("stuck", timeout=0.2, max_attempts=1)
    def stuck(job: Job) -> None:
        release.wait(10)
        saw_flag.append(job.cancel_requested)  # the timeout raises it for handlers that poll
        returned.set()

    class Recording(MemoryJobs):
        def __init__(self, partitions: int) -> None:
            super().__init__(partitions)
            self.completions: list[int] = []  # every id a round asked to complete

        def exchange(self, node_id: str, done: Any, owned: Any, limit: int) -> Any:
            self.completions += [job_id for job_id, _ in done]
            return super().exchange(node_id, done, owned, limit)

    recording = Recording(4)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("stuck", "k", 0, max_attempts=1)
        parts.wakeups.wake()
        began = time.monotonic()
        await until(lambda: jobs.state(job_id) == "dead", 5, "dead at the deadline")
        assert time.monotonic() - began < 2  # at the deadline, not when the thread returns
        assert parts.executor.overrunning == 1  # its thread is still busy: the slot is held
        release.set()
        await until(returned.is_set)
        await until(lambda: parts.executor.overrunning == 0, message="slot given back")
        await asyncio.sleep(0.2)  # time for a (wrong) completion round
        assert jobs.state(job_id) == "dead"
        assert recording.completions == []  # the late success never reached a round
        await parts.stop()

    parts = run(app, body, recording)
    assert saw_flag == [True]
    assert parts.stats.succeeded == 0 and parts.stats.fenced == 0


def test_a_late_success_of_a_timed_out_attempt_never_completes_the_next_attempt_here() -> None:
    """The claim token is the partition's epoch: attempt 2 of a job claimed by the same worker
    carries the same token as attempt 1, so the fence alone cannot tell them apart. The ledger
    holds attempts by identity, so attempt 1's late return is no outcome for attempt 2."""
    app = make_app(concurrency=2)
    gates = {1: threading.Event(), 2: threading.Event()}
    ended: list[int] = []

    @app.task("stuck", timeout=0.3, max_attempts=2)
    def stuck(job: Job) -> None:
        gates[job.attempt].wait(10)
        ended.append(job.attempt)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("stuck", "k", 0, max_attempts=2)
        parts.wakeups.wake()
        await until(lambda: jobs.rows[job_id].attempts == 2, 5, "attempt 2 running")
        assert jobs.state(job_id) == "running"
        gates[1].set()  # attempt 1 "succeeds" while attempt 2 runs, same node, same token
        await until(lambda: ended == [1])
        await asyncio.sleep(0.1)
        assert jobs.state(job_id) == "running", "attempt 1's late result was written"
        await until(lambda: jobs.state(job_id) == "dead", 5, "attempt 2 timed out too")
        gates[2].set()
        await until(lambda: ended == [1, 2])
        await parts.stop()

    parts = run(app, body)
    assert parts.stats.succeeded == 0


def test_a_timed_out_sync_handler_keeps_its_slot_until_its_thread_returns() -> None:
    app = make_app(concurrency=1)
    release = threading.Event()
    ran: list[str] = []

    @app.task("stuck", timeout=0.1, max_attempts=1)
    def stuck(job: Job) -> None:
        release.wait(10)

    @app.task("quick")
    def quick(job: Job) -> None:
        ran.append(threading.current_thread().name)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        first = jobs.enqueue("stuck", "a", 0, max_attempts=1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(first) == "dead")
        second = jobs.enqueue("quick", "b", 1)
        parts.wakeups.wake()
        await asyncio.sleep(0.3)
        assert jobs.state(second) == "queued"  # no thread free: not claimed, not waiting here
        release.set()
        await until(lambda: jobs.state(second) == "succeeded", 5, "claimed once the slot freed")
        await parts.stop()

    run(app, body)
    assert len(ran) == 1


def test_cancelling_a_running_async_job_cancels_its_handler_and_ends_it_cancelled() -> None:
    app = make_app()
    unwound = asyncio.Event()

    @app.task("wait")
    async def wait(job: Job) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            unwound.set()

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("wait", "k", 2)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "running")
        jobs.request_cancel(job_id)
        asked = time.monotonic()
        await until(lambda: jobs.state(job_id) == "cancelled", 2, "cancelled")
        assert time.monotonic() - asked < 1.0
        assert unwound.is_set()
        assert jobs.rows[job_id].attempts == 1  # not retried
        await parts.stop()

    parts = run(app, body)
    assert parts.stats.cancelled == 1 and parts.stats.retried == 0


def test_a_sync_handler_that_polls_cancel_requested_ends_cancelled_not_succeeded() -> None:
    app = make_app()
    polls: list[float] = []

    @app.task("poll")
    def poll(job: Job) -> None:
        deadline = time.monotonic() + 10
        while not job.cancel_requested and time.monotonic() < deadline:
            polls.append(time.monotonic())
            time.sleep(0.01)
        # returns normally: the attempt still ends cancelled

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("poll", "k", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "running" and polls)
        jobs.request_cancel(job_id)
        await until(lambda: jobs.state(job_id) == "cancelled", 2, "cancelled")
        await parts.stop()

    parts = run(app, body)
    assert parts.stats.cancelled == 1 and parts.stats.succeeded == 0


def test_a_sync_handler_ignoring_a_cancel_is_ended_cancelled_at_its_timeout() -> None:
    app = make_app()
    release = threading.Event()

    @app.task("deaf", timeout=0.5)
    def deaf(job: Job) -> None:
        release.wait(10)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("deaf", "k", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "running")
        jobs.request_cancel(job_id)
        await asyncio.sleep(0.2)
        assert jobs.state(job_id) == "running"  # it keeps running until it returns...
        await until(lambda: jobs.state(job_id) == "cancelled", 2, "...or its timeout")
        assert jobs.rows[job_id].attempts == 1
        release.set()
        await until(lambda: parts.executor.overrunning == 0)
        await parts.stop()

    run(app, body)


def test_a_failure_of_a_job_whose_cancel_was_requested_is_not_retried() -> None:
    app = make_app()
    go = threading.Event()

    @app.task("fails")
    def fails(job: Job) -> None:
        go.wait(10)
        raise RuntimeError("boom")

    class SlowWatch(MemoryJobs):
        def cancels_requested(self, ids: Any) -> list[int]:
            return []  # the worker never notices: the store's rule must hold on its own

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("fails", "k", 0)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "running")
        jobs.request_cancel(job_id)
        go.set()
        await until(lambda: jobs.state(job_id) == "cancelled", 2, "cancelled, not retried")
        await parts.stop()

    run(app, body, SlowWatch(4))


def test_the_ledger_takes_a_finished_attempt_only_if_it_is_the_one_it_holds() -> None:
    ledger = Ledger()
    first = Job(id=7, task="t", key="k", partition=0, payload=None, attempt=1, token=3)
    second = Job(id=7, task="t", key="k", partition=0, payload=None, attempt=2, token=3)
    ledger.claimed(second)
    assert first == second or first != second  # equality is not what the ledger goes by
    assert ledger.finished(first, None) is False
    assert ledger.holds(7) and not ledger.completed
    assert ledger.finished(second, ("cancelled on request", CANCELLED)) is True
    assert ledger.take_failure() == (second, "cancelled on request", CANCELLED)


def test_a_job_starts_uncancelled_and_its_flag_survives_a_pickle() -> None:
    job = Job(id=1, task="t", key="k", partition=0, payload=None, attempt=1)
    assert job.cancel_requested is False
    job.cancel_flag.set()
    assert job.cancel_requested is True
    copy = pickle.loads(pickle.dumps(job))
    assert copy == job and copy.cancel_requested is True
    fresh = Job(id=1, task="t", key="k", partition=0, payload=None, attempt=1)
    assert fresh == job and hash(fresh) == hash(job) and not fresh.cancel_requested


def test_a_task_keeps_its_timeout() -> None:
    app = App(database_url="sqlite:///never-opened.db", partitions=4)

    @app.task("a", timeout=2)
    def a(job: Job) -> None: ...

    @app.task("b")
    def b(job: Job) -> None: ...

    assert app.tasks["a"].timeout == 2.0 and isinstance(app.tasks["a"].timeout, float)
    assert app.tasks["b"].timeout is None
