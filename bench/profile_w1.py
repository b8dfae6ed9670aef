"""py-spy profile of ONE ringwork worker draining W1 (20,000 no-op jobs, 64 keys).

    .venv/bin/python -m bench.profile_w1 --dsn postgresql://postgres@127.0.0.1:55432/bench

Enqueues into a fresh database (PostgreSQL on the ``--dsn`` server, or ``--database sqlite``),
starts ``py-spy record -f raw`` on ``ringwork worker bench.rw_app:app``, waits until the database
shows every job succeeded, stops the worker (py-spy then writes its file) and prints the top
self-time frames, the top inclusive functions and the top stacks, as shares of all samples.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.rw_app import app, common
from bench.workloads import ROOT, RingworkPeer


def top(raw: Path, n: int) -> str:
    stacks: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks[stack] += int(count)
    total = sum(stacks.values()) or 1
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for stack, c in stacks.items():
        frames = stack.split(";")
        self_t[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    out = [f"samples: {total}", "", "top self frames:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_t.most_common(n)]
    out += ["", "top inclusive frames:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(n)]
    # where the samples are: waiting (idle pools, I/O, polls) vs running Python
    waits = {"idle thread-pool worker (queue get)": "concurrent/futures/thread.py:81",
             "psycopg waiting for the server": "Connection.wait (psycopg",
             "zmq poll (cluster node thread)": "Poller.poll",
             "asyncio select (event loop idle)": "EpollSelector.select"}
    cats: Counter[str] = Counter()
    active_by_pkg: Counter[str] = Counter()
    for stack, c in stacks.items():
        leaf = stack.split(";")[-1]
        for label, marker in waits.items():
            if marker in leaf:
                cats[label] += c
                break
        else:
            cats["running Python (other leaves)"] += c
            pkg = next((k for k in ("ringwork/", "sqlalchemy/", "psycopg/", "zmq/", "asyncio/",
                                    "concurrent/", "json/") if k in leaf), "other")
            active_by_pkg[pkg.rstrip("/")] += c
    out += ["", "by kind of leaf frame:"]
    out += [f"  {100 * c / total:5.1f}%  {k}" for k, c in cats.most_common()]
    out += ["", "running-Python samples by package of the leaf frame:"]
    out += [f"  {100 * c / total:5.1f}%  {k}" for k, c in active_by_pkg.most_common()]
    out += ["", "top stacks (leaf 6 frames):"]
    leaf: Counter[str] = Counter()
    for stack, c in stacks.items():
        leaf[" <- ".join(reversed(stack.split(";")[-6:]))] += c
    out += [f"  {100 * c / total:5.1f}%  {s}" for s, c in leaf.most_common(n)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--dsn", default=common.DEFAULT_DSN)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples/s")
    ap.add_argument("--out", default="/tmp/ringwork-w1-profile.txt")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    peer = RingworkPeer(args.database)
    args.workdir = "/tmp/ringworkbench"
    peer.setup(args)
    try:
        keys = common.keys_for(args.n, 64, 4242)
        peer.enqueue_noop_bulk(list(enumerate(keys)), 1000)
        peer.after_enqueue()
        argv, extra = peer.worker_cmd("w1", args.concurrency, 0)
        env = {**os.environ, **extra}
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw", "-r",
               str(args.rate), "--nonblocking", "-o", args.out, "--", *argv]
        t0 = time.time()
        p = subprocess.Popen(spy, cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while app.store.counts_by_state().get("succeeded", 0) < args.n:
                if p.poll() is not None or time.time() - t0 > 300:
                    raise SystemExit("worker exited or timed out")
                time.sleep(0.1)
            drain = time.time() - t0
        finally:
            # the worker is py-spy's child, in py-spy's process group
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        print(f"drained {args.n} in {drain:.1f}s ({args.n / drain:.0f} jobs/s, under py-spy)")
        print(top(Path(args.out), args.top))
    finally:
        peer.close()


if __name__ == "__main__":
    main()
