"""The app ``ringwork demo`` runs: the example app's tasks, instrumented to prove what ran.

It ships inside the package so the demo works from an install; the repository's
``workers/example.py`` is the same app without the instrumentation, as a file to copy (it is
not installed: a top-level ``workers`` package would collide with a user's own).

If ``RINGWORK_DEMO_LOG`` names a directory, every job appends ``S``/``E`` lines (start/end) to
a per-process file there; the demo reads them to check the outcome against the handlers' own
record rather than ringwork's. Handlers run on the worker's handler threads (``fetch`` on its
event loop); each process writes only its own file.
"""

from __future__ import annotations

import asyncio
import os
import time

from ringwork.app import App
from ringwork.job import Job

#: The variable the demo sets for its workers; the line format is read by ``ringwork.demo``.
LOG_DIR_VARIABLE = "RINGWORK_DEMO_LOG"

app = App(cluster="demo", partitions=64)

_LOG_DIR = os.environ.get(LOG_DIR_VARIABLE)
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
    os.write(_log_fd, (" ".join(map(str, fields)) + "\n").encode())


@app.task("greet", max_attempts=5)
def greet(job: Job) -> None:
    _record("S", job)
    time.sleep(float((job.payload or {}).get("sleep", 0.005)))
    _record("E", job)


@app.task("ledger", ordered=True)
def ledger(job: Job) -> None:
    _record("S", job)
    time.sleep(0.002)
    _record("E", job)


@app.task("fetch")
async def fetch(job: Job) -> None:
    _record("S", job)
    await asyncio.sleep(float((job.payload or {}).get("sleep", 0.005)))
    _record("E", job)


@app.task("flaky", max_attempts=3)
def flaky(job: Job) -> None:
    _record("S", job)
    if job.attempt == 1:
        raise RuntimeError(f"transient failure on attempt {job.attempt}")
    _record("E", job)
