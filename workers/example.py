"""The example app: copy this file (or this ``workers/`` directory) to start your own.

From the repository's root (the working directory is importable, and ``workers/`` is not
installed with ringwork), run a worker with ``ringwork worker workers.example:app`` and enqueue
with ``ringwork enqueue workers.example:app greet --key user-1 --payload '{"name": "Ada"}'``.
``ringwork demo`` runs the same tasks from ``ringwork.demo_app``, which ships with the package.
"""

from __future__ import annotations

import asyncio
import time

from ringwork import App, Job

app = App(cluster="example", partitions=64)


@app.task("greet", max_attempts=5)
def greet(job: Job) -> None:
    """A plain handler (run on a worker thread) doing a little I/O-like waiting."""
    time.sleep(float((job.payload or {}).get("sleep", 0.005)))


@app.task("ledger", ordered=True)
def ledger(job: Job) -> None:
    """An ordered task: entries of one account (the key) run one at a time, in enqueue order."""
    time.sleep(0.002)


@app.task("fetch")
async def fetch(job: Job) -> None:
    """An ``async def`` handler runs on the worker's event loop."""
    await asyncio.sleep(float((job.payload or {}).get("sleep", 0.005)))


@app.task("flaky", max_attempts=3)
def flaky(job: Job) -> None:
    """Fails on its first attempt, to show retries with backoff."""
    if job.attempt == 1:
        raise RuntimeError(f"transient failure on attempt {job.attempt}")
