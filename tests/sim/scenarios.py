"""Seeded fault schedules ("families") for the simulator, and the runner that checks liveness.

A run of family ``F`` with seed ``S`` is: start 3-6 nodes together, apply the family's random
faults during the first :data:`FAULT_WINDOW` seconds, then stop every fault (heal the network,
resume the paused, restart the crashed, make the referee reliable) and require the cluster to
settle (invariant 4) within :data:`LIVENESS_BOUND` simulated seconds. Invariants 1-3 are checked
after every step all along. Everything is drawn from ``random.Random(f"{F}:{S}")``, so
``python -m tests.sim.simulate --family F --seed S --trace`` replays a run exactly.

Families:

* ``crash``     -- nodes (the leader too) crash and restart;
* ``partition`` -- symmetric splits, one-way partitions, an isolated leader, and heals;
* ``pause``     -- long pauses (zombies that wake up after their session ended);
* ``churn``     -- joins, clean leaves, restarts in a row (rolling restart);
* ``referee``   -- the database fails (sometimes after applying a write) or stalls;
* ``random``    -- all of the above at once, over a lossy, duplicating, reordering network;
* ``cut``       -- nodes cut off from their peers (both ways, one way, the leader too) while
  one node's database round trips turn slow or it pauses: the races of degraded mode (a
  registry touch landing just after the leader read the row stale);
* ``flap``      -- fast suspicion's false alarms: connections between live nodes close and come
  back (within the confirmation window, or later but never refused twice), amid kills (links
  close, reconnects refused), silent crashes and pauses (no link signal at all);
* ``kill``      -- ``kill -9`` on hosts that stay up (the leader too), over a quiet network:
  after each kill the dead node's partitions must be claimable by live nodes again, under a
  live leader, within :data:`KILL_BOUND` simulated seconds (invariant 10).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ringwork.protocol.config import ProtocolConfig
from tests.sim.faults import RefereeModel, RuntimeModel
from tests.sim.network import NetworkModel
from tests.sim.simulator import Simulation

FAMILIES = ("crash", "partition", "pause", "churn", "referee", "random", "cut", "flap", "kill")

#: Invariant 10 (the ``kill`` family): a killed node's partitions are claimable by live nodes,
#: under a live leader, this soon after the kill (link confirmation, a poll, the term CAS for a
#: leader, one write; the real figure is in docs/protocol.md).
KILL_BOUND = 1.0

#: Faults are injected during [1 s, FAULT_WINDOW].
FAULT_WINDOW = 12.0
#: After the faults stop, the cluster must settle within this many simulated seconds. The worst
#: case is a revocation whose drain is stuck (revoke_timeout) after a re-election (session_timeout
#: + backoff + takeover) plus debounces; see docs/protocol.md.
LIVENESS_BOUND = 40.0
#: Once settled, it must stay settled this long (no flapping).
STABLE_FOR = 2.0


@dataclass(frozen=True)
class RunResult:
    family: str
    seed: int
    steps: int
    sim_time: float
    settled_after: float  # seconds from the end of faults to invariant 4 holding
    writes: int
    terms: int


def replay_command(family: str, seed: int) -> str:
    return f"python -m tests.sim.simulate --family {family} --seed {seed} --trace"


def build(family: str, seed: int, *, trace: bool = False) -> tuple[Simulation, random.Random]:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    rng = random.Random(f"{family}:{seed}")
    noisy = family == "random"
    network = NetworkModel(
        drop=rng.uniform(0, 0.15 if noisy else 0.02),
        duplicate=rng.uniform(0, 0.05 if noisy else 0.01),
        spike=rng.uniform(0, 0.05 if noisy else 0.01),
    )
    if family == "kill":
        network = NetworkModel()  # the bound is about the protocol, not about lost messages
    runtime = RuntimeModel(stuck=0.1 if family in ("churn", "random") else 0.02)
    config = ProtocolConfig(partitions=rng.choice([8, 16, 17, 32]))
    sim = Simulation(
        rng.randrange(2**32),
        config=config,
        network=network,
        runtime=runtime,
        replay=replay_command(family, seed),
        trace=trace,
        wire_every=4,  # the codec's own tests fuzz it; here a sample keeps the runs fast
    )
    return sim, rng


def run(family: str, seed: int, *, trace: bool = False) -> RunResult:
    """One seeded run; raises :class:`InvariantViolation` at the first broken invariant."""
    sim, rng = build(family, seed, trace=trace)
    sim.start(rng.randint(3, 6), jitter=rng.uniform(0, 0.5))
    sim.run_until(1.0)
    faults = _FAULTS[family]
    count = rng.randint(3, 8) if family != "random" else rng.randint(6, 14)
    for _ in range(count):
        sim.run_until(rng.uniform(sim.now, FAULT_WINDOW - 2.0))
        rng.choice(faults)(sim, rng)
    sim.run_until(FAULT_WINDOW)
    _heal(sim, rng)
    healed = sim.now
    settled = None
    while sim.now < healed + LIVENESS_BOUND:
        sim.run_for(0.25)
        if sim.converged() is None:
            if settled is None:
                settled = sim.now
            elif sim.now - settled >= STABLE_FOR:
                break
        else:
            settled = None
    problem = sim.converged()
    if settled is None or problem is not None:
        raise sim.violation(4, f"not settled {LIVENESS_BOUND}s after faults stopped: {problem}")
    return RunResult(
        family=family,
        seed=seed,
        steps=sim.steps,
        sim_time=sim.now,
        settled_after=settled - healed,
        writes=sim.writes,
        terms=sim.referee.term,
    )


def _heal(sim: Simulation, rng: random.Random) -> None:
    """Faults stop: heal, make everything reliable, resume the paused, restart the crashed."""
    sim.net.heal()
    sim.net.model = sim.net.model.quiet()
    sim.referee_model = RefereeModel()
    sim.db_slow.clear()
    sim.runtime = RuntimeModel()
    for node in list(sim.nodes.values()):
        if node.crashed:
            sim.restart(node.name)
        if node.paused_until > sim.now:
            node.paused_until = sim.now
            sim.at(sim.now, sim._resume, node, node.process)
    staying = [n for n in sim.live_names() if not sim.nodes[n].core.leaving]
    for _ in range(2 - len(staying)):
        sim.add_node()


# ----------------------------------------------------------------------------- the faults


def _victim(sim: Simulation, rng: random.Random, *, leader_bias: float = 0.4) -> str | None:
    live = [n for n in sim.live_names() if sim.now >= sim.nodes[n].paused_until]
    if len(live) < 2:
        return None
    leader = sim.leader()
    if leader in live and rng.random() < leader_bias:
        return leader
    return rng.choice(live)


def crash(sim: Simulation, rng: random.Random) -> None:
    name = _victim(sim, rng)
    if name is not None:
        sim.crash(name)
        if rng.random() < 0.7:
            sim.at(sim.now + rng.uniform(0.5, 8.0), _restart_if_crashed, sim, name)


def kill(sim: Simulation, rng: random.Random) -> None:
    """``kill -9`` on a host that stays up: peers see the links close and get refused."""
    name = _victim(sim, rng)
    if name is not None:
        sim.kill(name)
        if rng.random() < 0.7:
            sim.at(sim.now + rng.uniform(0.5, 8.0), _restart_if_crashed, sim, name)


def flap(sim: Simulation, rng: random.Random) -> None:
    """A burst of connections between live nodes dropping and coming back."""
    live = sim.live_names()
    if len(live) < 2:
        return
    confirm = sim.config.link_confirm
    for _ in range(rng.randint(1, 6)):
        a, b = rng.sample(live, 2)
        if rng.random() < 0.6:  # restored within the window, perhaps after one refusal
            down, refusals = rng.uniform(0.001, confirm * 0.95), rng.randint(0, 1)
        else:  # slow to come back, but a live listener never refuses twice
            down, refusals = rng.uniform(confirm, 3.0), rng.randint(0, 1)
        when = sim.now + rng.uniform(0, 1.0)
        sim.at(when, _flap_if_live, sim, a, b, down, refusals)


def _flap_if_live(sim: Simulation, at: str, peer: str, down: float, refusals: int) -> None:
    if sim.nodes[at].live and sim.nodes[peer].live:
        sim.flap(at, peer, down, refusals)


def kill_checked(sim: Simulation, rng: random.Random) -> None:
    """Kill one node and hold the failover to :data:`KILL_BOUND` (invariant 10): unless
    another fault came first, within the bound a live leader of a newer term (if the leader
    died) and live owners able to claim every partition the dead node owned."""
    name = _victim(sim, rng)
    if name is None:
        return
    # The bound holds for a cluster whose registry names only live processes: a node killed
    # earlier whose row is still fresh may rank first in an election, and a process started
    # since has never seen its link close (the session timeout finds it: the old path).
    checked = all(n.live for n in sim.nodes.values())
    was_leader = sim.leader() == name
    owned = [p for p, own in sim.referee.read_partitions().items() if own.owner == name]
    term = sim.referee.term
    sim.kill(name)
    sim.kills += 1
    mark = sim.kills
    sim.at(sim.now + KILL_BOUND + rng.uniform(0.2, 6.0), _restart_if_crashed, sim, name)
    if checked:
        sim.at(sim.now + 0.05, _check_failover, sim, name, was_leader, owned, term, mark,
               sim.now + KILL_BOUND)


def _failed_over(sim: Simulation, was_leader: bool, owned: list[int], term: int) -> bool:
    leader = sim.leader()
    if leader is None or (was_leader and sim.referee.term <= term):
        return False
    rows = sim.referee.read_partitions()
    for p in owned:
        row = rows[p]
        owner = sim.nodes.get(row.owner) if row.owner is not None else None
        if owner is None or not owner.live:
            return False
        if owner.core.claimable(sim.now + owner.offset).get(p) != row.epoch:
            return False
    return True


def _check_failover(sim: Simulation, name: str, was_leader: bool, owned: list[int], term: int,
                    mark: int, deadline: float) -> None:
    if sim.kills != mark or not sim.nodes[name].crashed:
        return  # another kill, or a restart, came first: no bound to hold
    if len(sim.live_names()) < 2:
        return
    if _failed_over(sim, was_leader, owned, term):
        sim.failovers.append(sim.now - (deadline - KILL_BOUND))
        return
    if sim.now >= deadline:
        what = "leader" if was_leader else "follower"
        raise sim.violation(10, f"{what} {name} killed {KILL_BOUND}s ago: its partitions "
                            f"{owned} not claimable by live nodes under a live leader yet")
    sim.at(sim.now + 0.01, _check_failover, sim, name, was_leader, owned, term, mark, deadline)


def _restart_if_crashed(sim: Simulation, name: str) -> None:
    if sim.nodes[name].crashed:
        sim.restart(name)


def pause(sim: Simulation, rng: random.Random) -> None:
    name = _victim(sim, rng)
    if name is not None:
        # Short pauses (within the lease), ones just around session_timeout, and long zombies.
        sim.pause(
            name, rng.choice([rng.uniform(0.1, 2.0), rng.uniform(2.0, 4.0), rng.uniform(4.0, 12.0)])
        )


def split(sim: Simulation, rng: random.Random) -> None:
    names = sim.live_names()
    rng.shuffle(names)
    cut = rng.randint(1, max(1, len(names) - 1))
    sim.net.split(names[:cut], names[cut:])
    sim._note("net", f"SPLIT {sorted(names[:cut])} | {sorted(names[cut:])}")
    sim.at(sim.now + rng.uniform(1.0, 8.0), _heal_net, sim)


def one_way(sim: Simulation, rng: random.Random) -> None:
    names = sim.live_names()
    if len(names) < 2:
        return
    leader = sim.leader()
    a, b = rng.sample(names, 2)
    if leader is not None and rng.random() < 0.5:
        a, b = (leader, b if b != leader else a) if rng.random() < 0.5 else (a, leader)
    if a != b:
        sim.net.block(a, b)
        sim._note("net", f"BLOCK {a} -> {b}")
        sim.at(sim.now + rng.uniform(1.0, 8.0), _heal_net, sim)


def isolate_leader(sim: Simulation, rng: random.Random) -> None:
    leader = sim.leader()
    if leader is not None:
        sim.net.isolate(leader, sim.nodes)
        sim._note("net", f"ISOLATE {leader}")
        sim.at(sim.now + rng.uniform(2.0, 8.0), _heal_net, sim)


def _heal_net(sim: Simulation) -> None:
    sim.net.heal()
    sim._note("net", "HEAL")


def join(sim: Simulation, rng: random.Random) -> None:
    if len(sim.nodes) < 9:
        sim.add_node()


def leave(sim: Simulation, rng: random.Random) -> None:
    name = _victim(sim, rng, leader_bias=0.3)
    staying = [n for n in sim.live_names() if not sim.nodes[n].core.leaving]
    if name is not None and len(staying) > 2:
        sim.leave(name)


def rolling_restart(sim: Simulation, rng: random.Random) -> None:
    gap = rng.uniform(0.2, 4.0)
    for i, name in enumerate(sim.live_names()[:3]):
        sim.at(sim.now + i * gap, _crash_and_restart, sim, name, rng.uniform(0.1, 1.0))


def _crash_and_restart(sim: Simulation, name: str, down: float) -> None:
    if sim.nodes[name].live:
        sim.crash(name)
        sim.at(sim.now + down, _restart_if_crashed, sim, name)


def referee_outage(sim: Simulation, rng: random.Random) -> None:
    sim.referee_model = RefereeModel(fail=rng.uniform(0.1, 0.8), slow=rng.uniform(0, 0.2))
    sim._note("db", "REFEREE OUTAGE")
    sim.at(sim.now + rng.uniform(0.5, 5.0), _referee_ok, sim)


def referee_stall(sim: Simulation, rng: random.Random) -> None:
    sim.referee_model = RefereeModel(slow=rng.uniform(0.3, 1.0), slow_delay=(0.5, 4.0))
    sim._note("db", "REFEREE STALL")
    sim.at(sim.now + rng.uniform(0.5, 5.0), _referee_ok, sim)


def isolate_node(sim: Simulation, rng: random.Random) -> None:
    name = _victim(sim, rng)
    if name is not None:
        sim.net.isolate(name, sim.nodes)
        sim._note("net", f"ISOLATE {name}")
        sim.at(sim.now + rng.uniform(2.0, 9.0), _heal_net, sim)


def node_db_slow(sim: Simulation, rng: random.Random) -> None:
    """One node's database round trips slow down (around the degraded-mode poll budget, or
    far past it) for a spell; everyone else's stay fast."""
    name = _victim(sim, rng)
    leader = sim.leader()
    for who in [name, leader if leader != name and rng.random() < 0.5 else None]:
        if who is not None:  # a slow leader widens the window between its read and its write
            top = rng.choice([0.3, 1.0, 4.0])
            sim.db_slow[who] = (rng.uniform(0.0, top / 2), top)
            sim._note(who, f"DB SLOW up to {top}s")
            sim.at(sim.now + rng.uniform(1.0, 8.0), _db_fast, sim, who)


def _db_fast(sim: Simulation, name: str) -> None:
    sim.db_slow.pop(name, None)
    sim._note(name, "DB FAST")


def _referee_ok(sim: Simulation) -> None:
    sim.referee_model = RefereeModel()
    sim._note("db", "REFEREE OK")


Fault = Callable[[Simulation, random.Random], None]

_FAULTS: dict[str, list[Fault]] = {
    "crash": [crash],
    "partition": [split, one_way, isolate_leader],
    "pause": [pause],
    "churn": [join, leave, rolling_restart, crash],
    "referee": [referee_outage, referee_stall],
}
_FAULTS["random"] = [f for faults in list(_FAULTS.values()) for f in faults] + [pause, split]
_FAULTS["cut"] = [isolate_node, isolate_leader, one_way, node_db_slow, node_db_slow, pause]
_FAULTS["flap"] = [flap, flap, flap, kill, crash, pause]
_FAULTS["random"] += [kill, flap]
_FAULTS["kill"] = [kill_checked]
