"""Enqueue and drain rates of ONE worker process, on SQLite and/or PostgreSQL.

    .venv/bin/python bench/single_worker.py --jobs 20000 --database sqlite --database postgresql

Prints one JSON line per database. Enqueue uses ``app.enqueue_many`` in batches of 1000 (one
INSERT per batch); drain is timed from spawning the worker until the database shows every job
succeeded (polled every 0.1 s), so it includes worker start-up, as W1 in WORKLOADS.md does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("RINGWORK_BENCH_POSTGRES_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def fresh_database(kind: str, tmp: Path) -> tuple[str, object]:
    """A URL for an empty database and a cleanup callable."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    import sqlalchemy as sa

    name = f"ringwork_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return PG_SERVER.rsplit("/", 1)[0] + f"/{name}", drop


def run(kind: str, jobs: int, concurrency: int, batch: int) -> dict[str, object]:
    from bench.bench_app import app

    tmp = Path(tempfile.mkdtemp(prefix="ringwork-bench-"))
    url, cleanup = fresh_database(kind, tmp)
    app.close()
    app.configure(database_url=url)
    rng = random.Random(4242)
    keys = [str(rng.randrange(64)) for _ in range(jobs)]
    try:
        app.store.open()  # migrations are not part of the enqueue rate
        t0 = time.time()
        for start in range(0, jobs, batch):
            app.enqueue_many(
                [{"task": "noop", "key": k, "payload": {"seq": start + i}}
                 for i, k in enumerate(keys[start:start + batch])]
            )
        enqueue_s = time.time() - t0
        env = {**os.environ, "RINGWORK_DATABASE_URL": url, "RINGWORK_LOG_LEVEL": "WARNING"}
        t_start = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringwork.cli", "worker", "bench.bench_app:app",
             "--concurrency", str(concurrency)],
            cwd=ROOT, env=env, start_new_session=True,
        )
        first = None
        try:
            while True:
                done = app.store.counts_by_state()["succeeded"]
                now = time.time()
                if done and first is None:
                    first = (now, done)
                if done >= jobs:
                    break
                if proc.poll() is not None or now - t_start > 600:
                    raise RuntimeError(f"worker exited or timed out with {done}/{jobs} done")
                time.sleep(0.1)
            cpu_s = _cpu_seconds(proc.pid)
            peak_mb = _peak_rss_mb(proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        drain_s = now - t_start
        assert first is not None
        return {
            "database": kind, "jobs": jobs, "processes": 1, "concurrency": concurrency,
            "enqueue_jobs_per_s": round(jobs / enqueue_s, 1),
            "drain_jobs_per_s": round(jobs / drain_s, 1),
            "drain_jobs_per_s_after_first": round((jobs - first[1]) / max(now - first[0], 1e-9), 1),
            "first_done_after_s": round(first[0] - t_start, 3),
            "worker_cpu_us_per_job": round(cpu_s / jobs * 1e6, 1),
            "worker_peak_rss_mb": peak_mb,
        }
    finally:
        app.close()
        cleanup()  # type: ignore[operator]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--database", action="append", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    for kind in args.database or ["sqlite", "postgresql"]:
        print(json.dumps(run(kind, args.jobs, args.concurrency, args.batch)), flush=True)


if __name__ == "__main__":
    main()
