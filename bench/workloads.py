"""ringwork on the shared workloads: W1-W4 through the peers' own harness, plus W5-W7.

    .venv/bin/python -m bench.workloads --database postgresql --dsn postgresql://...:55432/bench
    .venv/bin/python -m bench.workloads --database sqlite --workloads w1,w2

Prints ONE JSON line on stdout (progress on stderr), shaped like a peer's line in
``../shared/bench/peers/results/peers-*.json`` plus ``w5``, ``w6``, ``w7`` and W3 extras.

W1-W4 are the functions of ``../shared/bench/peers/common.py`` (imported at run time from
``RINGWORK_PEERS_DIR``, default ``<repo>/../shared/bench/peers``) driving a ringwork ``Peer``
adapter, so job counts, keys, timings and analysis are the peers' code, not a re-implementation.
Every workload runs on a fresh database (PostgreSQL: a new database on the ``--dsn`` server,
dropped afterwards; SQLite: a new file in a temporary directory).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.nodes import pid_of
from bench.rw_app import PEERS_DIR, app, common
from ringwork import status as rw_status

ROOT = Path(__file__).resolve().parent.parent
log = common.log
r = common.r


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class RingworkPeer(common.Peer):
    notes = {
        "w1": ("bulk enqueue: app.enqueue_many (one batched INSERT per call); worker: "
               "`python -m ringwork.cli worker bench.rw_app:app`"),
        "w3": ("built in: a worker silent for session_timeout (default 3 s) is evicted, the leader "
               "reassigns its partitions and the new owner re-queues their running jobs; nothing "
               "configured (all defaults)"),
        "w4": "task registered with ordered=True (one job at a time per key, in enqueue order)",
        "w4_none": "plain task",
    }

    def __init__(self, database: str) -> None:
        self.database = database
        self.name = f"ringwork_{database}"
        self.url: str | None = None
        self.dbname: str | None = None
        self.admin: sa.Engine | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="rwbench-db-"))
        self.resets = 0
        # W7: peak VmHWM (kB) per worker pid, per reset (sampled at every W1 poll)
        self.rss: dict[int, dict[int, int]] = defaultdict(dict)
        self.first_spawn_t: float | None = None
        self.w3_snapshot: dict[str, Any] | None = None
        #: W3: when (time.time()) the partitions table first showed no partition owned by a
        #: dead node after the kill (sampled every 10 ms by a thread the snapshot starts).
        self.w3_reassigned_t: float | None = None

    # -- database lifecycle ---------------------------------------------------------------------
    def setup(self, args: argparse.Namespace) -> None:
        self.args = args
        if self.database == "postgresql":
            admin_url = sa.make_url(args.dsn).set(drivername="postgresql+psycopg")
            self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
            self.admin_url = admin_url
        self.reset()

    def _drop(self) -> None:
        app.close()
        if self.database == "postgresql" and self.dbname and self.admin is not None:
            with self.admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            self.dbname = None
        elif self.database == "sqlite":
            for p in self.tmp.glob("rw-*.db*"):
                p.unlink(missing_ok=True)

    def reset(self) -> None:
        self._drop()
        self.resets += 1
        tag = f"{self.resets}-{uuid.uuid4().hex[:6]}"
        if self.database == "postgresql":
            assert self.admin is not None
            self.dbname = f"rwbench_{tag.replace('-', '_')}"
            with self.admin.connect() as c:
                c.exec_driver_sql(f'CREATE DATABASE "{self.dbname}"')
            self.url = self.admin_url.set(database=self.dbname).render_as_string(
                hide_password=False)
        else:
            self.url = f"sqlite:///{self.tmp / f'rw-{tag}.db'}"
        app.configure(database_url=self.url)
        app.store.open()  # migrations are not part of any measured phase
        self.first_spawn_t = None

    def close(self) -> None:
        try:
            self._drop()
        finally:
            if self.admin is not None:
                self.admin.dispose()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def after_enqueue(self) -> None:
        # same as the PostgreSQL peers: plain ANALYZE of the freshly loaded queue table
        if self.database != "postgresql" or os.environ.get("BENCH_NO_ANALYZE") == "1":
            return
        with app.store.engine.connect() as c:
            c.exec_driver_sql("ANALYZE ringwork_jobs")
            c.commit()

    def debug_snapshot(self) -> Any:
        if self.database != "postgresql":
            return None
        with app.store.engine.connect() as c:
            rows = c.exec_driver_sql(
                "SELECT pid, state, wait_event_type, wait_event, left(query, 100) "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()").fetchall()
        return [list(x) for x in rows]

    # -- description ----------------------------------------------------------------------------
    def versions(self) -> dict[str, str]:
        import ringwork

        v = {"ringwork": version("ringwork"), "ringwork_from": str(Path(ringwork.__file__).parent),
             "sqlalchemy": version("sqlalchemy")}
        # where the workers import ringwork from (same env and cwd as the harness gives them)
        argv, extra = self.worker_cmd("versions", 0, 0)
        env = {**os.environ, **extra}
        env["PYTHONPATH"] = str(PEERS_DIR) + os.pathsep + env["PYTHONPATH"]
        v["worker_ringwork_from"] = subprocess.run(
            [argv[0], "-c", "import ringwork, os; print(os.path.dirname(ringwork.__file__))"],
            cwd=str(PEERS_DIR), env=env, capture_output=True, text=True).stdout.strip()
        with app.store.engine.connect() as c:
            if self.database == "postgresql":
                v["psycopg"] = version("psycopg")
                v["postgres"] = c.exec_driver_sql("SHOW server_version").scalar()
                v["postgres_durability"] = ", ".join(
                    f"{k}={c.exec_driver_sql(f'SHOW {k}').scalar()}"
                    for k in ("fsync", "synchronous_commit", "wal_sync_method"))
                u = sa.make_url(self.url or "")
                v["postgres_server"] = f"{u.host}:{u.port}"
            else:
                v["sqlite"] = sqlite3.sqlite_version
                jm = c.exec_driver_sql("PRAGMA journal_mode").scalar()
                sync = c.exec_driver_sql("PRAGMA synchronous").scalar()
                names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
                v["sqlite_pragmas"] = f"journal_mode={jm}, synchronous={names.get(sync, sync)}"
        return v

    def concurrency_note(self, concurrency: int) -> str:
        from ringwork.settings import Settings

        default = Settings().concurrency
        if concurrency == 0:
            return f"`ringwork worker` with no --concurrency (ringwork default: {default})"
        return f"`ringwork worker --concurrency {concurrency}` (ringwork default: {default})"

    # -- enqueue / count ------------------------------------------------------------------------
    def enqueue_noop_bulk(self, items: list[tuple[int, int]], batch: int) -> str:
        for i in range(0, len(items), batch):
            app.enqueue_many([{"task": "noop", "key": str(k), "payload": {"key": k, "seq": s}}
                              for s, k in items[i:i + batch]])
        return f"bulk: app.enqueue_many, {batch} jobs/call"

    def count_noop_done(self) -> int:
        self._sample_rss()
        return app.store.counts_by_state().get("succeeded", 0)

    def _sample_rss(self) -> None:
        peaks = self.rss[self.resets]
        for pid in list(common._ALL_PGIDS):
            kb = _vm_hwm_kb(pid)
            if kb is not None:
                peaks[pid] = max(peaks.get(pid, 0), kb)

    @staticmethod
    def _rec_payload(seq: int, key: int, kseq: int, t0: float, sleep_ms: int) -> dict[str, Any]:
        return {"seq": seq, "key": key, "kseq": kseq, "t0": t0, "sleep_ms": sleep_ms}

    def enqueue_rec(self, seq: int, key: int, kseq: int, t0: float, sleep_ms: int,
                    ordered: bool = False) -> None:
        app.enqueue("rec_ordered" if ordered else "rec", str(key),
                    self._rec_payload(seq, key, kseq, t0, sleep_ms))

    def enqueue_rec_bulk(self, items: list[tuple[int, int, int]], sleep_ms: int,
                         batch: int) -> str:
        for i in range(0, len(items), batch):
            app.enqueue_many([{"task": "rec", "key": str(k),
                               "payload": self._rec_payload(s, k, ks, 0.0, sleep_ms)}
                              for s, k, ks in items[i:i + batch]])
        return f"bulk: app.enqueue_many, {batch} jobs/call"

    def db_state(self) -> dict[str, Any]:
        return {k: v for k, v in app.store.counts_by_state().items() if v}

    def claimed_snapshot(self) -> list[tuple[int, str]] | None:
        t = time.time()
        running = app.store.list_jobs(state="running", limit=1_000_000)
        owners = {p: o.owner for p, o in app.store.read_partitions().items()}
        self.w3_snapshot = {"t": t, "owners": owners, "alive": set(common._ALL_PGIDS)}
        self.w3_reassigned_t = None
        dead = {o for o in owners.values()
                if o is not None and pid_of(o) not in self.w3_snapshot["alive"]}
        threading.Thread(target=self._watch_reassigned, args=(dead,), daemon=True).start()
        return [(j.payload["seq"], str(j.claimed_by)) for j in running if j.task == "rec"]

    def _watch_reassigned(self, dead: set[str]) -> None:
        """W3: the moment no partition is owned by a dead node any more (the failover itself,
        apart from how soon the survivor's claims reach each partition)."""
        deadline = time.time() + 30
        while dead and time.time() < deadline:
            with contextlib.suppress(Exception):  # a database hiccup: sample again
                if not any(o.owner in dead for o in app.store.read_partitions().values()):
                    self.w3_reassigned_t = time.time()
                    return
            time.sleep(0.01)

    # -- workers --------------------------------------------------------------------------------
    def worker_cmd(self, workload: str, concurrency: int,
                   idx: int) -> tuple[list[str], dict[str, str]]:
        if self.first_spawn_t is None:
            self.first_spawn_t = time.time()
        argv = [sys.executable, "-m", "ringwork.cli", "worker", "bench.rw_app:app"]
        if concurrency:
            argv += ["--concurrency", str(concurrency)]
        # the harness's PYTHONPATH first: `bench.run --ref` puts a snapshot of ringwork there
        pp = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
        env = {"RINGWORK_DATABASE_URL": self.url or "", "PYTHONPATH": pp,
               "RINGWORK_PEERS_DIR": str(PEERS_DIR)}
        return argv, env


# ------------------------------------------------------------------------------------------------
# helpers for the ringwork-only workloads
# ------------------------------------------------------------------------------------------------
class Workers:
    """Worker processes started one at a time (each its own process group), for W5/W6."""

    def __init__(self, peer: RingworkPeer, run_dir: Path, concurrency: int) -> None:
        self.peer, self.run_dir, self.conc = peer, run_dir, concurrency
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, workload: str) -> subprocess.Popen[bytes]:
        i = len(self.procs)
        argv, extra = self.peer.worker_cmd(workload, self.conc, i)
        env = {**os.environ, **extra, "BENCH_EVENTS_DIR": str(self.run_dir),
               "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = str(PEERS_DIR) + os.pathsep + env["PYTHONPATH"]
        with open(self.run_dir / f"worker-{i}.log", "wb") as lf:
            p = subprocess.Popen(argv, cwd=str(PEERS_DIR), env=env, stdout=lf,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        self.procs.append(p)
        common._ALL_PGIDS.add(p.pid)
        return p

    def kill(self, pid: int) -> float:
        t = time.time()
        os.killpg(pid, signal.SIGKILL)
        for p in self.procs:
            if p.pid == pid:
                p.wait(timeout=10)
        common._ALL_PGIDS.discard(pid)
        return t

    def stop(self) -> None:
        ws = common.WorkerSet(self.peer, procs=self.procs)
        ws.stop()

    def tracebacks(self) -> int:
        n = 0
        for lp in self.run_dir.glob("worker-*.log"):
            n += lp.read_text(errors="replace").count("Traceback (most recent call last)")
        return n


def _assignment() -> tuple[dict[int, str | None], dict[int, int]]:
    parts = app.store.read_partitions()
    return {p: o.owner for p, o in parts.items()}, {p: o.epoch for p, o in parts.items()}


def _balanced(owners: dict[int, str | None], live_pids: set[int]) -> bool:
    if any(o is None or pid_of(o) not in live_pids for o in owners.values()):
        return False
    counts: dict[str, int] = defaultdict(int)
    for o in owners.values():
        counts[o] += 1  # type: ignore[index]
    if {pid_of(o) for o in counts} != live_pids:
        return False
    return max(counts.values()) - min(counts.values()) <= 1


def min_moves(before: dict[int, str | None], n_after: int) -> int:
    """Fewest partitions that must change owner to reach a balanced assignment over
    ``n_after`` nodes, keeping every node that owned partitions before."""
    total = len(before)
    counts: dict[str, int] = defaultdict(int)
    for o in before.values():
        if o is not None:
            counts[o] += 1
    q, rem = divmod(total, n_after)
    targets = sorted([q + 1] * rem + [q] * (n_after - rem), reverse=True)
    old = sorted(counts.values(), reverse=True)[:n_after]
    return total - sum(min(c, t) for c, t in zip(old, targets, strict=False))


def _max_gap(starts: list[float], a: float, b: float) -> float | None:
    """Longest pause between consecutive starts overlapping [a, b] (None if not busy through)."""
    if not starts or starts[0] > a or starts[-1] < b:
        return None
    gap = 0.0
    for x, y in itertools.pairwise(starts):
        if y >= a and x <= b:
            gap = max(gap, y - x)
    return gap


def _partition_of_key() -> dict[int, int]:
    return {k: app.partition_for(str(k)) for k in range(1024)}


# ------------------------------------------------------------------------------------------------
# W3 extras: when did the dead worker's partitions process again
# ------------------------------------------------------------------------------------------------
def w3_ringwork(peer: RingworkPeer, args: argparse.Namespace) -> dict[str, Any]:
    peer.w3_snapshot = None
    t_before = time.time()
    res = common.w3_failover(peer, args)
    snap = peer.w3_snapshot
    if res.get("status") != "ok" or snap is None or peer.first_spawn_t is None:
        return res
    run_dirs = [d for d in (Path(args.workdir) / peer.name).glob("w3-*")
                if int(d.name.split("-")[-1]) >= int(t_before * 1000) - 1]
    rd = common.EventReader(max(run_dirs, key=lambda d: d.name))
    rd.poll()
    t_kill = peer.first_spawn_t + res["time_to_kill_s"]
    dead_nodes = {o for o in snap["owners"].values()
                  if o is not None and pid_of(o) not in snap["alive"]}
    dead_pids = {pid_of(o) for o in dead_nodes}
    dead_parts = {p for p, o in snap["owners"].items() if o in dead_nodes}
    pk = _partition_of_key()
    first_after: dict[int, float] = {}
    for starts in rd.starts.values():
        for ts, pid, _t0, key, _ks in starts:
            part = pk[key]
            if part in dead_parts and pid not in dead_pids and ts > t_kill:
                first_after[part] = min(first_after.get(part, math.inf), ts - t_kill)
    # dead partitions that still had work after the kill (a job never ended before the kill)
    pending_parts = {pk[st[0][3]] for s, st in rd.starts.items()
                     if pk[st[0][3]] in dead_parts
                     and not any(te <= t_kill for te, _ in rd.ends.get(s, []))}
    delays = sorted(first_after.values())
    res["ringwork"] = {
        "kill_time_from": "first worker spawn + time_to_kill_s",
        "killed_node": sorted(dead_nodes),
        "killed_partitions": len(dead_parts),
        "killed_partitions_with_work_left": len(pending_parts),
        "killed_partitions_processed_again": len(first_after),
        "partitions_reassigned_after_s": r(peer.w3_reassigned_t - t_kill, 3)
        if peer.w3_reassigned_t is not None else None,
        "partitions_processing_again_after_s": {
            "first": r(delays[0] if delays else None, 3),
            "p50": r(statistics.median(delays) if delays else None, 3),
            "max": r(delays[-1] if delays else None, 3),
        },
        "jobs_lost": res.get("never_completed"),
        "jobs_run_twice": res.get("ran_more_than_once"),
        "in_flight_at_kill": res.get("killed_inflight"),
    }
    log(f"{peer.name} W3 extras: {json.dumps(res['ringwork'])}")
    return res


# ------------------------------------------------------------------------------------------------
# W5 scale-out
# ------------------------------------------------------------------------------------------------
def w5_scaleout(peer: RingworkPeer, args: argparse.Namespace) -> dict[str, Any]:
    peer.reset()
    run_dir = common.new_run_dir(args, peer, "w5")
    rd = common.EventReader(run_dir)
    n = args.scale_n
    keys_list = common.keys_for(n, args.keys, args.seed)
    method = peer.enqueue_rec_bulk([(i, keys_list[i], 0) for i in range(n)],
                                   args.scale_sleep_ms, args.enqueue_batch)
    peer.after_enqueue()
    ws = Workers(peer, run_dir, args.concurrency)
    # (seconds after start, workers to add)
    plan = [(0.0, 1), (args.scale_step1_s, 1), (args.scale_step2_s, 2)]
    steps: list[dict[str, Any]] = []
    pending = list(plan)
    t0 = time.time()
    t_all_done = None
    poll_ms: list[float] = []
    cur: dict[str, Any] | None = None
    try:
        while True:
            now = time.time()
            if pending and now - t0 >= pending[0][0]:
                _at, add = pending.pop(0)
                owners, epochs = _assignment() if steps else ({}, {})
                if cur is not None and cur.get("balanced_after_s") is None:
                    cur["note"] = "next step started before this one balanced"
                spawn_t = time.time()
                new = [ws.spawn("w5").pid for _ in range(add)]
                cur = {"at_s": r(spawn_t - t0, 3), "added": add,
                       "nodes_after": len(ws.procs), "new_pids": new,
                       "_t": spawn_t, "_owners": owners, "_epochs": epochs,
                       "balanced_after_s": None, "assignments_seen": 0, "_last": None}
                steps.append(cur)
            tq = time.time()
            st = rw_status.collect(app)
            poll_ms.append((time.time() - tq) * 1000)
            owners = {p: None for p in range(st["partition_count"])}
            for node in st["nodes"]:
                for p in node["partitions"]:
                    owners[p] = node["id"]
            if cur is not None and cur["balanced_after_s"] is None:
                if owners != cur["_last"]:
                    cur["assignments_seen"] += 1
                    cur["_last"] = owners
                live = {p.pid for p in ws.procs if p.poll() is None}
                if _balanced(owners, live):
                    cur["balanced_after_s"] = r(time.time() - cur["_t"], 3)
                    cur["_owners_after"], cur["_epochs_after"] = _assignment()
                    cur["_t_bal"] = time.time()
            rd.poll()
            if t_all_done is None and rd.n_done(range(n)) >= n:
                t_all_done = time.time()
            done_all = t_all_done is not None and not pending and (
                cur is None or cur["balanced_after_s"] is not None)
            if done_all or time.time() - t0 > args.timeout_s:
                break
            time.sleep(0.1)
    finally:
        ws.stop()
    rd.poll()
    pk = _partition_of_key()
    starts_by_part: dict[int, list[float]] = defaultdict(list)
    per_sec: dict[int, int] = defaultdict(int)
    for _s, st_list in rd.starts.items():
        for ts, _pid, _t0, key, _ks in st_list:
            starts_by_part[pk[key]].append(ts)
    for _s, en in rd.ends.items():
        for te, _pid in en:
            per_sec[int(te - t0)] += 1
    for v in starts_by_part.values():
        v.sort()
    out_steps = []
    for i, stp in enumerate(steps):
        row = {k: v for k, v in stp.items() if not k.startswith("_")}
        if i > 0 and "_owners_after" in stp:
            before, after = stp["_owners"], stp["_owners_after"]
            moved = [p for p in after if before.get(p) != after[p]]
            bumped = [p for p in after if stp["_epochs"].get(p) != stp["_epochs_after"][p]]
            row["partitions_moved"] = len(moved)
            row["partitions_epoch_bumped"] = len(bumped)
            row["minimum_moves"] = min_moves(before, stp["nodes_after"])
            a, b = stp["_t"], stp["_t_bal"] + 1.0
            unmoved = [g for p in after if p not in moved
                       if (g := _max_gap(starts_by_part.get(p, []), a, b)) is not None]
            moved_g = [g for p in moved
                       if (g := _max_gap(starts_by_part.get(p, []), a, b)) is not None]
            base = [g for p in after
                    if (g := _max_gap(starts_by_part.get(p, []), a - 2.0, a)) is not None]
            row["unmoved_partitions_max_start_gap_s"] = r(max(unmoved) if unmoved else None, 3)
            row["unmoved_partitions_busy_through_step"] = len(unmoved)
            row["moved_partitions_max_start_gap_s"] = r(max(moved_g) if moved_g else None, 3)
            row["baseline_max_start_gap_2s_before_s"] = r(max(base) if base else None, 3)
        out_steps.append(row)
    last = max(per_sec) if per_sec else -1
    res = {
        "n": n, "sleep_ms": args.scale_sleep_ms, "concurrency_per_process": args.concurrency,
        "enqueue_method": method, "plan": f"1 worker at 0 s, +1 at {args.scale_step1_s:g} s, "
        f"+2 at {args.scale_step2_s:g} s",
        "status": "ok" if t_all_done else f"timeout after {args.timeout_s}s",
        "all_done_after_s": r(t_all_done - t0, 3) if t_all_done else None,
        "completed": rd.n_done(range(n)),
        "ran_more_than_once": sum(1 for s in range(n) if len(rd.starts.get(s, [])) > 1),
        "steps": out_steps,
        "jobs_per_s_each_second": [per_sec.get(i, 0) for i in range(last + 1)],
        "status_poll_ms_p50": r(common.pct(poll_ms, 50)),
        "worker_tracebacks": ws.tracebacks(),
    }
    log(f"{peer.name} W5: {json.dumps(res)}")
    return res


# ------------------------------------------------------------------------------------------------
# W6 leader failover
# ------------------------------------------------------------------------------------------------
def w6_leader_kill(peer: RingworkPeer, args: argparse.Namespace) -> dict[str, Any]:
    peer.reset()
    run_dir = common.new_run_dir(args, peer, "w6")
    rd = common.EventReader(run_dir)
    ws = Workers(peer, run_dir, args.concurrency)
    res: dict[str, Any] = {"procs": 3, "rate_per_s": args.stream_rate,
                           "concurrency_per_process": args.concurrency,
                           "session_timeout_s": app.settings.session_timeout}
    stop = threading.Event()
    enq: list[tuple[int, float]] = []
    enq_err: list[str] = []
    keys_list = common.keys_for(200_000, args.keys, args.seed)

    def stream() -> None:
        base = time.time()
        i = 0
        while not stop.is_set():
            target = base + i / args.stream_rate
            d = target - time.time()
            if d > 0:
                time.sleep(d)
            try:
                t = time.time()
                peer.enqueue_rec(i, keys_list[i], 0, t, args.stream_sleep_ms)
                enq.append((i, t))
            except Exception as e:  # keep streaming; report
                enq_err.append(f"{type(e).__name__}: {e}")
            i += 1

    th = threading.Thread(target=stream, daemon=True)
    try:
        for _ in range(3):
            ws.spawn("w6")
        deadline = time.time() + 30
        while time.time() < deadline:
            owners, _ = _assignment()
            if _balanced(owners, {p.pid for p in ws.procs}) and app.store.read_term().leader:
                break
            time.sleep(0.1)
        else:
            res["status"] = "cluster never balanced"
            return res
        th.start()
        time.sleep(args.w6_before_s)
        term = app.store.read_term()
        owners, _ = _assignment()
        dead_pid = pid_of(term.leader)
        dead_parts = {p for p, o in owners.items() if o == term.leader}
        t_kill = ws.kill(dead_pid)  # type: ignore[arg-type]
        log(f"{peer.name} W6: SIGKILLed leader {term.leader} (term {term.term}, "
            f"{len(dead_parts)} partitions)")
        t_leader = t_full = None
        new_term = new_leader = None
        live = {p.pid for p in ws.procs if p.poll() is None}
        while time.time() < t_kill + args.w6_after_s:
            now = time.time()
            tr = app.store.read_term()
            if t_leader is None and tr.term > term.term and tr.leader != term.leader:
                t_leader, new_term, new_leader = now, tr.term, tr.leader
            if t_full is None and t_leader is not None:
                o, _ = _assignment()
                if all(x is not None and pid_of(x) in live for x in o.values()):
                    t_full = now
            time.sleep(0.05)
        stop.set()
        th.join(timeout=10)
        stream_s = (enq[-1][1] - enq[0][1]) if len(enq) > 1 else None
        # let the backlog finish
        seqs = {s for s, _ in enq}
        deadline = time.time() + 30
        while time.time() < deadline:
            rd.poll()
            if all(s in rd.ends for s in seqs):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        ws.stop()
    rd.poll()
    pk = _partition_of_key()
    first_after: dict[int, float] = {}
    inflight = 0
    for s, st in rd.starts.items():
        for ts, pid, _t0, key, _ks in st:
            if pid == dead_pid and ts <= t_kill and not any(
                    ep == dead_pid for _, ep in rd.ends.get(s, [])):
                inflight += 1
            if pk[key] in dead_parts and pid != dead_pid and ts > t_kill:
                part = pk[key]
                first_after[part] = min(first_after.get(part, math.inf), ts - t_kill)
    delays = sorted(first_after.values())
    lat = [min(x[0] for x in rd.starts[s]) - t for s, t in enq if s in rd.starts]
    lat_pre = [min(x[0] for x in rd.starts[s]) - t for s, t in enq
               if s in rd.starts and t < t_kill - 0.5]
    res.update({
        "status": "ok" if t_full is not None else "no full assignment within window",
        "killed_leader": term.leader, "old_term": term.term, "new_term": new_term,
        "new_leader": new_leader,
        "new_leader_after_s": r(t_leader - t_kill, 3) if t_leader else None,
        "full_assignment_after_s": r(t_full - t_kill, 3) if t_full else None,
        "leader_partitions": len(dead_parts),
        "leader_partitions_processing_again_after_s": {
            "first": r(delays[0] if delays else None, 3),
            "p50": r(statistics.median(delays) if delays else None, 3),
            "max": r(delays[-1] if delays else None, 3),
            "partitions_seen": len(delays)},
        "jobs_enqueued": len(enq), "stream_s": r(stream_s, 2), "enqueue_errors": len(enq_err),
        "enqueue_error_sample": enq_err[:3],
        "jobs_never_completed": sum(1 for s, _ in enq if s not in rd.ends),
        "jobs_run_more_than_once": sum(1 for s, _ in enq if len(rd.starts.get(s, [])) > 1),
        "in_flight_on_leader_at_kill": inflight,
        "enqueue_to_start_ms_p50_p99_max": [r(common.pct(lat, p) * 1000 if lat else None)
                                            for p in (50, 99, 100)],
        "enqueue_to_start_ms_before_kill_p50_p99_max": [
            r(common.pct(lat_pre, p) * 1000 if lat_pre else None) for p in (50, 99, 100)],
        "worker_tracebacks": ws.tracebacks(),
    })
    log(f"{peer.name} W6: {json.dumps(res)}")
    return res


# ------------------------------------------------------------------------------------------------
def w7_from_rss(peer: RingworkPeer, resets: list[int], runs: list[dict[str, Any]]) -> list[Any]:
    out = []
    for reset, run in zip(resets, runs, strict=False):
        peaks = peer.rss.get(reset, {})
        out.append({"procs": run.get("procs"), "peak_rss_mb_max": r(max(peaks.values()) / 1024, 1)
                    if peaks else None,
                    "peak_rss_mb_each": [r(v / 1024, 1) for v in peaks.values()]})
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = common.build_parser()
    ap.description = "ringwork on the shared benchmark workloads"
    ap.add_argument("--database", choices=["postgresql", "sqlite"], required=True)
    ap.set_defaults(workdir="/tmp/ringworkbench", workloads="w1,w2,w3,w4,w1d,w5,w6")
    ap.add_argument("--scale-n", type=int, default=20000)
    ap.add_argument("--scale-sleep-ms", type=int, default=1)
    ap.add_argument("--scale-step1-s", type=float, default=5.0)
    ap.add_argument("--scale-step2-s", type=float, default=10.0)
    ap.add_argument("--stream-rate", type=float, default=200.0)
    ap.add_argument("--stream-sleep-ms", type=int, default=1)
    ap.add_argument("--w6-before-s", type=float, default=3.0)
    ap.add_argument("--w6-after-s", type=float, default=12.0)
    return ap


def main() -> None:
    args = build_parser().parse_args()
    args.procs = [int(x) for x in str(args.procs).split(",") if x]
    wl = [w.strip() for w in args.workloads.split(",") if w.strip()]
    signal.signal(signal.SIGTERM, lambda *a: (common._cleanup_all(), sys.exit(143)))
    peer = RingworkPeer(args.database)
    result: dict[str, Any] = {"peer": peer.name,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    fns = {"w1": common.w1_throughput, "w2": common.w2_latency, "w3": w3_ringwork,
           "w4": common.w4_ordering,
           "w1d": lambda p, a: common.w1_throughput(p, a, concurrency=0),
           "w5": w5_scaleout, "w6": w6_leader_kill}
    w7: dict[str, Any] = {}
    try:
        peer.setup(args)
        result["versions"] = peer.versions()
        result["concurrency"] = peer.concurrency_note(args.concurrency)
        result["notes"] = peer.notes
        for w in wl:
            t = time.time()
            first_reset = peer.resets + 1
            try:
                result[w] = fns[w](peer, args)
                if w in ("w1", "w1d") and "runs" in result[w]:
                    resets = list(range(first_reset, first_reset + len(result[w]["runs"])))
                    w7[w] = w7_from_rss(peer, resets, result[w]["runs"])
            except Exception as e:  # keep going; report honestly
                import traceback

                traceback.print_exc()
                result[w] = {"status": f"error: {type(e).__name__}: {e}"}
            result[w]["wall_s"] = round(time.time() - t, 1)
        if w7:
            result["w7"] = {"measured": "VmHWM of each worker, sampled at every W1 poll (0.1 s)",
                            **w7}
    finally:
        common._cleanup_all()
        with contextlib.suppress(Exception):
            peer.close()
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
