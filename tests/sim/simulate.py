"""Soak and replay command for the protocol simulator.

    python -m tests.sim.simulate --family random --seeds 10000 --jobs 4
    python -m tests.sim.simulate --family all --seeds 500
    python -m tests.sim.simulate --family pause --seed 1234 --trace   # replay one run

Exit status 0 if no invariant was violated; otherwise 1, after printing the first violation (its
seed, step and replay command). Seeds are ``--first`` .. ``--first + --seeds - 1``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from tests.sim.invariants import InvariantViolation
from tests.sim.scenarios import FAMILIES, RunResult, replay_command, run


def _one(job: tuple[str, int]) -> RunResult | str:
    family, seed = job
    try:
        return run(family, seed)
    except InvariantViolation as exc:
        return str(exc)
    except Exception:  # a crash of the core is a failure like any other: report and replay
        return f"{family} seed {seed} raised:\n{traceback.format_exc()}  replay: " + (
            replay_command(family, seed)
        )


def _results(jobs: list[tuple[str, int]], workers: int) -> Iterator[RunResult | str]:
    if workers <= 1:
        yield from map(_one, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.simulate")
    parser.add_argument("--family", default="random", choices=[*FAMILIES, "all"])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds per family")
    parser.add_argument("--first", type=int, default=0, help="first seed")
    parser.add_argument("--seed", type=int, help="run (replay) this one seed")
    parser.add_argument("--trace", action="store_true", help="print every step of the run")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--keep-going", action="store_true", help="do not stop at a violation")
    args = parser.parse_args(argv)
    families = FAMILIES if args.family == "all" else (args.family,)

    if args.seed is not None:
        failed = False
        for family in families:
            try:
                result = run(family, args.seed, trace=args.trace)
                print(
                    f"{family} seed {args.seed}: ok, settled {result.settled_after:.2f}s "
                    f"after faults, {result.steps} steps, {result.terms} terms"
                )
            except InvariantViolation as exc:
                print(exc)
                failed = True
        return 1 if failed else 0

    started = time.perf_counter()
    seeds = range(args.first, args.first + args.seeds)
    jobs = [(family, seed) for family in families for seed in seeds]
    results: list[RunResult] = []
    violations: list[str] = []
    for outcome in _results(jobs, args.jobs):
        if isinstance(outcome, str):
            violations.append(outcome)
            print(outcome, file=sys.stderr)
            if not args.keep_going:
                break
        else:
            results.append(outcome)
    wall = time.perf_counter() - started
    for family in families:
        mine = [r for r in results if r.family == family]
        if not mine:
            continue
        settle = sorted(r.settled_after for r in mine)
        print(
            f"{family:>9}: {len(mine)} seeds ok, {sum(r.steps for r in mine)} steps, "
            f"settled after faults: median {statistics.median(settle):.2f}s, "
            f"p99 {settle[int(len(settle) * 0.99) - 1 if len(settle) > 1 else 0]:.2f}s, "
            f"max {settle[-1]:.2f}s"
        )
    print(f"{len(results) + len(violations)} runs, {len(violations)} violations, {wall:.1f}s wall")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
