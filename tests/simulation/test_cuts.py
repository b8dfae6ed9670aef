"""Network cuts between peers while every node still reaches the database: degrade, do not stall.

Each story cuts peer links only (the referee stays reachable and reliable, nobody joins, leaves or
crashes) and turns on invariant 7 (``sim.keep_partitions``): at every step of the cut and the heal,
every partition stays claimable, at the referee's epoch, by its owner. Invariants 1-3 and 5 (no
eviction while a registry row is fresh) are checked after every step as always. A failure names
its seed; ``Simulation(seed, ...)`` with the same story replays it exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ringwork.protocol import events as ev
from tests.sim.simulator import Simulation
from tests.simulation.test_scenarios import events, partitions_of, settle, started

SEEDS = range(8)
CUT_FOR = 15.0  # several session timeouts, and longer than revoke_timeout


def _victim(sim: Simulation) -> tuple[str, str]:
    leader = sim.leader()
    assert leader is not None
    return leader, next(n for n in sim.live_names() if n != leader)


def follower_both_ways(sim: Simulation) -> str:
    _, follower = _victim(sim)
    sim.net.isolate(follower, sim.nodes)
    return follower


def leader_both_ways(sim: Simulation) -> str:
    leader, _ = _victim(sim)
    sim.net.isolate(leader, sim.nodes)
    return leader


def leader_to_follower(sim: Simulation) -> str:
    """The follower hears nothing from the leader (no Ack, no Grant); its heartbeats arrive."""
    leader, follower = _victim(sim)
    sim.net.block(leader, follower)
    return follower


def follower_to_leader(sim: Simulation) -> str:
    """The leader hears nothing from the follower; the follower hears the leader."""
    leader, follower = _victim(sim)
    sim.net.block(follower, leader)
    return follower


CUTS: dict[str, Callable[[Simulation], str]] = {
    "follower-both-ways": follower_both_ways,
    "leader-both-ways": leader_both_ways,
    "leader-to-follower": leader_to_follower,
    "follower-to-leader": follower_to_leader,
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cut", list(CUTS))
def test_a_cut_between_peers_costs_no_partition_and_no_eviction(cut: str, seed: int) -> None:
    sim = started(seed)
    term, writes = sim.referee.term, sim.referee.writes
    t0 = sim.now
    sim.keep_partitions = True  # invariant 7, at every step from here on
    victim = CUTS[cut](sim)
    kept = partitions_of(sim, victim)
    assert kept, "the victim owned partitions before the cut"
    sim.run_for(CUT_FOR)
    # The cut node still works its partitions (a follower through its database lease) ...
    assert partitions_of(sim, victim) == kept
    degraded = {n for n in sim.live_names() if sim.nodes[n].core.degraded}
    assert degraded == ({victim} if victim != sim.leader() else set(sim.live_names()) - {victim})
    assert {h.node for h in sim.notices("degraded", t0)} == degraded  # logged, once each
    assert len(sim.notices("degraded", t0)) == len(degraded)
    # ... nobody was declared dead, no election, no partition moved or was lost.
    assert not sim.notices("member_dead", t0)
    assert sim.referee.term == term and sim.referee.writes == writes
    assert not events(sim, ev.Lost, t0) and not events(sim, ev.Revoked, t0)
    sim.net.heal()
    settle(sim, 5.0)
    sim.run_for(2.0)
    assert sim.referee.term == term and sim.referee.writes == writes
    assert partitions_of(sim, victim) == kept


@pytest.mark.parametrize("seed", SEEDS)
def test_a_move_the_cut_follower_cannot_hear_waits_for_the_heal(seed: int) -> None:
    """A node joins while a follower is cut off: the leader rebalances, but never hands over a
    partition whose owner has not heard that it is revoked (it may be claiming it through its
    database lease). The cut follower keeps working those until the heal, then hands them over
    cleanly: nothing is lost, nothing is claimed twice (invariant 2, every step)."""
    sim = started(seed, n=3)
    victim = follower_both_ways(sim)
    t0 = sim.now
    sim.add_node()
    sim.run_for(CUT_FOR)
    assert not sim.notices("member_dead", t0)
    assert partitions_of(sim, victim)  # still working (some of) its share
    assert not events(sim, ev.Lost, t0)
    sim.net.heal()
    settle(sim, 8.0)
    assert not events(sim, ev.Lost, t0)  # revoked, drained, handed over after the heal
