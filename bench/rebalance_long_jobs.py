"""Rebalancing with long jobs in flight: jobs run twice, and how soon a moved partition restarts.

    .venv/bin/python -m bench.rebalance_long_jobs [--databases sqlite,postgresql] [--steps 10]
        [--long 20] [--long-ms 15000] [--partitions 16]
        [--dsn postgresql+psycopg://postgres@127.0.0.1:5432/test] [--save] [--keep]

Two workers (``bench.fence_app:app``) start on a fresh database; ``--long`` long jobs (each
of half to all of ``--long-ms``, spread so that every partition has one) are kept running --
the driver enqueues a new one on a partition as soon as one of its long jobs ends -- and every
0.1 s one short job per partition is enqueued. Then ``--steps`` steps, each a scale-out (one
more worker) or a scale-in (SIGTERM to the longest-running worker that does not lead,
``--grace`` well above ``--long-ms``, so it finishes its long jobs while its partitions move
on), between 2 and 4 workers; each step waits until the assignment is balanced over the
workers left and every moved partition has started a short job on its new owner.

Measured, per moved partition (from the workers' own event files, see :mod:`bench.fence_app`):
its old owner's ``revoked`` callback, its new owner's ``assigned`` callback, and the new
owner's first start of a short job of it. Reported: the delay from the assignment to that
start, and from the revocation (the hand-over included) -- p50 and max, goal <= 0.5 s -- and
the jobs started more than once. No worker is killed, so every worker lived: the goal for
re-runs is 0. One JSON document on stdout (a summary on stderr); ``--save`` also writes it to
``bench/results/rebalance-long-jobs-<UTC date-time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.fence_app import build
from bench.nodes import pid_of
from ringwork import App
from ringwork.partitioner import partition_for
from ringwork.store.schema import jobs

ROOT = Path(__file__).resolve().parent.parent
APP_SPEC = "bench.fence_app:app"
CLUSTER = "fencebench"
DEFAULT_DSN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MIN_WORKERS, MAX_WORKERS = 2, 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fresh_database(kind: str, tmp: Path, dsn: str) -> tuple[str, Callable[[], None]]:
    """A URL for an empty database and its cleanup (PostgreSQL: a new database, dropped)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    name = f"ringwork_fencebench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(dsn, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return sa.make_url(dsn).set(database=name).render_as_string(hide_password=False), drop


def keys_for(partitions: int, prefix: str) -> dict[int, str]:
    """One key per partition."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        key = f"{prefix}-{i}"
        found.setdefault(partition_for(key, partitions), key)
        i += 1
    return found


@dataclass
class Events:
    """What the workers' event files say: starts/ends per job, callbacks per partition."""

    starts: dict[int, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    ends: dict[int, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    key: dict[int, str] = field(default_factory=dict)
    assigned: dict[int, list[tuple[int, float]]] = field(
        default_factory=lambda: defaultdict(list))
    revoked: dict[int, list[tuple[int, float]]] = field(
        default_factory=lambda: defaultdict(list))


def read_events(directory: Path) -> Events:
    events = Events()
    tables = {"S": events.starts, "E": events.ends, "A": events.assigned, "R": events.revoked}
    for path in directory.glob("events-*.log"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5:
                continue  # a line being written right now
            kind, ident, key, pid, ts = parts
            tables[kind][int(ident)].append((int(pid), float(ts)))
            if kind in "SE":
                events.key[int(ident)] = key
    for table in tables.values():
        for times in table.values():
            times.sort(key=lambda pid_ts: pid_ts[1])
    return events


class Feeder:
    """Keeps ``long`` long jobs queued or running (one or more on every partition) and enqueues
    one short job per partition every 0.1 s. Runs on a thread of its own."""

    def __init__(self, app: App, partitions: int, long: int, long_ms: int) -> None:
        self.app = app
        self.partitions = partitions
        self.long_ms = long_ms
        self.want = {p: long // partitions + (1 if p < long % partitions else 0)
                     for p in range(partitions)}
        self.long_keys = keys_for(partitions, "long")
        self.short_keys = keys_for(partitions, "short")
        self.rng = random.Random(5)
        self.long_ids: list[int] = []
        self.short_ids: list[int] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-feeder", daemon=True)

    def in_flight(self) -> dict[int, int]:
        c = jobs.c
        query = (sa.select(c.partition, sa.func.count()).where(
            c.cluster == CLUSTER, c.task == "long", c.state.in_(("queued", "running")))
            .group_by(c.partition))
        with self.app.store.engine.begin() as conn:
            return {int(p): int(n) for p, n in conn.execute(query)}

    def top_up(self) -> None:
        have = self.in_flight()
        # Lengths from half to all of --long-ms, so replacements start during the steps (and
        # land on the newer workers too).
        batch = [{"task": "long", "key": self.long_keys[p],
                  "payload": {"ms": int(self.long_ms * self.rng.uniform(0.5, 1.0))}}
                 for p, n in self.want.items() for _ in range(n - have.get(p, 0))]
        if batch:
            self.long_ids += self.app.enqueue_many(batch)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.top_up()
            self.short_ids += self.app.enqueue_many(
                [{"task": "short", "key": self.short_keys[p]} for p in range(self.partitions)])

    def start(self) -> None:
        self.top_up()
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(30)


class Workers:
    """The worker processes, each the leader of its own process group."""

    def __init__(self, url: str, partitions: int, events_dir: Path, grace: float) -> None:
        self.env = {**os.environ, "RINGWORK_DATABASE_URL": url, "RINGWORK_CLUSTER": CLUSTER,
                    "RINGWORK_PARTITIONS": str(partitions),
                    "RINGWORK_BENCH_EVENTS": str(events_dir),
                    "RINGWORK_LOG_LEVEL": os.environ.get("RINGWORK_BENCH_LOG_LEVEL", "WARNING")}
        self.grace = grace
        self.logs = events_dir
        self.active: list[subprocess.Popen[bytes]] = []
        self.stopping: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.active) + len(self.stopping)
        with open(self.logs / f"worker-{n}-{time.time():.0f}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ringwork.cli", "worker", APP_SPEC, "--concurrency", "64",
                 "--grace", str(self.grace), "--metrics-port", "0"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.active.append(proc)
        return proc

    def stop_oldest_follower(self, leader: int | None) -> subprocess.Popen[bytes]:
        """SIGTERM the longest-running worker that does not lead: the one with the most long
        jobs in flight, which it must finish within the grace while its partitions move on."""
        proc = next(p for p in self.active if p.pid != leader)
        self.active.remove(proc)
        os.killpg(proc.pid, signal.SIGTERM)
        self.stopping.append(proc)
        return proc

    def close(self, timeout: float) -> list[int | None]:
        for proc in self.active:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        codes: list[int | None] = []
        for proc in self.stopping + self.active:
            try:
                codes.append(proc.wait(timeout))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                codes.append(None)
        return codes


def owners_by_pid(app: App) -> dict[int, int | None]:
    return {p: pid_of(o.owner) for p, o in app.store.read_partitions().items()}


def balanced(app: App, partitions: int, pids: set[int]) -> dict[int, int | None] | None:
    owners = owners_by_pid(app)
    counts = [sum(1 for o in owners.values() if o == pid) for pid in pids]
    lo, hi = partitions // len(pids), -(-partitions // len(pids))
    if set(owners.values()) <= pids and min(counts) >= lo and max(counts) <= hi:
        return owners
    return None


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def short_starts(events: Events, short: set[int], partitions: int
                 ) -> dict[int, list[tuple[int, float]]]:
    """Per partition, the (pid, time) of every start of a short job of it."""
    out: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for job, starts in events.starts.items():
        if job in short:
            out[partition_for(events.key[job], partitions)] += starts
    return out


def first_start(starts: dict[int, list[tuple[int, float]]], p: int, pid: int | None,
                after: float) -> float | None:
    times = [ts for spid, ts in starts.get(p, []) if spid == pid and ts >= after]
    return min(times) if times else None


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "max_s": None, "n": 0}
    return {"p50_s": round(statistics.median(values), 3), "max_s": round(max(values), 3),
            "n": len(values)}


def run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ringwork-fencebench-"))
    url, cleanup = fresh_database(kind, tmp, args.dsn)
    app = build(App(database_url=url, cluster=CLUSTER, partitions=args.partitions))
    workers = Workers(url, args.partitions, tmp, args.grace)
    feeder = Feeder(app, args.partitions, args.long, args.long_ms)
    steps: list[dict[str, Any]] = []
    moves: list[tuple[int, int, int | None, int | None, float]] = []  # step, p, old, new, t
    try:
        app.store.open()  # migrations before anything is timed
        for _ in range(MIN_WORKERS):
            workers.start()
        wait_for(lambda: balanced(app, args.partitions, {w.pid for w in workers.active}), 60,
                 "the first workers balanced")
        feeder.start()
        wait_for(lambda: len(read_events(tmp).starts) >= args.long, 60, "the long jobs running")
        growing = True
        for step in range(args.steps):
            if len(workers.active) >= MAX_WORKERS:
                growing = False
            elif len(workers.active) <= MIN_WORKERS:
                growing = True
            before = owners_by_pid(app)
            began = time.time()
            if growing:
                changed = workers.start().pid
            else:
                changed = workers.stop_oldest_follower(pid_of(app.store.read_term().leader)).pid
            pids = {w.pid for w in workers.active}
            after: dict[int, int | None] = wait_for(
                partial(balanced, app, args.partitions, pids), 60, f"step {step + 1} balanced")
            balanced_s = time.time() - began
            moved = sorted(p for p in after if after[p] != before[p])
            for p in moved:
                moves.append((step, p, before[p], after[p], began))

            def restarted(moved: list[int] = moved, after: dict[int, int | None] = after,
                          began: float = began) -> bool:
                starts = short_starts(read_events(tmp), set(feeder.short_ids), args.partitions)
                return all(first_start(starts, p, after[p], began) is not None for p in moved)

            wait_for(restarted, 30, f"step {step + 1}: the moved partitions' short jobs")
            steps.append({"step": step + 1, "kind": "scale-out" if growing else "scale-in",
                          "pid": changed, "workers": len(workers.active), "moved": len(moved),
                          "balanced_after_s": round(balanced_s, 3)})
            log(f"[{kind}] step {step + 1}: {steps[-1]['kind']} to {len(workers.active)} "
                f"workers, {len(moved)} partitions moved, balanced after {balanced_s:.2f} s")
        feeder.stop()
        wait_for(lambda: not feeder.in_flight(), args.long_ms / 1000 + 60,
                 "the long jobs finished")
        codes = workers.close(args.grace + 30)
        events = read_events(tmp)
        return analyse(kind, args, events, feeder, steps, moves, codes, app, tmp)
    finally:
        # The workers first, whatever else fails: a leaked worker runs on after the driver.
        with contextlib.ExitStack() as cleanups:
            cleanups.callback(lambda: shutil.rmtree(tmp, ignore_errors=True) if not args.keep
                              else log(f"[{kind}] events and worker logs kept in {tmp}"))
            cleanups.callback(cleanup)
            cleanups.callback(app.close)
            cleanups.callback(feeder.stop)
            cleanups.callback(workers.close, 5)


def analyse(kind: str, args: argparse.Namespace, events: Events, feeder: Feeder,
            steps: list[dict[str, Any]], moves: list[tuple[int, int, int | None, int | None,
                                                             float]],
            codes: list[int | None], app: App, tmp: Path) -> dict[str, Any]:
    short, long = set(feeder.short_ids), set(feeder.long_ids)
    starts = short_starts(events, short, args.partitions)
    from_assigned, from_revoked, handover = [], [], []
    # A newcomer's first claims come right after its start-up (cold connections and caches):
    # its moves are reported apart from those to a worker already running.
    to_newcomer: list[float] = []
    to_running: list[float] = []
    per_step: dict[int, list[tuple[float, float]]] = defaultdict(list)  # (revoked, assigned)
    slowest: list[dict[str, Any]] = []
    long_in_flight = 0
    for step, p, old, new, began in moves:
        assigned = [ts for pid, ts in events.assigned.get(p, []) if pid == new and ts >= began]
        revoked = [ts for pid, ts in events.revoked.get(p, []) if pid == old and ts >= began]
        first = first_start(starts, p, new, began)
        if first is None or not assigned:
            continue
        delay = first - assigned[0]
        from_assigned.append(delay)
        (to_newcomer if new == steps[step]["pid"] else to_running).append(delay)
        slowest.append({"step": step + 1, "partition": p, "to_newcomer": new == steps[step]["pid"],
                        "first_start_after_assignment_s": round(delay, 3)})
        if revoked:
            from_revoked.append(first - revoked[0])
            handover.append(assigned[0] - revoked[0])
            per_step[step].append((revoked[0], assigned[0]))
        # Was a long job of this partition running (on any worker) when the step began?
        long_in_flight += any(
            events.key.get(j) is not None and partition_for(events.key[j], args.partitions) == p
            and any(ts < began for _, ts in events.starts.get(j, []))
            and not any(ts < began for _, ts in events.ends.get(j, []))
            for j in long)
    for step, times in per_step.items():
        # From the step's first revocation to its last assignment: the rebalance itself,
        # without a newcomer's start-up.
        steps[step]["rebalance_s"] = round(max(a for _, a in times) - min(r for r, _ in times), 3)
    slowest.sort(key=lambda m: -m["first_start_after_assignment_s"])
    reruns = {j: len(s) for j, s in events.starts.items() if len(s) > 1}
    with app.store.engine.begin() as conn:
        retried = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
            jobs.c.cluster == CLUSTER, jobs.c.attempts > 1)).scalar_one()
    logs = "".join(p.read_text() for p in tmp.glob("worker-*.log"))
    return {
        "database": kind, "partitions": args.partitions, "steps": len(steps),
        "long_jobs_kept_running": args.long, "long_ms": args.long_ms, "grace_s": args.grace,
        "jobs": {"long": len(long), "short": len(short)},
        "moves": len(moves), "moves_with_a_long_job_in_flight": long_in_flight,
        # No worker was killed: every re-run is one of a job whose worker lived (goal 0).
        "reruns_of_jobs_whose_worker_lived": len(reruns),
        "reruns_long": sum(1 for j in reruns if j in long),
        "reruns_short": sum(1 for j in reruns if j in short),
        "jobs_with_attempts_over_1": retried,
        "first_start_after_assignment": summary(from_assigned),
        "first_start_after_assignment_to_a_newcomer": summary(to_newcomer),
        "first_start_after_assignment_to_a_running_worker": summary(to_running),
        "first_start_after_revocation": summary(from_revoked),
        "revocation_to_assignment": summary(handover),
        "grace_expired": logs.count("event=grace_expired"),
        "worker_exit_codes": codes,
        "per_step": steps,
        "slowest_moves": slowest[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--dsn", default=os.environ.get("RINGWORK_TEST_POSTGRES_URL")
                        or DEFAULT_DSN)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--long", type=int, default=20, help="long jobs kept running")
    parser.add_argument("--long-ms", type=int, default=15000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--keep", action="store_true",
                        help="keep the event files and worker logs (RINGWORK_BENCH_LOG_LEVEL=INFO "
                             "makes the logs say more)")
    args = parser.parse_args()
    results = []
    for kind in args.databases.split(","):
        result = run(kind, args)
        results.append(result)
        log(f"[{kind}] re-runs of jobs whose worker lived: "
            f"{result['reruns_of_jobs_whose_worker_lived']} (goal 0); first start of a moved "
            f"partition's other jobs after its assignment: "
            f"p50 {result['first_start_after_assignment']['p50_s']} s, "
            f"max {result['first_start_after_assignment']['max_s']} s; after its revocation: "
            f"p50 {result['first_start_after_revocation']['p50_s']} s, "
            f"max {result['first_start_after_revocation']['max_s']} s (goal <= 0.5 s); "
            f"to a running worker: p50 "
            f"{result['first_start_after_assignment_to_a_running_worker']['p50_s']} s, max "
            f"{result['first_start_after_assignment_to_a_running_worker']['max_s']} s")
    document = {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "results": results}
    text = json.dumps(document, indent=2)
    print(text)
    if args.save:
        out = ROOT / "bench" / "results" / time.strftime(
            "rebalance-long-jobs-%Y-%m-%d-%H%M%S.json", time.gmtime())
        out.write_text(text + "\n")
        log(f"written {out}")


if __name__ == "__main__":
    main()
