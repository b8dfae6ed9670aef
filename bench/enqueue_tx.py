"""Enqueue latency inside a caller's transaction vs ``app.enqueue`` (issue 12).

    .venv/bin/python -m bench.enqueue_tx [--n 1000] [--databases sqlite,postgresql]
        [--dsn postgresql+psycopg://postgres@127.0.0.1:5432/test]

Per database (a fresh SQLite file; a new PostgreSQL database, dropped at the end), one App and
the application's own engine on the same database, no worker. Each variant is timed ``--n``
times, the variants interleaved round by round (a busy machine's drift hits all alike), after a
warm-up; a time is one call from start to return, the commit included where there is one:

* ``plain``: ``app.enqueue(...)`` (its own transaction: one autocommit statement on PostgreSQL);
* ``tx``: ``connect; app.enqueue(..., connection=conn); commit`` on the application's engine
  (a pooled connection, as an endpoint has it);
* ``row``: the application's own one-row INSERT and commit, without a job: the transaction the
  job joins, for reference;
* ``row+tx``: the same transaction with the job enqueued in it -- minus ``row``, what writing
  the job in the caller's transaction costs;
* ``async``: ``await app.enqueue_async(...)`` (PostgreSQL: psycopg's asyncio connection;
  SQLite: a thread);
* ``psycopg`` (PostgreSQL): a raw psycopg connection (Django's), INSERT-in-tx and commit.

One JSON document on stdout (p50/p99/mean in milliseconds per variant and database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from ringwork.app import App
from ringwork.store.migrate import upgrade

DEFAULT_DSN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def database(kind: str, dsn: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    server = sa.make_url(dsn)
    admin_url = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"ringwork_bench_tx_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.set(drivername="postgresql+psycopg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def summary(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def measure(url: str, n: int) -> dict[str, Any]:
    upgrade(url)
    app = App(database_url=url, partitions=16, cluster="bench-tx")
    app.task("t")(lambda job: None)
    app.store.open()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE bench_orders (id INTEGER PRIMARY KEY, note TEXT)"))
    insert_row = sa.text("INSERT INTO bench_orders (id, note) VALUES (:id, 'x')")
    counter = iter(range(1, 10**9))
    loop = asyncio.new_event_loop()
    pg = app.store.dialect == "postgresql"
    raw = (
        psycopg.connect(sa.make_url(url).set(drivername="postgresql")
                        .render_as_string(hide_password=False))
        if pg else None
    )

    def plain() -> None:
        app.enqueue("t", f"k{next(counter)}")

    def tx() -> None:
        with engine.connect() as conn:
            app.enqueue("t", f"k{next(counter)}", connection=conn)
            conn.commit()

    def row() -> None:
        with engine.connect() as conn:
            conn.execute(insert_row, {"id": next(counter)})
            conn.commit()

    def row_tx() -> None:
        with engine.connect() as conn:
            i = next(counter)
            conn.execute(insert_row, {"id": i})
            app.enqueue("t", f"k{i}", {"order": i}, connection=conn)
            conn.commit()

    def aio() -> None:
        loop.run_until_complete(app.enqueue_async("t", f"k{next(counter)}"))

    def via_psycopg() -> None:
        assert raw is not None
        app.enqueue("t", f"k{next(counter)}", connection=raw)
        raw.commit()

    variants: dict[str, Callable[[], None]] = {
        "plain": plain, "tx": tx, "row": row, "row+tx": row_tx, "async": aio,
    }
    if pg:
        variants["psycopg"] = via_psycopg
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(20):  # warm-up: pools, prepared statements, the async connection
            for call in variants.values():
                call()
        for _ in range(n):
            for name, call in variants.items():
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
    finally:
        if raw is not None:
            raw.close()
        loop.close()
        engine.dispose()
        app.close()
    out = {name: summary(t) for name, t in times.items()}
    out["job_in_row_tx_p50_ms"] = round(out["row+tx"]["p50_ms"] - out["row"]["p50_ms"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    args = parser.parse_args()
    result: dict[str, Any] = {"n": args.n}
    for kind in args.databases.split(","):
        with database(kind, args.dsn) as url:
            result[kind] = measure(url, args.n)
        print(f"{kind}: {json.dumps(result[kind])}", file=sys.stderr)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
