"""One command for the whole benchmark: ringwork on both databases (+ optionally the peers).

    .venv/bin/python -m bench.run                       # ringwork W1-W7 on PostgreSQL and SQLite
    .venv/bin/python -m bench.run --peers run           # ... and the peers' run_all.sh first
    .venv/bin/python -m bench.run --ref HEAD     # measure the committed package, not the tree

Writes ``bench/results/<date>.json`` (everything raw) and ``bench/results/SUMMARY.md`` (tables
and ratios ringwork / best peer). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("RINGWORK_PEERS_DIR")
                 or ROOT.parent / "shared" / "bench" / "peers")
RESULTS = ROOT / "bench" / "results"
PEERS_SERVER = "postgresql://postgres@127.0.0.1:55432/bench"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
PEER_NAMES = ("procrastinate", "pgqueuer", "huey_sqlite")


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] run:", *a, file=sys.stderr, flush=True)


def sh(cmd: list[str] | str, **kw: Any) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              shell=isinstance(cmd, str), **kw).stdout.strip()
    except Exception as e:
        return f"n/a ({e})"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def run_group(argv: list[str], timeout: float, env: dict[str, str] | None = None,
              stdout: Any = subprocess.PIPE, cwd: Path | None = None) -> tuple[int, str]:
    """Run argv in its own process group; on timeout kill the whole group."""
    p = subprocess.Popen(argv, stdout=stdout, stderr=None, text=True, env=env,
                         cwd=cwd, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out or ""
    except subprocess.TimeoutExpired:
        log(f"timeout after {timeout:.0f}s: killing process group {p.pid}")
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return -9, out or ""
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------
def snapshot_ref(ref: str) -> tuple[Path, str]:
    """``git archive REF ringwork`` into a temp dir (touches neither index nor working tree)."""
    commit = sh(["git", "-C", str(ROOT), "rev-parse", ref])
    d = Path(tempfile.mkdtemp(prefix="rwbench-src-"))
    arch = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "ringwork"],
                          capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(d)], input=arch, check=True)
    return d, commit


def run_peers(timeout: float) -> Path | None:
    out_dir = Path(tempfile.mkdtemp(prefix="rwbench-peers-"))
    env = {**os.environ, "PEERS_RESULTS": str(out_dir)}
    log(f"peers: {PEERS_DIR / 'run_all.sh'} -> {out_dir} (about 11 minutes)")
    rc, _ = run_group([str(PEERS_DIR / "run_all.sh")], timeout, env=env, stdout=sys.stderr,
                      cwd=PEERS_DIR)
    found = sorted(out_dir.glob("peers-*.json"))
    log(f"peers: exit {rc}, results {found[-1] if found else 'none'}")
    return found[-1] if found else None


def run_ringwork(database: str, dsn: str, workloads: str, timeout: float, src: Path | None,
                 extra: list[str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.workloads", "--database", database, "--dsn", dsn,
            "--workloads", workloads, *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        ([str(src)] if src else []) + [str(ROOT)]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    log(f"ringwork on {database}: {' '.join(argv[1:])}")
    t = time.time()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    # `python -m` puts the working directory first on sys.path: with --ref it must not be ROOT,
    # or the harness side (enqueue, polls) would import the working tree's ringwork
    rc, out = run_group(argv, timeout, env=env, cwd=src or ROOT)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return {"peer": f"ringwork_{database}", "error": f"no JSON (exit {rc})"}
    doc = json.loads(lines[-1])
    doc["exit_code"] = rc
    # other processes on the machine skew everything: keep the load averages with the figures
    doc["loadavg_before_after"] = [load_before, Path("/proc/loadavg").read_text().split()[:3]]
    log(f"ringwork on {database}: exit {rc} after {time.time() - t:.0f}s")
    return doc


def machine(dsn: str) -> dict[str, Any]:
    import sqlalchemy as sa

    m: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        eng = sa.create_engine(sa.make_url(dsn).set(drivername="postgresql+psycopg"))
        with eng.connect() as c:
            m["postgres"] = c.exec_driver_sql("SELECT version()").scalar()
            m["postgres_settings"] = c.exec_driver_sql(
                "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings "
                "WHERE name IN ('fsync','synchronous_commit','full_page_writes','wal_sync_method',"
                "'shared_buffers','max_connections')").scalar()
        eng.dispose()
    except Exception as e:
        m["postgres"] = f"n/a ({type(e).__name__})"
    return m


# ------------------------------------------------------------------------------------------------
# summary
# ------------------------------------------------------------------------------------------------
def fmt(x: Any, nd: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def w1(doc: dict[str, Any], procs: int, key: str, w: str = "w1") -> Any:
    for run in doc.get(w, {}).get("runs", []):
        if run.get("procs") == procs:
            if key.startswith("drain") and run.get("status") != "ok":
                return None
            return run.get(key)
    return None


def enq_rate(doc: dict[str, Any]) -> float | None:
    vals = [run["enqueue_jobs_per_s"] for run in doc.get("w1", {}).get("runs", [])
            if run.get("enqueue_jobs_per_s")]
    return sum(vals) / len(vals) if vals else None


def lat(doc: dict[str, Any], p: str) -> Any:
    return doc.get("w2", {}).get("latency_ms", {}).get(p)


def w3_cells(doc: dict[str, Any]) -> list[str]:
    w = doc.get("w3", {})
    if w.get("status") != "ok":
        return [w.get("status", "—")] + ["—"] * 4
    rd = w.get("retry_delay_after_kill_s", {})
    retried = f"{w['killed_inflight']} → {w['killed_inflight_retried']}"
    if rd.get("min") is not None:
        retried += f" (after {rd['min']:.2f}-{rd['max']:.2f} s)"
    after = w.get("time_after_kill_to_all_done_s")
    again = w.get("ringwork", {}).get("partitions_processing_again_after_s", {})
    again_s = (f"{again['first']:.2f} s first / {again['p50']:.2f} s p50"
               if again.get("first") is not None else "—")
    return [retried, fmt(w.get("ran_more_than_once")), fmt(w.get("never_completed")),
            f"{after:.1f} s" if after is not None else "never (in window)", again_s]


def ratio(a: Any, b: Any) -> str:
    if a is None or b in (None, 0):
        return "—"
    return f"{a / b:.2f}x"


def summarize(doc: dict[str, Any]) -> str:
    rw = {d["peer"]: d for d in doc["ringwork"]}
    peers = {d["peer"]: d for d in doc.get("peers", {}).get("peers", [])}
    pg = rw.get("ringwork_postgresql", {})
    sq = rw.get("ringwork_sqlite", {})
    m = doc["machine"]
    out = [
        "# ringwork vs SQL-backed Python job queues — benchmark summary", "",
        f"Generated {doc['generated_at']} by `{doc['command']}`; raw data: "
        f"`{doc['json_name']}`. Workloads: `../shared/bench/WORKLOADS.md`; W1-W4 run through the "
        "peers' own harness (`common.py`) with a ringwork adapter (`bench/workloads.py`).", "",
        f"- ringwork measured: {doc['ringwork_source']}",
        f"- peers' figures: {doc['peers_source']}",
        f"- PostgreSQL server used by ringwork: `{doc['dsn_public']}` — {m.get('postgres', '—')}; "
        f"{m.get('postgres_settings', '—')} (durability defaults, not tuned)",
        f"- SQLite (ringwork): {sq.get('versions', {}).get('sqlite_pragmas', '—')}, a fresh file "
        "per workload in a temp dir; huey: WAL, synchronous=FULL (its default)",
        f"- machine: {m.get('nproc')} cores ({m.get('cpu')}), kernel {m.get('kernel')}, "
        f"Python {m.get('python')}; database, harness and workers share the cores",
        "- load average (1/5/15 min) before -> after each ringwork run: " + "; ".join(
            f"{n}: {' '.join(d['loadavg_before_after'][0])} -> "
            f"{' '.join(d['loadavg_before_after'][1])}"
            for n, d in rw.items() if "loadavg_before_after" in d),
        "- concurrency: 4 jobs in flight per worker process for every system (ringwork "
        "`--concurrency 4`), except the *default concurrency* rows: "
        f"{pg.get('w1d', {}).get('concurrency_setting', '—')}", "",
        "## Ratios (ringwork / best peer, same machine)", "",
        "| metric | ringwork | best peer | ratio | target (issue 5) |",
        "|---|---|---|---|---|",
    ]

    def best(names: tuple[str, ...], fn: Any, low: bool = False) -> tuple[str, Any]:
        vals = [(n, fn(peers[n])) for n in names if n in peers and fn(peers[n]) is not None]
        if not vals:
            return "—", None
        return (min if low else max)(vals, key=lambda x: x[1])

    pgp = ("procrastinate", "pgqueuer")
    rows = [
        ("W1 drain jobs/s, P=4, PostgreSQL (conc. 4)", w1(pg, 4, "drain_jobs_per_s"),
         best(pgp, lambda d: w1(d, 4, "drain_jobs_per_s")), False, "≥ 3x"),
        ("W1 drain jobs/s, P=4, PostgreSQL (each default conc.)",
         w1(pg, 4, "drain_jobs_per_s", "w1d"),
         best(pgp, lambda d: w1(d, 4, "drain_jobs_per_s", "w1d")), False, "(≥ 3x)"),
        ("W1 drain jobs/s, P=2, PostgreSQL (conc. 4)", w1(pg, 2, "drain_jobs_per_s"),
         best(pgp, lambda d: w1(d, 2, "drain_jobs_per_s")), False, ""),
        ("W1 drain jobs/s, P=4, SQLite vs huey (conc. 4)", w1(sq, 4, "drain_jobs_per_s"),
         best(("huey_sqlite",), lambda d: w1(d, 4, "drain_jobs_per_s")), False, "≥ 3x"),
        ("W1 drain jobs/s, P=4, SQLite vs huey (each default conc.)",
         w1(sq, 4, "drain_jobs_per_s", "w1d"),
         best(("huey_sqlite",), lambda d: w1(d, 4, "drain_jobs_per_s", "w1d")), False, "(≥ 3x)"),
        ("W1 bulk enqueue jobs/s, PostgreSQL", enq_rate(pg), best(pgp, enq_rate), False, "≥ 2x"),
        ("W1 enqueue jobs/s, SQLite vs huey (one-by-one)", enq_rate(sq),
         best(("huey_sqlite",), enq_rate), False, ""),
        ("W2 p50 ms, PostgreSQL (lower is better)", lat(pg, "p50"),
         best(PEER_NAMES, lambda d: lat(d, "p50"), low=True), True, "≤ 2 ms"),
        ("W2 p99 ms, PostgreSQL (lower is better)", lat(pg, "p99"),
         best(PEER_NAMES, lambda d: lat(d, "p99"), low=True), True, "≤ 5 ms"),
        ("W2 p50 ms, SQLite (lower is better)", lat(sq, "p50"),
         best(PEER_NAMES, lambda d: lat(d, "p50"), low=True), True, "≤ 2 ms"),
        ("W2 p99 ms, SQLite (lower is better)", lat(sq, "p99"),
         best(PEER_NAMES, lambda d: lat(d, "p99"), low=True), True, "≤ 5 ms"),
    ]

    def w3_first(d: dict[str, Any]) -> Any:
        return d.get("w3", {}).get("retry_delay_after_kill_s", {}).get("min")

    def w3_again(d: dict[str, Any]) -> Any:
        return d.get("w3", {}).get("ringwork", {}).get(
            "partitions_processing_again_after_s", {}).get("p50")

    def w3_all(d: dict[str, Any]) -> Any:
        return d.get("w3", {}).get("time_after_kill_to_all_done_s")

    for name, d in (("PostgreSQL", pg), ("SQLite", sq)):
        rows.append((f"W3 s from kill until killed worker's work runs again, {name} "
                     "(ringwork: p50 over its partitions; peers: first retried job)",
                     w3_again(d), best(PEER_NAMES, w3_first, low=True), True, "≤ 4 s"))
        rows.append((f"W3 s from kill until all jobs done, {name}", w3_all(d),
                     best(PEER_NAMES, w3_all, low=True), True, ""))
    for label, val, (bname, bval), _low, target in rows:
        out.append(f"| {label} | {fmt(val, 1)} | {fmt(bval, 1)} ({bname}) | {ratio(val, bval)} | "
                   f"{target} |")
    out += ["", "Ratios > 1 are better for rates, < 1 are better for times/latencies.", ""]

    # main table
    out += [
        "## Results (system x workload)", "",
        "| system | W1 enqueue jobs/s (P=2 run / P=4 run) | W1 drain P=2 | W1 drain P=4 | "
        "W1 default-conc. drain P=2 / P=4 | W2 p50 / p95 / p99 ms | W3 in flight at kill → "
        "retried | W3 ran >1x | W3 never completed | W3 all done after kill | W3 partitions "
        "processing again | W4 order / conc. violations |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    systems = [(n, d) for n, d in rw.items()] + [(n, peers[n]) for n in PEER_NAMES if n in peers]
    for name, d in systems:
        if "error" in d:
            out.append(f"| {name} | {d['error']} |" + " |" * 10)
            continue
        w4 = d.get("w4", {})
        out.append(
            f"| {name} | {fmt(w1(d, 2, 'enqueue_jobs_per_s'))} / "
            f"{fmt(w1(d, 4, 'enqueue_jobs_per_s'))} | {fmt(w1(d, 2, 'drain_jobs_per_s'))} | "
            f"{fmt(w1(d, 4, 'drain_jobs_per_s'))} | "
            f"{fmt(w1(d, 2, 'drain_jobs_per_s', 'w1d'))} / "
            f"{fmt(w1(d, 4, 'drain_jobs_per_s', 'w1d'))} | "
            f"{fmt(lat(d, 'p50'), 1)} / {fmt(lat(d, 'p95'), 1)} / {fmt(lat(d, 'p99'), 1)} | "
            + " | ".join(w3_cells(d)) + " | "
            f"{fmt(w4.get('order_violations'))} / {fmt(w4.get('concurrency_violations'))} |")
    out += ["", "W1 drain = N / (first worker spawn → database shows all N finished), start-up "
            "included; `drain_jobs_per_s_after_first` in the JSON excludes start-up.", ""]

    # W1 after-first and W7
    out += ["## W1 detail and W7 memory (ringwork)", "",
            "| system | run | drain jobs/s | after first done | first done after s | "
            "peak RSS per worker MB (max) | worker tracebacks |", "|---|---|---|---|---|---|---|"]
    for name, d in rw.items():
        for w in ("w1", "w1d"):
            rss = {x["procs"]: x for x in d.get("w7", {}).get(w, [])}
            for run in d.get(w, {}).get("runs", []):
                rr = rss.get(run["procs"], {})
                conc = d[w].get("concurrency_per_process") or "library default"
                out.append(
                    f"| {name} | {w} P={run['procs']} ({conc} in flight) | "
                    f"{fmt(run.get('drain_jobs_per_s'))} | "
                    f"{fmt(run.get('drain_jobs_per_s_after_first'))} | "
                    f"{fmt(run.get('first_done_after_s'), 2)} | "
                    f"{fmt(rr.get('peak_rss_mb_max'), 1)} | {run.get('worker_tracebacks')} |")
    out.append("")

    # W5
    out += ["## W5 scale-out (ringwork)", "",
            "| system | step | partitions moved (epoch bumped) / minimum | time to balanced s | "
            "assignments seen | unmoved partitions: longest start gap s (baseline before) | "
            "moved: longest gap s |", "|---|---|---|---|---|---|---|"]
    for name, d in rw.items():
        w5 = d.get("w5", {})
        for st in w5.get("steps", []):
            out.append(
                f"| {name} | +{st['added']} at {st['at_s']:.1f} s → {st['nodes_after']} | "
                f"{fmt(st.get('partitions_moved'))} ({fmt(st.get('partitions_epoch_bumped'))})"
                f" / {fmt(st.get('minimum_moves'))} | {fmt(st.get('balanced_after_s'), 2)} | "
                f"{st.get('assignments_seen')} | "
                f"{fmt(st.get('unmoved_partitions_max_start_gap_s'), 3)} "
                f"({fmt(st.get('baseline_max_start_gap_2s_before_s'), 3)}) | "
                f"{fmt(st.get('moved_partitions_max_start_gap_s'), 3)} |")
        if w5:
            out.append(f"| {name} | jobs/s each second | "
                       f"{', '.join(str(x) for x in w5.get('jobs_per_s_each_second', []))} "
                       f"| all done {fmt(w5.get('all_done_after_s'), 1)} s | | | |")
    out.append("")

    # W6
    out += ["## W6 leader kill (ringwork, 3 workers, 200 jobs/s)", "",
            "| system | new leader after s | full assignment after s | leader's partitions "
            "process again (first / p50 / max s) | never completed | ran >1x | in flight on "
            "leader | status |", "|---|---|---|---|---|---|---|---|"]
    for name, d in rw.items():
        w6 = d.get("w6", {})
        if not w6:
            continue
        a = w6.get("leader_partitions_processing_again_after_s", {})
        out.append(
            f"| {name} | {fmt(w6.get('new_leader_after_s'), 2)} | "
            f"{fmt(w6.get('full_assignment_after_s'), 2)} | {fmt(a.get('first'), 2)} / "
            f"{fmt(a.get('p50'), 2)} / {fmt(a.get('max'), 2)} | "
            f"{fmt(w6.get('jobs_never_completed'))} | {fmt(w6.get('jobs_run_more_than_once'))} | "
            f"{fmt(w6.get('in_flight_on_leader_at_kill'))} | {w6.get('status')} |")
    out.append("")

    # anomalies
    notes = []
    for name, d in rw.items():
        for w in ("w1", "w2", "w3", "w4", "w1d", "w5", "w6"):
            x = d.get(w)
            if not isinstance(x, dict):
                continue
            runs = x.get("runs", [x])
            for run in runs:
                st = run.get("status")
                if st and st != "ok":
                    notes.append(f"{name} {w}: status {st}")
                tb = run.get("worker_tracebacks") or run.get("surviving_worker_tracebacks")
                if tb:
                    notes.append(f"{name} {w}: {tb} traceback(s) in worker logs")
                if run.get("stalls"):
                    notes.append(f"{name} {w}: stalls {json.dumps(run['stalls'])[:300]}")
        w3 = d.get("w3", {})
        if w3.get("finished_in_killed_worker_but_rerun"):
            notes.append(f"{name} w3: {w3['finished_in_killed_worker_but_rerun']} job(s) had "
                         "ended in the killed worker (handler returned) and still ran again "
                         "(completion not yet committed at the kill)")
        w6 = d.get("w6", {})
        if w6.get("jobs_enqueued"):
            span = w6.get("stream_s")
            rate = (f"{w6['jobs_enqueued'] / span:.0f} jobs/s over {span:.1f} s" if span
                    else "rate n/a")
            whole = w6.get("enqueue_to_start_ms_p50_p99_max", [None])[0]
            pre = w6.get("enqueue_to_start_ms_before_kill_p50_p99_max", [None])[0]
            notes.append(f"{name} w6: {w6['jobs_enqueued']} jobs enqueued; enqueue->start p50 "
                         f"{whole} ms over the whole stream vs {pre} ms before the kill "
                         f"(stream {rate}, target {w6.get('rate_per_s')})")
    out += ["## Anomalies", ""] + ([f"- {n}" for n in notes] or ["- none recorded"]) + [""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description="ringwork benchmark driver (see bench/README.md)")
    ap.add_argument("--databases", default="postgresql,sqlite")
    ap.add_argument("--workloads", default="w1,w2,w3,w4,w1d,w5,w6",
                    help="ringwork workloads (W7 comes from w1/w1d)")
    ap.add_argument("--peers", default="latest",
                    help="'run' = run the peers' run_all.sh first in this session (~11 min); "
                    "'latest' = newest peers-*.json in their results folder; or a JSON path")
    ap.add_argument("--peers-note", default="", help="free text added to the peers' source")
    ap.add_argument("--dsn", default=None,
                    help=f"PostgreSQL server (admin URL) for ringwork; default: the peers' "
                    f"server {PEERS_SERVER} if reachable, else {LOCAL_SERVER}")
    ap.add_argument("--ref", default=None,
                    help="measure the ringwork package at this git ref (git archive into a "
                    "temp dir) instead of the working tree")
    ap.add_argument("--timeout", type=float, default=1500, help="bound per database run, s")
    ap.add_argument("--peers-timeout", type=float, default=1800)
    ap.add_argument("--out", default=None, help="JSON output path (default bench/results/<date>)")
    ap.add_argument("--no-summary", action="store_true")
    ap.add_argument("extra", nargs="*", help="after --: extra args for bench.workloads")
    args = ap.parse_args()

    peers_json: Path | None = None
    peers_source = ""
    if args.peers == "run":
        peers_json = run_peers(args.peers_timeout)
        peers_source = f"measured in this session by run_all.sh (`{peers_json}`)"
    elif args.peers == "latest":
        found = sorted((PEERS_DIR / "results").glob("peers-*.json"),
                       key=lambda p: p.stat().st_mtime)
        peers_json = found[-1] if found else None
        peers_source = (f"NOT this session: stored results `{peers_json}`" if peers_json
                        else "none")
    elif args.peers != "none":
        peers_json = Path(args.peers)
        peers_source = f"`{peers_json}` (given with --peers)"
    if args.peers_note:
        peers_source += f"; {args.peers_note}"
    dsn = args.dsn or (PEERS_SERVER if reachable("127.0.0.1", 55432) else LOCAL_SERVER)

    src, commit = (None, "")
    if args.ref:
        src, commit = snapshot_ref(args.ref)
        source = f"package at `{args.ref}` = {commit[:12]} (git archive)"
    else:
        commit = sh(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
        dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "ringwork"])
        source = f"working tree at {commit[:12]}" + (
            " with uncommitted changes in ringwork/" if dirty else " (clean)")
    log(f"ringwork: {source}; PostgreSQL {dsn}")
    results = []
    try:
        for db in [x for x in args.databases.split(",") if x]:
            results.append(run_ringwork(db, dsn, args.workloads, args.timeout, src, args.extra))
    finally:
        if src:
            shutil.rmtree(src, ignore_errors=True)
    stamp = time.strftime("%Y-%m-%d-%H%M%S", time.gmtime())
    out = Path(args.out) if args.out else RESULTS / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        "json_name": out.name,
        "ringwork_source": source,
        "commit": commit,
        "dsn_public": dsn,
        "peers_source": peers_source,
        "machine": machine(dsn),
        "ringwork": results,
        "peers": json.loads(peers_json.read_text()) if peers_json else {},
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {out}")
    if not args.no_summary:
        (out.parent / "SUMMARY.md").write_text(summarize(doc))
        log(f"wrote {out.parent / 'SUMMARY.md'}")


if __name__ == "__main__":
    main()
