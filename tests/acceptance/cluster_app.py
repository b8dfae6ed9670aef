"""The app the cluster acceptance tests run in real worker processes.

Handlers append ``S``/``E`` lines to a per-process file in ``$RINGWORK_TEST_EVENTS`` (one
O_APPEND write each: atomic, and a SIGKILL leaves no torn line); the tests judge what ran from
these files, not from ringwork's own records.
"""

from __future__ import annotations

import os
import time

from ringwork import App, Job

_fd: int | None = None


def record(kind: str, job: Job) -> None:
    global _fd
    directory = os.environ.get("RINGWORK_TEST_EVENTS")
    if not directory:
        return
    if _fd is None:
        path = os.path.join(directory, f"events-{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    seq = (job.payload or {}).get("seq", -1)
    line = f"{kind} {job.id} {job.key} {seq} {os.getpid()} {time.time():.6f}\n"
    os.write(_fd, line.encode())


def build(app: App) -> App:
    @app.task("rec")
    def rec(job: Job) -> None:
        record("S", job)
        time.sleep((job.payload or {}).get("ms", 5) / 1000)
        record("E", job)

    @app.task("ordered_rec", ordered=True)
    def ordered_rec(job: Job) -> None:
        record("S", job)
        time.sleep((job.payload or {}).get("ms", 5) / 1000)
        record("E", job)

    @app.task("gated")
    def gated(job: Job) -> None:
        """Runs until the file named by ``payload["gate"]`` exists (at most 60 s), so a test
        decides when a job in flight finishes."""
        record("S", job)
        deadline = time.monotonic() + 60
        while not os.path.exists(job.payload["gate"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        record("E", job)

    return app


app = build(App(cluster="acceptance", partitions=64))
