"""Fencing by job, told as scenarios: a rebalance between live nodes never re-runs a job.

The simulator's runtime claims jobs from every partition a core may claim and runs some of
them for many seconds, so rebalances happen with jobs in flight on the moving partitions. The
referee twin applies the store's rule (a move keeps the claims of live claimers); invariant 8,
checked at every re-queue, says no job is re-queued while its claimer may still claim.
"""

from __future__ import annotations

import pytest

from tests.sim.faults import RuntimeModel
from tests.sim.invariants import InvariantViolation
from tests.sim.referee import MemoryReferee
from tests.sim.simulator import Simulation
from tests.simulation.test_scenarios import settle

SEEDS = range(6)
#: Every job runs long enough to see several rebalances.
LONG = RuntimeModel(claim_chance=0.5, long_job=1.0, long_job_time=(8.0, 30.0))


def scaled(seed: int, runtime: RuntimeModel = LONG) -> Simulation:
    """Ten scale-out and scale-in steps over three to six nodes, long jobs in flight."""
    sim = Simulation(seed, runtime=runtime)
    sim.start(3)
    settle(sim, 30)
    for step in range(10):
        if step % 2 == 0:
            sim.add_node()
        else:
            live = sim.live_names()
            sim.leave(live[sim.rng.randrange(len(live))])
        sim.run_for(3.0)
        settle(sim, 30)
    return sim


@pytest.mark.parametrize("seed", SEEDS)
def test_scaling_with_long_jobs_in_flight_re_runs_nothing_and_fences_nothing(seed: int) -> None:
    sim = scaled(seed)
    jobs = sim.referee.jobs
    moved = sum(1 for h in sim.notices("assignment_written"))
    assert moved >= 10, "the story needs rebalances"
    assert jobs._seq > 50, "and jobs in flight"
    # A node of the simulator ends with its leave, dropping what it ran (a real worker finishes
    # or hands back its jobs first): the leader's sweep re-queues those once its row is gone.
    sim.run_for(sim.config.session_timeout * 2)
    left = {n.name for n in sim.nodes.values() if n.stopped}
    assert all(job.claimed_by not in left for job in jobs.jobs.values() if job.state == "running")
    assert jobs.fenced == 0, "a live node's completion was refused"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_paused_nodes_carried_jobs_are_swept_and_its_late_completions_refused(
    seed: int,
) -> None:
    sim = Simulation(seed, runtime=LONG)
    names = sim.start(3)
    settle(sim, 30)
    sim.run_for(2.0)
    sim.add_node()  # partitions move with jobs in flight: every holder keeps its jobs
    settle(sim, 30)
    victim = next(n for n in names if n != sim.leader())
    jobs = sim.referee.jobs
    held = dict(sim.nodes[victim].holding)
    carried = [i for i in held if jobs.jobs[i].token < sim.referee.epoch[jobs.jobs[i].partition]]
    assert held, "the story needs jobs in flight on the victim"
    # A pause past the session: declared dead, and every job it held re-queued -- those of
    # partitions it still owned by their move, the carried ones by the leader's sweep (no later
    # move of their partitions would find them). Awake again, its completions are refused.
    fenced = jobs.fenced
    sim.pause(victim, sim.config.session_timeout * 4)
    sim.run_for(sim.config.session_timeout * 3)
    assert any(h.action.detail["node"] == victim for h in sim.notices("member_dead"))
    for i in held:
        job = jobs.jobs.get(i)
        assert job is None or job.claimed_by != victim, f"job {i} still claimed by the dead node"
    if carried:
        assert sim.notices("orphans_requeued"), "carried jobs were swept"
    sim.run_for(40.0)  # every handler of the zombie returns, after it woke up
    assert jobs.fenced - fenced == len(held)


def test_invariant_8_catches_a_referee_that_re_queues_live_claims() -> None:
    """The check can fail: a referee that re-queues every running job of a moved partition
    (what the store did before fencing by job) breaks invariant 8 at the first rebalance."""

    class Eager(MemoryReferee):
        def _dead_rule(self, keep, stale_after):  # type: ignore[no-untyped-def]
            return lambda claimer: True

    sim = Simulation(1, runtime=LONG)
    sim.referee.__class__ = Eager
    sim.start(3)
    settle(sim, 30)
    sim.run_for(2.0)
    with pytest.raises(InvariantViolation, match="invariant 8"):
        sim.add_node()
        settle(sim, 30)
