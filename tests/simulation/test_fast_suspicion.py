"""Fast suspicion, told as scenarios: kill -9 on a host that stays up fails over in well under
a second of simulated time; a connection that drops and comes back changes nothing; a silent
death (a machine lost) still waits for the session timeout.

The simulator checks every invariant after every step (tests/sim/invariants.py); these tests
add what each story promises. Default timings (session 3 s, link_confirm 0.1 s).
"""

from __future__ import annotations

import pytest

from ringwork.protocol import events as ev
from tests.sim.simulator import Simulation
from tests.simulation.test_scenarios import events, partitions_of, settle, started, wait_for

SEEDS = range(8)


def every_partition_claimable(sim: Simulation) -> bool:
    rows = sim.referee.read_partitions()
    for p, row in rows.items():
        owner = sim.nodes.get(row.owner) if row.owner is not None else None
        if owner is None or not owner.live or partitions_of(sim, owner.name).get(p) != row.epoch:
            return False
    return True


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_a_follower_on_a_live_host(seed: int) -> None:
    sim = started(seed)
    leader = sim.leader()
    victim = next(n for n in sim.live_names() if n != leader)
    others = [n for n in sim.live_names() if n != victim]
    kept = {n: partitions_of(sim, n) for n in others}
    t0 = sim.now
    sim.kill(victim)
    took = wait_for(sim, lambda: every_partition_claimable(sim), 1.0)
    dead = sim.notices("member_dead", t0)
    assert [h.action.detail["node"] for h in dead] == [victim]  # type: ignore[attr-defined]
    assert dead[0].action.detail["reason"] == "link_refused"  # type: ignore[attr-defined]
    assert dead[0].time - t0 < 0.3  # link_confirm (0.1 s) and two refusals
    assert took <= 0.5
    for n in others:  # only the dead node's partitions move
        assert kept[n].items() <= partitions_of(sim, n).items()
    assert not events(sim, ev.Revoked, t0) and not events(sim, ev.Lost, t0)
    assert sim.referee.term == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_the_leader_on_a_live_host(seed: int) -> None:
    sim = started(seed)
    old = sim.leader()
    assert old is not None
    survivors = [n for n in sim.live_names() if n != old]
    kept = {n: partitions_of(sim, n) for n in survivors}
    t0 = sim.now
    sim.kill(old)
    took = wait_for(
        sim, lambda: sim.leader() in survivors and every_partition_claimable(sim), 1.0
    )
    assert took <= 0.6  # confirmation, a poll, the term CAS, the joins, one write
    assert sim.referee.term == 2
    for n in survivors:  # sticky across the leader change
        assert kept[n].items() <= partitions_of(sim, n).items()
    assert not events(sim, ev.Lost, t0) and not events(sim, ev.Revoked, t0)
    settle(sim, 3.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_connections_that_drop_and_come_back_change_nothing(seed: int) -> None:
    sim = started(seed)
    leader = sim.leader()
    assert leader is not None
    writes, term = sim.referee.writes, sim.referee.term
    t0 = sim.now
    confirm = sim.config.link_confirm
    for _ in range(20):  # every link, both ways, dropped and restored, one refusal at most
        for a in sim.live_names():
            for b in sim.live_names():
                if a != b:
                    sim.flap(a, b, sim.rng.uniform(0.001, confirm * 0.9), sim.rng.randint(0, 1))
        sim.run_for(0.3)
    sim.run_for(2.0)
    assert sim.referee.writes == writes and sim.referee.term == term
    assert not sim.notices("member_dead", t0)
    assert not events(sim, ev.Lost, t0) and not events(sim, ev.Revoked, t0)


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_a_silent_death_still_waits_for_the_session_timeout(seed: int) -> None:
    """A machine lost or a cable cut: no connection closes, nothing is refused."""
    sim = started(seed)
    leader = sim.leader()
    victim = next(n for n in sim.live_names() if n != leader)
    t0 = sim.now
    sim.crash(victim)
    wait_for(sim, lambda: bool(sim.notices("member_dead", t0)), 5.0)
    dead = sim.notices("member_dead", t0)[0]
    assert dead.action.detail["reason"] == "silent"  # type: ignore[attr-defined]
    assert dead.time - t0 >= sim.config.session_timeout - sim.config.heartbeat_interval


@pytest.mark.parametrize("seed", SEEDS)
def test_named_nodes_killed_on_a_live_host_get_their_partitions_back(seed: int) -> None:
    """Static membership: a named node's links closing prove nothing the leader may act on (its
    partitions wait for its next process), so a rolling kill -9 and restart of named nodes --
    the leader too -- moves nothing (invariant 9 at every write)."""
    from ringwork.protocol.config import ProtocolConfig

    sim = Simulation(seed, config=ProtocolConfig(partitions=16))
    sim.named = {"n1", "n2", "n3"}
    sim.start(3)
    settle(sim, 5.0)
    sim.run_for(1.0)
    owners = {p: o for p, o in enumerate(sim.referee.owner) if o is not None}
    assert len(owners) == 16
    sim.sticky_owners = owners
    for name in list(sim.live_names()):
        t0 = sim.now
        sim.kill(name)
        sim.run_for(sim.rng.uniform(0.3, 1.5))  # well past link_confirm
        assert not sim.notices("member_dead", t0)
        sim.restart(name)
        settle(sim, 12.0)
        assert partitions_of(sim, name).keys() == {p for p, o in owners.items() if o == name}
    assert sim.referee.owner == [owners[p] for p in range(16)]
