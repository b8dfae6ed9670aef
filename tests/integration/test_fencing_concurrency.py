"""Fencing under real concurrency: several processes, partitions moving under them, a zombie.

Worker processes claim from partitions they believe they own -- from a view of the partition
table they refresh only now and then, so they often act on stale epochs -- while the test (as
leader) keeps moving partitions between them. A zombie claims a batch, waits until its
partition has been taken away, then tries to commit. Every process reports which completions
the store accepted. The proof: every job succeeded exactly once, no two processes were told
"succeeded" for the same job, every stale write was rejected, and the zombie got nothing in.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
import traceback
from pathlib import Path
from typing import Any

from ringwork.job import NewJob, Outcome
from ringwork.store import Store

PARTITIONS = 4
JOBS = 300
WORKERS = ("n0", "n1", "n2")
ZOMBIE = "zombie"
DEADLINE_S = 60.0


def _worker(url: str, cluster: str, node: str, out: str, stop: Any, seed: int) -> None:
    rng = random.Random(seed)
    report: dict[str, Any] = {"completed": [], "fenced": 0, "claimed": 0, "retried": 0}
    try:
        with Store(url, cluster=cluster, partitions=PARTITIONS) as store:
            view: dict[int, int] = {}
            while not stop.is_set():
                if not view or rng.random() < 0.3:  # often act on a stale view
                    view = {
                        p: o.epoch for p, o in store.read_partitions().items() if o.owner == node
                    }
                jobs = store.claim(node, view, rng.randint(1, 8))
                report["claimed"] += len(jobs)
                if not jobs:
                    stop.wait(0.002)
                    continue
                stop.wait(rng.random() * 0.004)  # "run" the handlers
                done = []
                for job in jobs:
                    if rng.random() < 0.1:
                        outcome = store.fail(node, job.id, job.token, "flaky", retry_delay=0)
                        report["retried"] += outcome is Outcome.RETRY
                        report["fenced"] += outcome is Outcome.FENCED
                    else:
                        done.append((job.id, job.token))
                fenced = set(store.complete(node, done))
                report["fenced"] += len(fenced)
                report["completed"] += [i for i, _ in done if i not in fenced]
    except BaseException:
        report["error"] = traceback.format_exc()
    Path(out).write_text(json.dumps(report))


def _zombie(url: str, cluster: str, out: str, claimed: Any, go: Any) -> None:
    report: dict[str, Any] = {}
    try:
        with Store(url, cluster=cluster, partitions=PARTITIONS) as store:
            deadline = time.monotonic() + DEADLINE_S
            view = {p: o.epoch for p, o in store.read_partitions().items() if o.owner == ZOMBIE}
            jobs = []
            while not jobs and time.monotonic() < deadline:
                jobs = store.claim(ZOMBIE, view, 5)
            report["claimed"] = [j.id for j in jobs]
            claimed.set()
            # "Paused": the cluster moves on without us.
            assert go.wait(DEADLINE_S), "test never released the zombie"
            pairs = [(j.id, j.token) for j in jobs]
            report["complete_fenced"] = store.complete(ZOMBIE, pairs[1:])
            report["fail_outcome"] = store.fail(
                ZOMBIE, jobs[0].id, jobs[0].token, "zombie", retry_delay=0
            ).value
            report["claim_after"] = [j.id for j in store.claim(ZOMBIE, view, 5)]
    except BaseException:
        report["error"] = traceback.format_exc()
    Path(out).write_text(json.dumps(report))


def test_no_job_completes_twice_and_stale_writes_are_rejected(
    db_url: str, cluster_name: str, tmp_path: Path
) -> None:
    ctx = multiprocessing.get_context("spawn")
    leader = Store(db_url, cluster=cluster_name, partitions=PARTITIONS)
    rng = random.Random(1234)
    try:
        ids = leader.enqueue(
            [
                NewJob(
                    task="t",
                    key=f"k{i % 40}",
                    partition=i % PARTITIONS,
                    ordered=i % 3 == 0,
                    max_attempts=1000,  # lost-worker re-queues must never dead-letter here
                )
                for i in range(JOBS)
            ]
        )
        term = leader.claim_leadership("leader", 0)
        assert term is not None
        # The zombie starts out owning partition 0; the workers share the rest.
        leader.assign("leader", term, {0: ZOMBIE, 1: "n0", 2: "n1", 3: "n2"})

        stop, claimed, go = ctx.Event(), ctx.Event(), ctx.Event()
        zombie = ctx.Process(
            target=_zombie, args=(db_url, cluster_name, str(tmp_path / "z.json"), claimed, go)
        )
        zombie.start()
        assert claimed.wait(DEADLINE_S), "zombie never claimed"
        leader.assign("leader", term, {0: "n0"})  # the zombie's partition moves on
        go.set()

        workers = [
            ctx.Process(
                target=_worker,
                args=(db_url, cluster_name, node, str(tmp_path / f"{node}.json"), stop, seed),
            )
            for seed, node in enumerate(WORKERS)
        ]
        for w in workers:
            w.start()
        moves = 0
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if leader.counts_by_state()["succeeded"] == JOBS:
                break
            # Move one or two partitions (sometimes to nobody) and let the workers race it.
            moved = {p: rng.choice([*WORKERS, None]) for p in rng.sample(range(PARTITIONS), 2)}
            assert leader.assign("leader", term, moved) is not None
            moves += 1
            stop.wait(0.02)
        # Hand everything out for good so the backlog drains, then wait for it.
        leader.assign("leader", term, {p: WORKERS[p % 3] for p in range(PARTITIONS)})
        while time.monotonic() < deadline and leader.counts_by_state()["succeeded"] < JOBS:
            stop.wait(0.05)
        stop.set()
        for p in [zombie, *workers]:
            p.join(timeout=30)
            assert p.exitcode == 0

        reports = {
            name: json.loads((tmp_path / f"{name}.json").read_text()) for name in [*WORKERS, "z"]
        }
        for name, r in reports.items():
            assert "error" not in r, f"{name}: {r['error']}"

        counts = leader.counts_by_state()
        assert counts["succeeded"] == JOBS, counts
        completed = [i for n in WORKERS for i in reports[n]["completed"]]
        assert len(completed) == len(set(completed)), "a job was reported succeeded twice"
        assert sorted(completed) == sorted(ids)
        records = [leader.get_job(i) for i in ids]
        assert all(r is not None and r.state == "succeeded" for r in records)

        z = reports["z"]
        assert len(z["claimed"]) >= 1
        assert z["complete_fenced"] == z["claimed"][1:]
        assert z["fail_outcome"] == "fenced"
        assert z["claim_after"] == []
        assert not set(z["claimed"]) & {r.id for r in records if r and r.claimed_by == ZOMBIE}
        fenced = sum(reports[n]["fenced"] for n in WORKERS)
        print(f"moves={moves} fenced={fenced} claimed={[reports[n]['claimed'] for n in WORKERS]}")
    finally:
        leader.close()
