"""The example app: copy this file to start your own.

Run a worker with ``ringwork worker workers.example:app`` and enqueue with
``ringwork enqueue workers.example:app greet --key user-1 --payload '{"name": "Ada"}'``.

If ``RINGWORK_EXAMPLE_LOG`` names a directory, every job appends ``S``/``E`` lines (start/end)
to a per-process file there; ``ringwork demo`` reads them to prove what ran, and how often.
"""

from __future__ import annotations

import asyncio
import os
import time

from ringwork import App, Job

app = App(cluster="example", partitions=64)

_LOG_DIR = os.environ.get("RINGWORK_EXAMPLE_LOG")
_log_fd: int | None = None


def _record(kind: str, job: Job) -> None:
    """One short O_APPEND write per event: atomic, and a SIGKILL leaves no torn line."""
    global _log_fd
    if not _LOG_DIR:
        return
    if _log_fd is None:
        path = os.path.join(_LOG_DIR, f"events-{os.getpid()}.log")
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fields = (kind, job.id, job.key, job.partition, job.attempt, os.getpid(), f"{time.time():.6f}")
    line = " ".join(map(str, fields)) + "\n"
    os.write(_log_fd, line.encode())


@app.task("greet", max_attempts=5)
def greet(job: Job) -> None:
    """A plain (thread-pool) handler doing a little I/O-like waiting."""
    _record("S", job)
    time.sleep(float((job.payload or {}).get("sleep", 0.005)))
    _record("E", job)


@app.task("ledger", ordered=True)
def ledger(job: Job) -> None:
    """An ordered task: entries of one account (the key) run one at a time, in enqueue order."""
    _record("S", job)
    time.sleep(0.002)
    _record("E", job)


@app.task("fetch")
async def fetch(job: Job) -> None:
    """An ``async def`` handler runs on the worker's event loop."""
    _record("S", job)
    await asyncio.sleep(float((job.payload or {}).get("sleep", 0.005)))
    _record("E", job)


@app.task("flaky", max_attempts=3)
def flaky(job: Job) -> None:
    """Fails on its first attempt, to show retries with backoff."""
    _record("S", job)
    if job.attempt == 1:
        raise RuntimeError(f"transient failure on attempt {job.attempt}")
    _record("E", job)
