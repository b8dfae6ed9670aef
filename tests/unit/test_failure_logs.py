"""Failures logged where error trackers look: WARNING while the job will be retried, ERROR once
it is dead, each with the handler's traceback (``exc_info``); a fenced write names its job.

On the in-memory twins (no database, no socket), records read with ``caplog`` through the
library logger's propagation (what a Sentry-style handler on the root logger sees).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ringwork import Job, Retry
from tests.twins import FixedCoordinator, MemoryJobs, WorkerParts, until
from tests.unit.test_worker_pump import make_app, run


@pytest.fixture(autouse=True)
def library_logger() -> Iterator[None]:
    """The ringwork logger as a library has it (a CLI test may have configured it)."""
    logger = logging.getLogger("ringwork")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:], logger.propagate = [logging.NullHandler()], True
    logger.setLevel(logging.NOTSET)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


def test_a_retried_failure_is_a_warning_and_the_last_one_an_error_both_with_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.task("flaky", max_attempts=2)
    def flaky(job: Job) -> None:
        raise ValueError(f"attempt {job.attempt} broke")

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("flaky", "k", 1, max_attempts=2)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "dead")
        await parts.stop()

    with caplog.at_level(logging.INFO, logger="ringwork"):
        run(app, body)
    first, last = events(caplog, "job_failed")
    assert first.levelno == logging.WARNING and last.levelno == logging.ERROR
    for record, attempt in ((first, 1), (last, 2)):
        assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
        assert str(record.exc_info[1]) == f"attempt {attempt} broke"
        fields: dict[str, Any] = record.fields  # type: ignore[attr-defined]
        assert fields["task"] == "flaky" and fields["attempt"] == attempt
    assert first.fields["retry"] == "yes"  # type: ignore[attr-defined]
    assert last.fields["retry"].startswith("no")  # type: ignore[attr-defined]


def test_a_failure_the_policy_does_not_retry_is_an_error_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.task("strict", max_attempts=5, retry=Retry(dead_on=(KeyError,)))
    def strict(job: Job) -> None:
        raise KeyError("missing")

    async def body(parts: WorkerParts, jobs: MemoryJobs, _: FixedCoordinator) -> None:
        job_id = jobs.enqueue("strict", "k", 0)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "dead")
        await parts.stop()

    with caplog.at_level(logging.INFO, logger="ringwork"):
        run(app, body)
    (record,) = events(caplog, "job_failed")
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)


def test_a_fenced_completion_names_the_job(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    release = threading.Event()

    @app.task("t")
    def t(job: Job) -> None:
        release.wait(10)

    async def body(parts: WorkerParts, jobs: MemoryJobs, coord: FixedCoordinator) -> None:
        job_id = jobs.enqueue("t", "b", 1)
        parts.wakeups.wake()
        await until(lambda: jobs.state(job_id) == "running")
        coord.lose([1], dead=True)  # declared dead: the move re-queued the job
        release.set()
        await until(lambda: parts.stats.fenced == 1)
        await parts.stop()

    with caplog.at_level(logging.INFO, logger="ringwork"):
        run(app, body)
    (record,) = events(caplog, "job_fenced")
    fields: dict[str, Any] = record.fields  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING
    assert fields["task"] == "t" and fields["partition"] == 1 and isinstance(fields["job"], int)
    assert isinstance(fields["epoch"], int)
