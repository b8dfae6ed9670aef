"""The app of the exactly-once acceptance tests: transactional handlers that write a user table.

Each job inserts one row ``(job_id, attempt, pid)`` into the table named by
``$RINGWORK_TEST_EFFECTS`` (the test creates it, in the app's database), inside the handler's
transaction, then may wait before it returns -- so a kill, a pause or a database restart lands
between the write and the commit:

* ``payload["ms"]``: sleep that long after the insert, every attempt (the chaos run);
* ``payload["gate"]`` (a path), ``payload["hold"]`` (seconds, the most it waits) and
  ``payload["hold_attempts"]`` (default 1): on those first attempts, wait after the insert until
  the gate file exists.

Around the insert the handler appends marker lines to ``marks-<pid>.log`` in
``$RINGWORK_TEST_EVENTS`` -- *outside* the transaction, one ``O_APPEND`` write each (atomic; a
SIGKILL leaves no torn line): ``S`` before the insert, ``W`` once it is written (uncommitted),
``E`` as the handler returns (the completion and the commit follow). The tests wait for these
markers and judge the outcome from the user table, which only committed transactions reach.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import sqlalchemy as sa

from ringwork import App, Job

_fd: int | None = None
_table: sa.Table | None = None


def effects_table(name: str) -> sa.Table:
    """The user table: deliberately no unique key, so a duplicate effect would show."""
    return sa.Table(name, sa.MetaData(),
                    sa.Column("job_id", sa.BigInteger, nullable=False),
                    sa.Column("attempt", sa.Integer, nullable=False),
                    sa.Column("pid", sa.Integer, nullable=False))


def _effects() -> sa.Table:
    global _table
    if _table is None:
        _table = effects_table(os.environ["RINGWORK_TEST_EFFECTS"])
    return _table


def mark(kind: str, job: Job) -> None:
    global _fd
    directory = os.environ.get("RINGWORK_TEST_EVENTS")
    if not directory:
        return
    if _fd is None:
        path = os.path.join(directory, f"marks-{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"{kind} {job.id} {job.attempt} {os.getpid()} {time.time():.6f}\n".encode())


def _insert(job: Job) -> Any:
    return _effects().insert().values(job_id=job.id, attempt=job.attempt, pid=os.getpid())


def _holding(job: Job) -> tuple[str, float] | None:
    """``(gate, until)`` if this attempt waits for its gate, else None."""
    p = job.payload or {}
    if p.get("gate") and job.attempt <= p.get("hold_attempts", 1):
        return p["gate"], time.monotonic() + p.get("hold", 30)
    return None


def build(app: App) -> App:
    """``max_attempts=25``: under the chaos run a job may lose several attempts to kills; what
    is judged is the effect's count, not how many tries it took."""
    @app.task("credit", transactional=True, max_attempts=25)
    def credit(job: Job, conn: sa.Connection) -> None:
        mark("S", job)
        conn.execute(_insert(job))
        mark("W", job)
        time.sleep((job.payload or {}).get("ms", 0) / 1000)
        hold = _holding(job)
        while hold and not os.path.exists(hold[0]) and time.monotonic() < hold[1]:
            time.sleep(0.01)
        mark("E", job)

    @app.task("credit_async", transactional=True, max_attempts=25)
    async def credit_async(job: Job, conn: Any) -> None:
        mark("S", job)
        await conn.execute(_insert(job))
        mark("W", job)
        await asyncio.sleep((job.payload or {}).get("ms", 0) / 1000)
        hold = _holding(job)
        while hold and not os.path.exists(hold[0]) and time.monotonic() < hold[1]:
            await asyncio.sleep(0.01)
        mark("E", job)

    return app


app = build(App(cluster="exactly-once", partitions=64))
