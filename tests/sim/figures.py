"""Measure the protocol's figures (docs/protocol.md): ``python -m tests.sim.figures``.

* detection and failover times after a crash (simulated time, default timings, many seeds);
* partitions moved on a join or leave against the minimum balance needs (the assignor alone
  for P = 64/256/4096 and N = 1..256; the whole protocol on the referee for small clusters);
* wall time of one assignment of 4096 partitions to 256 nodes.
"""

from __future__ import annotations

import argparse
import statistics
import time

from ringwork.protocol.assignor import assign, minimum_moves, moved
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.core import LEADER
from tests.sim.simulator import Simulation


def _settled(sim: Simulation, within: float) -> float:
    start = sim.now
    while sim.converged() is not None:
        if sim.now - start > within:
            raise AssertionError(f"seed {sim.seed}: {sim.converged()}")
        sim.run_for(0.01)
    return sim.now - start


def _all_claimable(sim: Simulation) -> bool:
    claimable: set[int] = set()
    for node in sim.nodes.values():
        if node.live and sim.now >= node.paused_until:
            claimable |= node.core.claimable(sim.now + node.offset).keys()
    return len(claimable) == sim.config.partitions


def crash_times(
    kill_leader: bool, seeds: int, nodes: int = 5, *, link_signals: bool = False
) -> dict[str, list[float]]:
    """Per seed: crash -> detected (member_dead / successor elected), and crash -> every
    partition claimable by a live node again. ``link_signals``: a ``kill -9`` on a host that
    stays up (peers see the links close and get refused: fast suspicion), else a silent crash
    (a machine lost)."""
    detect: list[float] = []
    failover: list[float] = []
    for seed in range(seeds):
        sim = Simulation(seed, config=ProtocolConfig(partitions=64))
        sim.start(nodes)
        _settled(sim, 5.0)
        sim.run_for(sim.rng.uniform(1.0, 2.0))  # crash at a random phase of the heartbeats
        leader = sim.leader()
        victim = leader if kill_leader else next(n for n in sim.live_names() if n != leader)
        assert victim is not None
        t0 = sim.now
        (sim.kill if link_signals else sim.crash)(victim)
        sim.run_for(0.01)
        while not _all_claimable(sim) or sim.leader() is None:
            sim.run_for(0.01)
            assert sim.now - t0 < 20, f"seed {seed}: no failover"
        failover.append(sim.now - t0)
        event = "leader_elected" if kill_leader else "member_dead"
        detect.append(sim.notices(event, t0)[0].time - t0)
    return {"detect": detect, "failover": failover}


def protocol_moves(
    partitions: int, sizes: list[int], seed: int = 0
) -> list[tuple[int, str, int, int]]:
    """Join one node to a settled cluster of n, then remove one: owner changes on the referee."""
    rows = []
    for n in sizes:
        sim = Simulation(seed, config=ProtocolConfig(partitions=partitions))
        sim.start(n)
        _settled(sim, 10.0)
        sim.run_for(1.0)
        before = dict(enumerate(sim.referee.owner))
        members = sim.live_names()
        newcomer = sim.add_node()
        sim.run_for(0.1)
        _settled(sim, 20.0)
        after = dict(enumerate(sim.referee.owner))
        rows.append(
            (
                n,
                "join",
                moved(before, after),
                minimum_moves([*members, newcomer], before, partitions),
            )
        )
        leaver = next(x for x in sim.live_names() if sim.nodes[x].core.role != LEADER)
        sim.leave(leaver)
        sim.run_for(0.1)
        while not sim.nodes[leaver].stopped:
            sim.run_for(0.1)
        _settled(sim, 20.0)
        final = dict(enumerate(sim.referee.owner))
        rest = [x for x in sim.live_names()]
        rows.append((n + 1, "leave", moved(after, final), minimum_moves(rest, after, partitions)))
    return rows


def assignor_moves(partitions: int, sizes: list[int]) -> list[tuple[int, int, int, int, int]]:
    rows = []
    for n in sizes:
        members = [f"n{i:03d}" for i in range(n)]
        stable = assign(members, {}, partitions)
        joined = assign([*members, "new"], stable, partitions)
        join = (moved(stable, joined), minimum_moves([*members, "new"], stable, partitions))
        if n > 1:
            left = assign(members[1:], stable, partitions)
            leave = (moved(stable, left), minimum_moves(members[1:], stable, partitions))
        else:
            leave = (0, 0)
        rows.append((n, *join, *leave))
    return rows


def assign_wall_time(nodes: int = 256, partitions: int = 4096, repeat: int = 20) -> float:
    members = [f"node-{i:03d}" for i in range(nodes)]
    previous = assign(members[:-1], {}, partitions)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        assign(members, previous, partitions)
        best = min(best, time.perf_counter() - start)
    return best


def _stats(values: list[float]) -> str:
    values = sorted(values)
    return (
        f"min {values[0]:.2f}s  median {statistics.median(values):.2f}s  "
        f"p95 {values[int(len(values) * 0.95) - 1]:.2f}s  max {values[-1]:.2f}s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.figures")
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args(argv)
    cfg = ProtocolConfig()
    print(
        f"default timings: heartbeat {cfg.heartbeat_interval}s, session {cfg.session_timeout}s,"
        f" lease margin {cfg.lease_margin}s, leader lease {cfg.leader_lease}s, debounce "
        f"{cfg.join_debounce}s, revoke {cfg.revoke_timeout}s\n"
    )
    for signals in (False, True):
        for kill_leader in (False, True):
            who = "leader" if kill_leader else "follower"
            how = "kill -9 (host up: links refused)" if signals else "silent crash"
            times = crash_times(kill_leader, args.seeds, link_signals=signals)
            print(f"{how} of a {who} (5 nodes, 64 partitions, {args.seeds} seeds):")
            print(f"  detection  {_stats(times['detect'])}")
            print(f"  failover   {_stats(times['failover'])}")
    print("\nassignor: partitions moved (minimum) on one join / one leave from balance")
    sizes = [1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 64, 100, 128, 200, 255, 256]
    for partitions in (64, 256, 4096):
        rows = assignor_moves(partitions, sizes)
        exact = all(r[1] == r[2] and r[3] == r[4] for r in rows)
        shown = "  ".join(f"N={n}: {j}({jm})/{lv}({lm})" for n, j, jm, lv, lm in rows)
        print(f"  P={partitions:<5} {'all at the minimum' if exact else 'NOT MINIMAL'}: {shown}")
    print("\nwhole protocol on the referee: owner changes (minimum) on a join, then a leave")
    for partitions in (64, 256):
        steps = protocol_moves(partitions, [1, 2, 4, 7])
        print(
            f"  P={partitions:<5} "
            + "  ".join(f"{k} from N={n}: {m}({mm})" for n, k, m, mm in steps)
        )
    wall = assign_wall_time()
    print(f"\nassign(256 nodes, 4096 partitions): {wall * 1000:.2f} ms (best of 20)")


if __name__ == "__main__":
    main()
