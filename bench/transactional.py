"""The price of a transactional handler: W1 with a transactional no-op beside the plain one.

    .venv/bin/python -m bench.transactional                      # PostgreSQL, 2 rounds each
    .venv/bin/python -m bench.transactional --rounds 3 --n 20000 --dsn postgresql://...

Both tasks live in the same worker app (``bench.rw_app``: ``noop`` and ``noop_tx``, the latter
``transactional=True`` and doing nothing with its connection), and both are drained by the
peers' own W1 function (``common.w1_throughput``: N jobs queued in bulk, then P worker
processes of ``--concurrency`` each drain them; done = ``succeeded`` rows, polled every 0.1 s).
Only the task name of the queued jobs differs. The two variants alternate, round after round, in
one process on one PostgreSQL server, so a machine that gets busier during the run weighs on
both alike. Each drain gets a fresh database (the harness's ``reset``).

What the difference measures: a plain job's completion rides in the worker's batched outcome
writes (many jobs per transaction, in the node process); a transactional job gets a connection
from the handler pool, ``BEGIN``, the idle-limit ``set_config``, its own completion statement
and a ``COMMIT`` -- one transaction, and one fsync, per job.

Prints progress on stderr and one JSON line on stdout, then a three-line summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from bench.rw_app import app, common
from bench.workloads import RingworkPeer

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
VARIANTS = {"plain": "noop", "transactional": "noop_tx"}


class TaskPeer(RingworkPeer):
    """The ringwork adapter, with the W1 jobs queued for a task of our choosing."""

    def __init__(self) -> None:
        super().__init__("postgresql")
        self.task = "noop"

    def enqueue_noop_bulk(self, items: list[tuple[int, int]], batch: int) -> str:
        for i in range(0, len(items), batch):
            app.enqueue_many([{"task": self.task, "key": str(k),
                               "payload": {"key": k, "seq": s}}
                              for s, k in items[i:i + batch]])
        return f"bulk: app.enqueue_many, {batch} jobs/call, task {self.task}"


def build_parser() -> argparse.ArgumentParser:
    ap = common.build_parser()
    ap.description = "W1 drain: transactional no-op beside a plain no-op (PostgreSQL)"
    ap.set_defaults(dsn=LOCAL_SERVER, procs="4", concurrency=4,
                    workdir="/tmp/ringworkbench-tx")
    ap.add_argument("--rounds", type=int, default=2,
                    help="drains per variant, alternating plain / transactional")
    return ap


def main() -> None:
    args = build_parser().parse_args()
    args.procs = [int(x) for x in str(args.procs).split(",") if x]
    peer = TaskPeer()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    result: dict[str, Any] = {"workload": "w1", "database": "postgresql", "n": args.n,
                              "procs": args.procs, "concurrency_per_process": args.concurrency,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        peer.setup(args)
        result["versions"] = peer.versions()
        for round_no in range(args.rounds):
            order = list(VARIANTS) if round_no % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                peer.task = VARIANTS[variant]
                common.log(f"round {round_no + 1}/{args.rounds}: {variant} ({peer.task})")
                out = common.w1_throughput(peer, args)
                for run in out["runs"]:
                    runs[variant].append({k: run[k] for k in (
                        "procs", "status", "drain_s", "drain_jobs_per_s",
                        "drain_jobs_per_s_after_first", "worker_tracebacks", "db_state_after")})
    finally:
        common._cleanup_all()
        peer.close()
    summary: dict[str, Any] = {}
    for variant, rows in runs.items():
        rates = [r["drain_jobs_per_s"] for r in rows if r["drain_jobs_per_s"]]
        summary[variant] = {"drain_jobs_per_s": rates,
                            "median": round(statistics.median(rates), 1) if rates else None}
    plain, tx = summary["plain"]["median"], summary["transactional"]["median"]
    summary["ratio_transactional_to_plain"] = round(tx / plain, 3) if plain and tx else None
    result.update(runs=runs, summary=summary,
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    print(json.dumps(result), flush=True)
    print(f"W1 P={','.join(map(str, args.procs))} n={args.n}, PostgreSQL "
          f"{result['versions'].get('postgres')}, {args.concurrency} in flight per process:\n"
          f"  plain no-op:         {summary['plain']['drain_jobs_per_s']} jobs/s "
          f"(median {plain})\n"
          f"  transactional no-op: {summary['transactional']['drain_jobs_per_s']} jobs/s "
          f"(median {tx})\n"
          f"  ratio transactional / plain: {summary['ratio_transactional_to_plain']}",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
