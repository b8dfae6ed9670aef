"""Per-task policy in the executor and the pump, on the in-memory twins (no database, no socket):
``retry=Retry(...)``, ``concurrency=`` and ``block_key_on_dead=``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ringwork import App, Job, Retry
from ringwork.worker.executor import Executor
from tests.twins import FixedCoordinator, MemoryJobs, WorkerParts, until
from tests.unit.test_worker_pump import PARTITIONS, make_app, run


def job(task: str, attempt: int = 1) -> Job:
    return Job(id=1, task=task, key="k", partition=0, payload=None, attempt=attempt)


# -- the executor's verdict --------------------------------------------------------------------


def test_the_verdict_follows_the_task_policy_and_the_worker_settings_fill_the_rest() -> None:
    app = make_app(retry_base=0.25, retry_max=1.0)

    @app.task("exact", retry=Retry(base=7.0, cap=20.0, jitter=False))
    def exact(job: Job) -> None: ...

    @app.task("picky", retry=Retry(retry_on=(ConnectionError,), dead_on=(ConnectionResetError,),
                                   jitter=False))
    def picky(job: Job) -> None: ...

    @app.task("default")
    def default(job: Job) -> None: ...

    ex = Executor(app, app.settings, "node-a", on_outcome=lambda j, v: None)
    assert ex.verdict(job("exact"), RuntimeError("x")) == (
        ex.verdict(job("exact"), RuntimeError("x"))[0], 7.0)  # type: ignore[index]
    assert ex.verdict(job("exact", attempt=2), KeyError())[1] == 14.0  # type: ignore[index]
    assert ex.verdict(job("exact", attempt=9), KeyError())[1] == 20.0  # type: ignore[index]
    # retry_on: only those retry; dead_on wins over it; no delay = dead at once.
    assert ex.verdict(job("picky"), ConnectionRefusedError())[1] == 0.25  # type: ignore[index]
    assert ex.verdict(job("picky"), ConnectionResetError())[1] is None  # type: ignore[index]
    dead = ex.verdict(job("picky"), ValueError("bad input"))
    assert dead is not None and dead[1] is None and dead[0].startswith("ValueError: bad input")
    # No policy: every exception retries, backoff from the worker's settings (with jitter).
    delay = ex.verdict(job("default", attempt=3), SystemExit())[1]  # type: ignore[index]
    assert isinstance(delay, float) and 0.5 <= delay < 1.5
    ex.close()


def test_a_dead_on_exception_is_dead_at_the_first_attempt_whatever_attempts_remain() -> None:
    app = make_app()
    seen: list[tuple[int, int]] = []

    @app.task("t", max_attempts=5, retry=Retry(retry_on=(TimeoutError,), dead_on=(KeyError,)))
    def t(job: Job) -> None:
        seen.append((job.id, job.attempt))
        if job.payload == "flaky" and job.attempt < 3:
            raise TimeoutError("the handler's own timeout: retried")
        if job.payload == "bad":
            raise KeyError("dead_on")
        if job.payload == "other":
            raise ValueError("not in retry_on")

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        ids = [jobs.enqueue("t", f"k{i}", i, p) for i, p in enumerate(["flaky", "bad", "other"])]
        parts.wakeups.wake()
        await until(lambda: [jobs.state(i) for i in ids] == ["succeeded", "dead", "dead"],
                    message="one retried to success, two dead at once")
        assert [jobs.rows[i].attempts for i in ids] == [3, 1, 1]
        assert (jobs.rows[ids[1]].last_error or "").startswith("KeyError: 'dead_on'")
        assert (jobs.rows[ids[2]].last_error or "").startswith("ValueError: not in retry_on")
        await parts.stop()

    parts = run(app, body)
    assert parts.stats.dead == 2 and parts.stats.retried == 2


def test_a_task_timeout_is_retried_even_when_the_policy_dead_letters_timeout_errors() -> None:
    """The task's ``timeout=`` keeps its meaning: a timed-out attempt is retried until
    max_attempts, whatever ``dead_on`` says about TimeoutError the handler raises itself."""
    app = make_app()

    @app.task("slow", timeout=0.05, max_attempts=3,
              retry=Retry(dead_on=(TimeoutError,), base=0.0, jitter=False))
    async def slow(job: Job) -> None:
        if job.attempt == 1:
            await asyncio.sleep(30)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("slow", "k", 0)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "succeeded", message="retried after timeout")
        assert jobs.rows[job_id].attempts == 2
        await parts.stop()

    run(app, body)


# -- concurrency= ------------------------------------------------------------------------------


def test_a_task_with_concurrency_1_never_runs_twice_at_once_while_others_run_alongside() -> None:
    app = make_app(concurrency=8)
    lock = threading.Lock()
    running: dict[str, int] = {"one": 0, "many": 0}
    peak: dict[str, int] = {"one": 0, "many": 0}
    overlap = [0]  # "many" handlers that started while a "one" handler ran
    claimed_ahead: list[int] = []
    jobs = MemoryJobs(PARTITIONS)

    def enter(task: str) -> None:
        with lock:
            running[task] += 1
            peak[task] = max(peak[task], running[task])
            if task == "many" and running["one"]:
                overlap[0] += 1

    def leave(task: str) -> None:
        with lock:
            running[task] -= 1

    @app.task("one", concurrency=1)
    def one(job: Job) -> None:
        enter("one")
        with jobs.lock:  # never claimed while another of its task runs: nothing waits here
            claimed = sum(1 for r in jobs.rows.values()
                          if r.task == "one" and r.state == "running")
        if claimed != 1:
            claimed_ahead.append(claimed)
        time.sleep(0.01)
        leave("one")

    @app.task("many")
    async def many(job: Job) -> None:
        enter("many")
        await asyncio.sleep(0.03)
        leave("many")

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        ids = [jobs.enqueue("one", f"o{i}", i % PARTITIONS) for i in range(10)]
        ids += [jobs.enqueue("many", f"m{i}", i % PARTITIONS) for i in range(30)]
        parts.wakeups.wake()
        await until(lambda: all(jobs.state(i) == "succeeded" for i in ids), 10,
                    message="every job done")
        assert parts.executor.running_of("one") == 0
        await parts.stop()

    run(app, body, jobs)
    assert peak["one"] == 1, peak
    assert peak["many"] >= 2 and overlap[0] >= 1, (peak, overlap)
    assert claimed_ahead == []
    # Every claim told the store how much room "one" had; "many" is not limited.
    rooms = [r for r in jobs.rooms_seen if r is not None]
    assert rooms and all(set(r) == {"one"} and 0 <= r["one"] <= 1 for r in rooms)


def test_an_app_without_per_task_limits_sends_no_rooms() -> None:
    app = make_app()

    @app.task("t")
    def t(job: Job) -> None: ...

    jobs = MemoryJobs(PARTITIONS)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        ids = [jobs.enqueue("t", f"k{i}", i % PARTITIONS) for i in range(5)]
        parts.wakeups.wake()
        await until(lambda: all(jobs.state(i) == "succeeded" for i in ids))
        await parts.stop()

    run(app, body, jobs)
    assert jobs.rooms_seen and all(r is None for r in jobs.rooms_seen)


def test_a_timed_out_handler_still_running_holds_its_task_slot() -> None:
    """A plain handler past its timeout still runs: it counts against ``concurrency=``."""
    app = make_app(concurrency=4)
    release = threading.Event()
    started: list[int] = []

    @app.task("free")
    def free(job: Job) -> None: ...

    @app.task("stuck", concurrency=1, timeout=0.05, max_attempts=1)
    def stuck(job: Job) -> None:
        started.append(job.id)
        if len(started) == 1:
            release.wait(10)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        first, second, other = (jobs.enqueue("stuck", k, p, max_attempts=1)
                                for k, p in (("a", 0), ("b", 1), ("c", 2)))
        parts.wakeups.wake()
        await until(lambda: jobs.state(first) == "dead", message="first timed out")
        # Its thread runs on: the task's one slot is taken, so nothing else of it starts. A
        # claim that takes a newer job of another task would have taken these older ones first.
        free = jobs.enqueue("free", "d", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(free) == "succeeded", message="another task's job")
        assert started == [first] and parts.executor.running_of("stuck") == 1
        assert jobs.state(second) == "queued" and jobs.state(other) == "queued"
        release.set()
        await until(lambda: jobs.state(second) == jobs.state(other) == "succeeded",
                    message="the others ran once the slot was back")
        await parts.stop()

    run(app, body)


# -- block_key_on_dead= ------------------------------------------------------------------------


def _ordered_app(block: bool) -> tuple[App, list[tuple[int, int]]]:
    app = make_app(concurrency=4)
    ran: list[tuple[int, int]] = []
    failing: set[Any] = {"first"}

    @app.task("o", ordered=True, block_key_on_dead=block, max_attempts=1)
    def o(job: Job) -> None:
        ran.append((job.id, job.attempt))
        if job.payload in failing:
            failing.discard(job.payload)  # fails once: succeeds when retried
            raise RuntimeError("boom")

    return app, ran


def test_a_dead_job_of_a_blocking_task_holds_its_key_until_it_is_retried() -> None:
    app, ran = _ordered_app(block=True)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        first = jobs.enqueue("o", "k", 0, "first", ordered=True, max_attempts=1,
                             block_key_on_dead=True)
        second = jobs.enqueue("o", "k", 0, "second", ordered=True, max_attempts=1,
                              block_key_on_dead=True)
        parts.wakeups.wake()
        await until(lambda: jobs.state(first) == "dead", message="first dead")
        # A job of another key, same partition, enqueued after: a claim that takes it would
        # have taken the older ``second`` first, were its key not blocked.
        later = jobs.enqueue("o", "other", 0, "later", ordered=True, max_attempts=1,
                             block_key_on_dead=True)
        parts.wakeups.wake()
        await until(lambda: jobs.state(later) == "succeeded", message="another key's job done")
        assert jobs.state(second) == "queued"  # the key is blocked by the dead job
        jobs.retry(first)
        parts.wakeups.wake()
        await until(lambda: jobs.state(second) == "succeeded", message="key released")
        assert jobs.state(first) == "succeeded"
        order = [i for i, _ in ran]
        assert order.index(first, 1) < order.index(second)  # the retried head ran first
        await parts.stop()

    run(app, body)


def test_without_the_flag_a_dead_job_lets_the_next_of_its_key_run() -> None:
    app, _ = _ordered_app(block=False)

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        first = jobs.enqueue("o", "k", 0, "first", ordered=True, max_attempts=1)
        second = jobs.enqueue("o", "k", 0, "second", ordered=True, max_attempts=1)
        parts.wakeups.wake()
        await until(lambda: [jobs.state(first), jobs.state(second)] == ["dead", "succeeded"])
        await parts.stop()

    run(app, body)
