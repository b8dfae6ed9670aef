"""The cluster acceptance app plus tasks with timeouts and tasks that wait to be cancelled.

Handlers record ``S``/``E`` lines as :mod:`tests.acceptance.cluster_app` does; a plain handler
that outlived its timeout also writes ``late-<id>-<attempt>`` into ``$RINGWORK_TEST_EVENTS``
when it finally returns, so a test knows its late result reached the worker.
"""

from __future__ import annotations

import asyncio
import os
import time

from ringwork import App, Job
from tests.acceptance.cluster_app import build as build_base
from tests.acceptance.cluster_app import record

#: The timeout of the two ``tc_*_slow`` tasks, in seconds.
TIMEOUT = 1.0


def build(app: App) -> App:
    build_base(app)

    @app.task("tc_async_slow", timeout=TIMEOUT, max_attempts=2)
    async def tc_async_slow(job: Job) -> None:
        record("S", job)
        await asyncio.sleep(60)
        record("E", job)

    @app.task("tc_sync_slow", timeout=TIMEOUT, max_attempts=1)
    def tc_sync_slow(job: Job) -> None:
        record("S", job)
        time.sleep(3 * TIMEOUT)  # ignores the timeout, then "succeeds" late
        record("E", job)
        directory = os.environ.get("RINGWORK_TEST_EVENTS")
        if directory:
            open(os.path.join(directory, f"late-{job.id}-{job.attempt}"), "w").close()

    @app.task("tc_async_wait")
    async def tc_async_wait(job: Job) -> None:
        record("S", job)
        await asyncio.sleep(120)
        record("E", job)

    @app.task("tc_sync_poll")
    def tc_sync_poll(job: Job) -> None:
        record("S", job)
        deadline = time.monotonic() + 120
        while not job.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.02)
        record("E", job)

    return app


app = build(App(cluster="acceptance", partitions=64))
