"""Random fault schedules: many seeds per family, invariants checked after every step.

``RINGWORK_SIM_SEEDS`` sets the seeds per family (default 500); a failure prints the seed, the
step and the replay command (``python -m tests.sim.simulate --family F --seed S --trace``).
For soak runs use ``python -m tests.sim.simulate --family all --seeds 10000 --jobs N``.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from tests.sim.scenarios import FAMILIES, RunResult, run
from tests.sim.simulate import _one

SEEDS = int(os.environ.get("RINGWORK_SIM_SEEDS", "500"))


@pytest.fixture(scope="module")
def pool() -> ProcessPoolExecutor:
    workers = max(1, min(os.cpu_count() or 1, 8))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool  # type: ignore[misc]


@pytest.mark.parametrize("family", FAMILIES)
def test_family(family: str, pool: ProcessPoolExecutor) -> None:
    jobs = [(family, seed) for seed in range(SEEDS)]
    outcomes = list(pool.map(_one, jobs, chunksize=max(1, SEEDS // 32)))
    failures = [o for o in outcomes if isinstance(o, str)]
    assert not failures, f"{len(failures)} of {SEEDS} seeds failed; the first:\n{failures[0]}"
    assert all(isinstance(o, RunResult) for o in outcomes)


def test_a_run_is_a_pure_function_of_its_seed() -> None:
    assert run("random", 7) == run("random", 7)
