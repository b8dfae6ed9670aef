"""The app the cluster acceptance tests run in real worker processes.

Handlers append ``S``/``E`` lines to a per-process file in ``$RINGWORK_TEST_EVENTS`` (one
O_APPEND write each: atomic, and a SIGKILL leaves no torn line); the tests judge what ran from
these files, not from ringwork's own records. With ``$RINGWORK_TEST_PARTITION_EVENTS`` set, the
partition callbacks add ``A`` (assigned) and ``R`` (revoked) lines to the same file.
"""

from __future__ import annotations

import os
import time

from ringwork import App, Job

_fd: int | None = None


def _write(line: str) -> None:
    global _fd
    directory = os.environ.get("RINGWORK_TEST_EVENTS")
    if not directory:
        return
    if _fd is None:
        path = os.path.join(directory, f"events-{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, line.encode())


def record(kind: str, job: Job) -> None:
    seq = (job.payload or {}).get("seq", -1)
    _write(f"{kind} {job.id} {job.key} {seq} {os.getpid()} {time.time():.6f}\n")


def record_partitions(kind: str, partitions: set[int]) -> None:
    """``A``/``R`` lines, one per partition, in the job lines' shape (partition for job id)."""
    now = time.time()
    _write("".join(f"{kind} {p} - -1 {os.getpid()} {now:.6f}\n" for p in sorted(partitions)))


def build(app: App) -> App:
    if os.environ.get("RINGWORK_TEST_PARTITION_EVENTS"):
        # When partitions come and go, as the worker's callbacks see it (the hand-over's
        # times); only when a test asks, so the other tests run workers with no callbacks.
        app.on_assigned(lambda partitions: record_partitions("A", partitions))
        app.on_revoked(lambda partitions: record_partitions("R", partitions))

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

    @app.task("busy")
    def busy(job: Job) -> None:
        # Pure Python holding the GIL until this thread has used ``ms`` milliseconds of CPU: a
        # CPU-bound handler (a wall-clock deadline would finish early when threads share it).
        until = time.thread_time() + (job.payload or {}).get("ms", 50) / 1000
        n = 0
        while time.thread_time() < until:
            n += 1

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
