"""The completion statement's cost with and without the attempt rows, interleaved (issue 12).

``python -m bench.complete_cost --dsn postgresql://postgres@127.0.0.1:5432/test``

Makes a fresh database (dropped after), then, for each batch size, alternates the previous
release's completion (``UPDATE .. RETURNING id``, copied below) and today's
(:func:`ringwork.store.claim.completion`: the update plus one multi-row attempt insert; and the
``store_result`` form) over freshly claimed batches, each in a transaction of its own with its
commit, as the worker's ``exchange`` runs it. Prints the median milliseconds per batch. On a busy
machine only interleaved figures compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import psycopg
import sqlalchemy as sa
from psycopg import sql

from ringwork.job import NewJob
from ringwork.store import Store
from ringwork.store.claim import completion

OLD_COMPLETE_PG = sa.text("""
UPDATE ringwork_jobs AS j SET state = 'succeeded', finished_at = now()
FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[])) AS d(jid, tok)
WHERE j.id = ANY(CAST(:ids AS bigint[])) AND j.id = d.jid AND j.claim_epoch = d.tok
  AND j.cluster = :cluster
  AND j.claimed_by = :node AND j.state = 'running'
RETURNING j.id
""")

NODE = "bench-node"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--sizes", default="4,32,100")
    ap.add_argument("--no-fsync-wait", action="store_true",
                    help="synchronous_commit=off per transaction: the statements' own cost, "
                         "without the commit's flush (which a busy disk makes noisy)")
    args = ap.parse_args()
    name = f"ringwork_cc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = sa.make_url(args.dsn).set(drivername="postgresql+psycopg", database=name)
    try:
        run(url.render_as_string(hide_password=False), args.rounds,
            [int(s) for s in args.sizes.split(",")], args.no_fsync_wait)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))


def run(url: str, rounds: int, sizes: list[int], no_fsync_wait: bool) -> None:
    store = Store(url, cluster="cc", partitions=8)
    term = store.claim_leadership(NODE, 0)
    assert term is not None
    epochs = store.assign(NODE, term, dict.fromkeys(range(8), NODE))
    assert epochs is not None
    variants = ("old", "new", "new+results")
    out = {}
    for size in sizes:
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(rounds):
            variant = variants[r % len(variants)]
            store.enqueue([NewJob(task="t", key=f"k{i}", partition=i % 8) for i in range(size)])
            jobs = store.claim(NODE, epochs, size)
            done = [(j.id, j.token) for j in jobs]
            if variant == "old":
                steps = [(OLD_COMPLETE_PG, {"ids": [d[0] for d in done],
                                            "tokens": [d[1] for d in done],
                                            "cluster": "cc", "node": NODE})]
            else:
                results = ({j.id: json.dumps({"n": j.id}) for j in jobs}
                           if variant == "new+results" else None)
                steps = completion("postgresql", "cc", NODE, done, results, store.results_channel)
            started = time.perf_counter()
            with store.engine.begin() as conn:
                if no_fsync_wait:
                    conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
                for stmt, params in steps:
                    n = len(conn.execute(stmt, params).all())
            times[variant].append(time.perf_counter() - started)
            assert n == len(done)
        out[size] = {v: round(statistics.median(t[5:]) * 1000, 3) for v, t in times.items()}
        print(f"batch {size:4d}: median ms per completion (with commit): {out[size]}",
              flush=True)
    store.close()


if __name__ == "__main__":
    main()
