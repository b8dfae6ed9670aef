"""store_result, app.wait and the attempt history with a real Worker (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ringwork import App, Job
from ringwork.errors import ConfigurationError, WaitTimeout
from tests.support import running_worker, wait_for


@pytest.fixture
def app(quick_app: App) -> App:
    return quick_app


def test_results_of_plain_async_and_transactional_handlers(app: App) -> None:
    @app.task("square", store_result=True)
    def square(job: Job) -> dict[str, int]:
        return {"n": job.payload, "square": job.payload ** 2}

    @app.task("echo", store_result=True)
    async def echo(job: Job) -> Any:
        await asyncio.sleep(0.01)
        return job.payload

    @app.task("tx", store_result=True, transactional=True)
    def tx(job: Job, conn: Any) -> list[int]:
        return [job.id]

    @app.task("plain")
    def plain(job: Job) -> str:
        return "not kept"

    with running_worker(app):
        squares = [app.enqueue("square", f"k{i}", i) for i in range(10)]
        echoed = app.enqueue("echo", "e", ["a", 1.5, None, True])
        kept = app.enqueue("tx", "t")
        dropped = app.enqueue("plain", "p")
        records = [app.wait(j, timeout=30) for j in squares]
        assert [r.result for r in records] == [{"n": i, "square": i * i} for i in range(10)]
        assert app.wait(echoed, timeout=30).result == ["a", 1.5, None, True]
        assert app.wait(kept, timeout=30).result == [kept]
        record = app.wait(dropped, timeout=30)
        assert record.state == "succeeded" and record.result is None
    for job_id in (*squares, echoed, kept, dropped):
        # One row per attempt; the last one succeeded. (Usually one: on a loaded SQLite a
        # transactional attempt may fail to upgrade its snapshot -- "database is locked" -- and
        # is retried, which its row records.)
        history, record = app.get_attempts(job_id), app.get_job(job_id)
        assert record is not None and len(history) == record.attempts
        assert history[-1].outcome == "succeeded" and history[-1].node is not None
        assert all(a.outcome == "failed" for a in history[:-1])


def test_a_result_that_cannot_be_stored_fails_the_attempt(app: App) -> None:
    @app.task("bad", store_result=True, max_attempts=2)
    def bad(job: Job) -> object:
        return {"when": object()}

    @app.task("huge", store_result=True, max_attempts=1)
    def huge(job: Job) -> str:
        return "x" * 1_000_001

    with running_worker(app):
        bad_id, huge_id = app.enqueue("bad", "b"), app.enqueue("huge", "h")
        bad_rec = app.wait(bad_id, timeout=30)
        huge_rec = app.wait(huge_id, timeout=30)
    assert bad_rec.state == "dead" and bad_rec.result is None
    assert "ResultError: task 'bad' returned a value that is not JSON" in (bad_rec.last_error or "")
    assert huge_rec.state == "dead"
    assert "1,000,003 bytes as JSON; at most 1,000,000 are stored" in (huge_rec.last_error or "")
    assert [a.outcome for a in app.get_attempts(bad_id)] == ["failed", "failed"]


def test_history_of_retries_and_wait_async(app: App) -> None:
    @app.task("flaky", store_result=True, max_attempts=3)
    def flaky(job: Job) -> int:
        if job.attempt < 3:
            raise ValueError(f"attempt {job.attempt}")
        return job.attempt

    @app.task("slow")
    async def slow(job: Job) -> None:
        await asyncio.sleep(30)

    with running_worker(app):
        job_id = app.enqueue("flaky", "f")

        async def main() -> None:
            record = await app.wait_async(job_id, timeout=30)
            assert record.result == 3
            slow_id = app.enqueue("slow", "s")
            started = time.monotonic()
            with pytest.raises(WaitTimeout):
                await app.wait_async(slow_id, timeout=0.3)
            assert time.monotonic() - started < 5
            app.cancel(slow_id)
            cancelled = await app.wait_async(slow_id, timeout=30)
            assert cancelled.state == "cancelled"
            assert [a.outcome for a in app.get_attempts(slow_id)] == ["cancelled"]

        asyncio.run(main())
    history = app.get_attempts(job_id)
    assert [(a.attempt, a.outcome) for a in history] == [
        (1, "failed"), (2, "failed"), (3, "succeeded")]
    assert "ValueError: attempt 1" in (history[0].error or "")
    assert history[2].error is None
    assert all(a.started_at <= a.finished_at for a in history)  # type: ignore[operator]


def test_a_timed_out_attempt_and_the_shutdown_hand_back_are_recorded(app: App) -> None:
    @app.task("stuck", timeout=0.2, max_attempts=1)
    async def stuck(job: Job) -> None:
        await asyncio.sleep(30)

    app.configure(shutdown_grace=0.2)
    with running_worker(app):
        timed = app.enqueue("stuck", "a")
        assert app.wait(timed, timeout=30).state == "dead"
        held = app.enqueue("stuck", "b")
        wait_for(lambda: app.get_job(held).state == "running")  # type: ignore[union-attr]
    [attempt] = app.get_attempts(timed)
    assert attempt.outcome == "failed" and "timed out after 0.2 s" in (attempt.error or "")
    # stopped before the task's timeout? then handed back at the end of the grace
    outcomes = [a.outcome for a in app.get_attempts(held)]
    assert outcomes in (["abandoned"], ["failed"]), outcomes


def test_store_result_must_be_a_bool(app: App) -> None:
    with pytest.raises(ConfigurationError, match="store_result must be True or False"):
        app.task("x", store_result="yes")  # type: ignore[arg-type]
