"""One machine, many workers: a cluster of ``--procs`` worker processes forms, balances
``--partitions`` partitions, sits idle, and fails over (issue 14, target 6).

    .venv/bin/python -m bench.scale [--procs 16] [--partitions 256] [--idle 20]
        [--database postgresql|sqlite] [--dsn postgresql+psycopg://postgres@127.0.0.1:5432/test]

What it reports (one JSON document on stdout, a copy under ``bench/results/`` with ``--save``):

* ``formed_s``: from the first spawn to every partition owned by a live worker, balanced
  (owners differ by at most one partition) and a leader known;
* over ``--idle`` seconds of an idle, balanced cluster: CPU seconds per second of the leader's
  process group (worker and node child), per member, beside the followers' median; and on
  PostgreSQL the database's transactions per second per idle worker (``pg_stat_database``
  commits and rollbacks, minus the harness's own probes), every statement in autocommit being
  one transaction;
* ``follower_kill_s``: kill -9 of one follower's process group to its partitions owned by the
  survivors, balanced; ``leader_kill_s``: kill -9 of the leader's to a new leader and a full,
  balanced assignment.

Each worker is its own process group with ``--concurrency 4``, default settings otherwise
(heartbeat 0.5 s, session timeout 3 s, poll backstop 1 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.nodes import pid_of

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in the group (the worker and its node child)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: the process group
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


@contextlib.contextmanager
def fresh_database(kind: str, dsn: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="rwscale-") as tmp:
            yield f"sqlite:///{tmp}/scale.db"
        return
    name = f"rwscale_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(dsn, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        if os.environ.get("SCALE_LOG_STATEMENTS"):  # every statement to the server's log
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET log_statement = \'all\'')
    try:
        yield str(sa.make_url(dsn).set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


class Cluster:
    def __init__(self, url: str, partitions: int, run_dir: Path) -> None:
        self.url, self.partitions, self.run_dir = url, partitions, run_dir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        os.environ["SCALE_PARTITIONS"] = str(partitions)
        os.environ["RINGWORK_DATABASE_URL"] = url
        sys.path.insert(0, str(ROOT))
        from bench.scale_app import app

        self.app = app
        app.configure(database_url=url)

    def spawn(self) -> None:
        i = len(self.procs)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RINGWORK_LOG_LEVEL": "WARNING"}
        with open(self.run_dir / f"worker-{i}.log", "wb") as out:
            p = subprocess.Popen(
                [sys.executable, "-m", "ringwork.cli", "worker", "bench.scale_app:app",
                 "--concurrency", "4"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[p.pid] = p

    def kill(self, pid: int) -> None:
        os.killpg(pid, signal.SIGKILL)
        self.procs.pop(pid).wait(timeout=30)

    def stop(self) -> None:
        for pid in list(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        for pid, p in self.procs.items():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    def settled(self) -> tuple[bool, str | None]:
        """Every partition owned by a live worker, balanced, and a leader known."""
        live = set(self.procs)
        owners = [pid_of(o.owner) for o in self.app.store.read_partitions().values()]
        leader = self.app.store.read_term().leader
        if len(owners) != self.partitions:
            return False, leader
        counts: dict[int, int] = {}
        for pid in owners:
            if pid not in live:  # unowned (None) or a dead worker's
                return False, leader
            counts[pid] = counts.get(pid, 0) + 1
        balanced = len(counts) == len(live) and max(counts.values()) - min(counts.values()) <= 1
        return balanced and leader is not None, leader

    def wait_settled(self, timeout: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            ok, _ = self.settled()
            if ok:
                return time.monotonic() - start
            time.sleep(0.05)
        return None


def transactions(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()").scalar_one())


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"procs": args.procs, "partitions": args.partitions,
                              "database": args.database, "idle_s": args.idle,
                              "loadavg_before": os.getloadavg()}
    with fresh_database(args.database, args.dsn) as url, \
            tempfile.TemporaryDirectory(prefix="rwscale-logs-") as logs:
        cluster = Cluster(url, args.partitions, Path(logs))
        cluster.app.store.open()  # migrate once, before the workers race to
        try:
            t0 = time.monotonic()
            for _ in range(args.procs):
                cluster.spawn()
            formed = cluster.wait_settled(120)
            result["formed_s"] = None if formed is None else round(time.monotonic() - t0, 2)
            if formed is None:
                result["status"] = "never settled"
                return result
            log(f"formed in {result['formed_s']} s")
            time.sleep(2)  # the joins' last writes and first claims behind it
            leader = cluster.app.store.read_term().leader
            leader_pid = pid_of(leader)
            assert leader_pid is not None
            cpu0 = {pid: group_cpu_seconds(pid) for pid in cluster.procs}
            engine = None
            if args.database == "postgresql":
                engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
                x0 = transactions(engine)
            start, result["idle_from"] = time.monotonic(), time.strftime("%H:%M:%S")
            time.sleep(args.idle)
            elapsed = time.monotonic() - start
            result["idle_to"] = time.strftime("%H:%M:%S")
            cpu = {pid: (group_cpu_seconds(pid) - cpu0[pid]) / elapsed for pid in cluster.procs}
            followers = [v for pid, v in cpu.items() if pid != leader_pid]
            result["leader_cpu_per_s"] = round(cpu[leader_pid], 4)
            result["leader_cpu_per_member_per_s"] = round(cpu[leader_pid] / args.procs, 5)
            result["follower_cpu_per_s_median"] = round(statistics.median(followers), 4)
            if engine is not None:
                x1 = transactions(engine)
                probes = 2  # the two reads of the counter
                per_s = (x1 - x0 - probes) / elapsed
                result["db_transactions_per_s"] = round(per_s, 1)
                result["db_transactions_per_s_per_idle_worker"] = round(per_s / args.procs, 2)
                engine.dispose()
            log(f"idle: {json.dumps({k: v for k, v in result.items() if 'per' in k})}")
            follower = next(pid for pid in cluster.procs if pid != leader_pid)
            cluster.kill(follower)
            t = time.monotonic()
            took = cluster.wait_settled(60)
            result["follower_kill_s"] = None if took is None else round(time.monotonic() - t, 2)
            log(f"follower kill -> settled in {result['follower_kill_s']} s")
            time.sleep(1)
            leader = cluster.app.store.read_term().leader
            leader_pid = pid_of(leader)
            assert leader_pid is not None
            cluster.kill(leader_pid)
            t = time.monotonic()
            took = cluster.wait_settled(60)
            result["leader_kill_s"] = None if took is None else round(time.monotonic() - t, 2)
            log(f"leader kill -> settled in {result['leader_kill_s']} s")
            result["status"] = "ok"
        finally:
            cluster.stop()
            cluster.app.close()
    result["loadavg_after"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=256)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--dsn", default=os.environ.get(
        "RINGWORK_BENCH_DSN", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--save", action="store_true", help="also write bench/results/scale-*")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.save:
        stamp = time.strftime("%Y-%m-%d-%H%M%S")
        (ROOT / "bench" / "results" / f"scale-{args.database}-{stamp}.json").write_text(text)


if __name__ == "__main__":
    main()
