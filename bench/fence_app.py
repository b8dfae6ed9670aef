"""The app ``bench.rebalance_long_jobs`` runs in its workers: long and short jobs, recorded.

Each handler appends ``S``/``E`` lines (``kind job key pid time``) and each partition callback
``A``/``R`` lines (``kind partition - pid time``) to ``$RINGWORK_BENCH_EVENTS/events-PID.log``,
one O_APPEND write each, so the driver judges what ran where and when a partition arrived or
left without asking ringwork's own records. Threads: handlers on the worker's handler threads,
callbacks on its callback thread; a write is one system call, safe from either.
"""

from __future__ import annotations

import os
import time

from ringwork import App, Job

_fd: int | None = None


def _write(text: str) -> None:
    global _fd
    directory = os.environ.get("RINGWORK_BENCH_EVENTS")
    if not directory:
        return
    if _fd is None:
        _fd = os.open(os.path.join(directory, f"events-{os.getpid()}.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, text.encode())


def _record(kind: str, job: Job) -> None:
    _write(f"{kind} {job.id} {job.key} {os.getpid()} {time.time():.6f}\n")


def _partitions(kind: str, partitions: set[int]) -> None:
    now = time.time()
    _write("".join(f"{kind} {p} - {os.getpid()} {now:.6f}\n" for p in sorted(partitions)))


def build(app: App) -> App:
    """Register the tasks and callbacks on ``app`` (the driver builds its own, to enqueue)."""
    app.on_assigned(lambda partitions: _partitions("A", partitions))
    app.on_revoked(lambda partitions: _partitions("R", partitions))

    @app.task("long")
    def long(job: Job) -> None:
        """Sleeps ``payload["ms"]``: the job in flight while its partition moves."""
        _record("S", job)
        time.sleep(job.payload["ms"] / 1000)
        _record("E", job)

    @app.task("short")
    def short(job: Job) -> None:
        """Returns at once: the partition's other jobs, whose first start after a move is
        timed."""
        _record("S", job)
        _record("E", job)

    return app


app = build(App(cluster="fencebench", partitions=16))
