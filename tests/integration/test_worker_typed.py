"""Typed payloads through a real Worker and the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest
from sqlalchemy import text

from ringwork import App, Job
from tests.support import running_worker


@dataclass
class Thumb:
    url: str
    width: int = 100


class Refund(pydantic.BaseModel):
    order: int
    cents: int


@pytest.fixture
def app(quick_app: App) -> App:
    return quick_app


def test_a_worker_hands_each_handler_its_type(app: App) -> None:
    @app.task("thumb", store_result=True)
    def thumb(job: Job[Thumb]) -> list[Any]:
        return [type(job.payload).__name__, job.payload.url, job.payload.width]

    @app.task("refund", store_result=True)
    async def refund(job: Job[Refund]) -> list[Any]:
        return [type(job.payload).__name__, job.payload.order * 100 + job.payload.cents]

    @app.task("tx", store_result=True, transactional=True)
    def tx(job: Job[Thumb], conn: Any) -> str:
        assert conn.execute(text("SELECT 1")).scalar() == 1
        return f"{type(job.payload).__name__}:{job.payload.width}"

    with running_worker(app):
        ids = [thumb.enqueue("a", Thumb("http://x/1")),
               app.enqueue("thumb", "b", {"url": "http://x/2", "width": 7}),
               refund.enqueue("c", Refund(order=3, cents=5)),
               tx.enqueue("d", {"url": "u", "width": 9})]
        results = [app.wait(i, timeout=30).result for i in ids]
    assert results == [["Thumb", "http://x/1", 100], ["Thumb", "http://x/2", 7],
                       ["Refund", 305], "Thumb:9"]


def test_a_stored_payload_that_does_not_fit_dies_at_once(app: App) -> None:
    @app.task("thumb", max_attempts=5)
    def thumb(job: Job[Thumb]) -> None:
        raise AssertionError("never called with a payload that does not fit")

    fits = app.build_job("thumb", "k", {"url": "u"})
    [job_id] = app.store.enqueue([dataclasses.replace(fits, payload={"url": ["not", "text"]})])
    with running_worker(app):
        record = app.wait(job_id, timeout=30)
    assert record.state == "dead" and record.attempts == 1
    assert "StoredPayloadError: payload of task 'thumb' does not fit Thumb: url" in (
        record.last_error or "")


def test_the_cli_refuses_a_payload_that_does_not_fit_in_one_line(
        db_url: str, cluster_name: str, tmp_path: Path) -> None:
    (tmp_path / "typed_cli_app.py").write_text(textwrap.dedent(f"""
        from dataclasses import dataclass
        from ringwork import App, Job

        app = App(partitions=4, cluster={cluster_name!r})

        @dataclass
        class Thumb:
            url: str
            width: int = 100

        @app.task("thumb")
        def thumb(job: Job[Thumb]) -> None: ...
    """))
    env = {**os.environ, "RINGWORK_DATABASE_URL": db_url, "RINGWORK_LOG_LEVEL": "WARNING"}

    def enqueue(payload: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ringwork.cli", "enqueue", "typed_cli_app:app", "thumb",
             "--key", "k", "--payload", payload],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    bad = enqueue('{"url": "u", "widht": 3}')
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert lines == ["Error: payload of task 'thumb' does not fit Thumb: widht: unknown field"]
    good = enqueue('{"url": "u"}')
    assert good.returncode == 0, good.stderr
