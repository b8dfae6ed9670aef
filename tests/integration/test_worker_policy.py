"""Per-task policy with a real worker on SQLite and PostgreSQL: ``retry=Retry(...)``,
``concurrency=`` and ``block_key_on_dead=``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ringwork import App, Job, Retry
from tests.support import running_worker, wait_for


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=8, cluster=cluster_name)
    # A short poll: ``retry``/``cancel`` from outside wake no worker, the poll finds the job.
    app.configure(concurrency=8, poll_interval=0.2, retry_base=0.05, retry_max=0.2)
    yield app
    app.close()


def state(app: App, job_id: int) -> str:
    rec = app.get_job(job_id)
    assert rec is not None
    return rec.state


def test_retry_policy_dead_letters_at_once_and_retries_with_its_own_backoff(app: App) -> None:
    attempts: dict[str, list[float]] = {}

    @app.task("call", max_attempts=4,
              retry=Retry(base=0.1, cap=0.1, jitter=False, retry_on=(ConnectionError,),
                          dead_on=(ConnectionRefusedError,)))
    def call(job: Job) -> None:
        attempts.setdefault(job.payload, []).append(time.monotonic())
        if job.payload == "flaky" and job.attempt < 3:
            raise ConnectionResetError("try again")
        if job.payload == "refused":
            raise ConnectionRefusedError("never")
        if job.payload == "bug":
            raise ValueError("not worth retrying")

    ids = {p: app.enqueue("call", p, p) for p in ("flaky", "refused", "bug")}
    with running_worker(app):
        wait_for(lambda: [state(app, ids[p]) for p in ("flaky", "refused", "bug")]
                 == ["succeeded", "dead", "dead"], 30, message="one retried, two dead at once")
    assert [len(attempts[p]) for p in ("flaky", "refused", "bug")] == [3, 1, 1]
    gaps = [b - a for a, b in zip(attempts["flaky"], attempts["flaky"][1:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps), gaps  # the task's 0.1 s, not the worker's 0.05
    for p, text in (("refused", "ConnectionRefusedError: never"),
                    ("bug", "ValueError: not worth retrying")):
        rec = app.get_job(ids[p])
        assert rec is not None and rec.attempts == 1 and (rec.last_error or "").startswith(text)


def test_a_task_with_concurrency_1_never_runs_two_at_once_beside_other_tasks(app: App) -> None:
    lock = threading.Lock()
    running = {"one": 0, "many": 0}
    peak = {"one": 0, "many": 0}
    beside = [0]

    def enter(task: str) -> None:
        with lock:
            running[task] += 1
            peak[task] = max(peak[task], running[task])
            if task == "many" and running["one"]:
                beside[0] += 1

    def leave(task: str) -> None:
        with lock:
            running[task] -= 1

    @app.task("one", concurrency=1)
    def one(job: Job) -> None:
        enter("one")
        time.sleep(0.05)
        leave("one")

    @app.task("many")
    def many(job: Job) -> None:
        enter("many")
        time.sleep(0.05)
        leave("many")

    ones = app.enqueue_many([{"task": "one", "key": f"o{i}"} for i in range(10)])
    manys = app.enqueue_many([{"task": "many", "key": f"m{i}"} for i in range(30)])
    with running_worker(app):
        wait_for(lambda: all(state(app, i) == "succeeded" for i in ones + manys), 60,
                 message="every job done")
    assert peak["one"] == 1, peak
    assert peak["many"] >= 2 and beside[0] >= 1, (peak, beside)
    # No job of "one" waited in the worker: each started as soon as it was claimed.
    for job_id in ones:
        rec = app.get_job(job_id)
        assert rec is not None and rec.attempts == 1


def _blocking_app(app: App, block: bool) -> list[tuple[str, int]]:
    ran: list[tuple[str, int]] = []
    fail_once = {"first"}

    @app.task("o", ordered=True, block_key_on_dead=block, max_attempts=1)
    def o(job: Job) -> None:
        ran.append((job.payload, job.attempt))
        if job.payload in fail_once:
            fail_once.discard(job.payload)
            raise RuntimeError("boom")

    return ran


def _blocked_after_death(app: App) -> tuple[int, int]:
    """``first`` dies; ``second`` (same key) waits though a newer job of its partition ran."""
    first = app.enqueue("o", "k", "first")
    second = app.enqueue("o", "k", "second")
    wait_for(lambda: state(app, first) == "dead", 30, message="first dead")
    # Another key on the same partition, enqueued after: the claim that takes it would have
    # taken the older ``second`` first, were its key not blocked.
    partition = app.partition_for("k")
    other = next(f"x{i}" for i in range(10_000) if app.partition_for(f"x{i}") == partition)
    later = app.enqueue("o", other, "later")
    wait_for(lambda: state(app, later) == "succeeded", 30, message="the later job ran")
    assert state(app, second) == "queued"
    return first, second


def test_a_dead_job_keeps_its_key_blocked_until_it_is_retried(app: App) -> None:
    ran = _blocking_app(app, block=True)
    with running_worker(app):
        first, second = _blocked_after_death(app)
        app.retry(first)
        wait_for(lambda: state(app, second) == "succeeded", 30, message="key released")
    assert state(app, first) == "succeeded"
    assert ran.index(("first", 1), 1) < ran.index(("second", 1))  # the retried head first


def test_cancelling_the_dead_job_releases_its_key(app: App) -> None:
    ran = _blocking_app(app, block=True)
    with running_worker(app):
        first, second = _blocked_after_death(app)
        assert app.cancel(first) == "cancelled"
        wait_for(lambda: state(app, second) == "succeeded", 30, message="key released")
    assert state(app, first) == "cancelled"
    assert [p for p, _ in ran].count("first") == 1


def test_without_the_flag_a_dead_job_lets_the_next_of_its_key_run(app: App) -> None:
    _blocking_app(app, block=False)
    with running_worker(app):
        first = app.enqueue("o", "k", "first")
        second = app.enqueue("o", "k", "second")
        wait_for(lambda: (state(app, first), state(app, second)) == ("dead", "succeeded"), 30,
                 message="dead, then the next one ran")
