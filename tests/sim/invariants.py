"""The safety and liveness rules the simulator holds every run to, apart from the loop that runs it.

They live here so that the rules can be read (and argued about) in one place, without the
scheduling and fault machinery around them; :class:`~tests.sim.simulator.Simulation` owns
one :class:`Invariants` and calls it after every step. Single-threaded, like the whole simulator.

The invariants, checked after **every** step (:meth:`Invariants.check`) unless noted:

1. at most one leader per term: the referee's history has one winner per term, and every core
   that acts as leader of a term is that winner;
2. for each partition, at most one node may claim it at the referee's current epoch, and no node
   believes it may claim a partition at an epoch the referee has moved past: every entry of every
   live core's ``claimable(now)`` equals the referee's (owner, epoch) for that partition;
3. every assignment a leader writes moves partitions only to their place in a target that is
   balanced (floor/ceil) over the members that leader believes alive (checked at each write);
4. liveness (:meth:`Invariants.converged`, checked by the runners once faults stop): exactly one
   leader, every live node a member, every partition claimable by a live node, balanced;
5. partitions are written only to nodes that registered with the referee: a forged message
   (:meth:`Simulation.forge`: any sender, any term) never makes a phantom a member;
6. no member is declared dead unless its registry row was stale (not touched for
   session_timeout, or gone) at some moment in the session_timeout before: heartbeat silence
   alone never evicts a node that still reaches the database (checked at each ``member_dead``);
   a member declared dead on its link's word (fast suspicion: closed, reconnects refused) must
   really be gone -- a link that drops and comes back never evicts a live node;
7. degrade, do not stall: while :attr:`Simulation.keep_partitions` is set -- a scenario that cuts
   only peer links, with the referee reachable and no node joining, leaving or crashing --
   every partition is claimable, at the referee's epoch, by its owner, at every step (a node
   with a live database connection and no peer link keeps its partitions);
8. no job has two live claims (fenced by job): a running job is re-queued -- by a move of its
   partition or by the leader's orphan sweep -- only once the process that claimed it is gone or
   can no longer claim (its registry touches lapsed, or it holds no lease); until then the job
   keeps its claim across every rebalance (checked at each re-queue).
9. static membership: while :attr:`Simulation.sticky_owners` is set -- a scenario whose nodes
   only restart under their own names within session_timeout (a rolling restart of named
   nodes) -- every assignment writes each partition to the owner recorded there: a restart
   moves nothing to another node (checked at each write; the new epoch the write gives fences
   the old incarnation, which invariant 2 holds every live core to).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from ringwork.protocol import events as ev
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.core import FOLLOWER, LEADER
from tests.sim.referee import MemoryReferee
from tests.sim.simjobs import SimJob
from tests.sim.simnode import SimNode
from tests.sim.steplog import StepLog


class InvariantViolation(AssertionError):
    """An invariant failed; the message names the seed, the step and the replay command."""


def balanced(assignment: dict[int, str | None], members: list[str], partitions: int) -> bool:
    """Every member holds floor(P/N) or ceil(P/N) partitions, and only members hold any."""
    if not members:
        return all(o is None for o in assignment.values())
    counts = Counter(assignment.values())
    floor, ceil = partitions // len(members), -(-partitions // len(members))
    return set(counts) <= set(members) and all(counts[m] in (floor, ceil) for m in members)


class Observed(Protocol):
    """What the checks read of a simulation (:class:`~tests.sim.simulator.Simulation`)."""

    seed: int
    steps: int
    now: float
    replay: str
    config: ProtocolConfig
    referee: MemoryReferee
    nodes: dict[str, SimNode]
    log: StepLog
    keep_partitions: bool
    sticky_owners: dict[int, str] | None


class Invariants:
    """The checks, reading the simulation's nodes and referee; they change neither (a node's
    ``checked*`` fields are theirs: what they last found consistent)."""

    def __init__(self, sim: Observed) -> None:
        self.sim = sim

    def violation(self, number: int, detail: str) -> InvariantViolation:
        sim = self.sim
        return InvariantViolation(
            f"invariant {number} violated at step {sim.steps} (t={sim.now:.4f}s, seed "
            f"{sim.seed}): {detail}\n  replay: {sim.replay}\n  last events:\n{sim.log.recent()}"
        )

    def check(self) -> None:
        """Invariants 1 and 2, over every live node (paused ones included: they are judged by
        what they would believe if they woke up now); and 7 while it is asked for.

        Equivalent to comparing every ``claimable(now)`` with the referee at every step, but
        cheap: a node's claimable set is ``held`` while its authority or lease runs, then the part
        of ``held`` its last read of the partitions table confirmed (``db_owned``) while its
        database-derived lease runs, then empty; so it only needs re-checking when ``held`` or
        ``db_owned`` (always replaced, never mutated) or the referee's epochs have changed --
        time alone can only shrink it.
        """
        sim = self.sim
        epoch, owner = sim.referee.epoch, sim.referee.owner
        winners = sim.referee.leaders_by_term
        writes = sim.referee.writes
        leading: dict[int, str] = {}
        for node in sim.nodes.values():
            if not node.live:
                continue
            core = node.core
            if core.role == LEADER:
                if winners.get(core.term) != node.name or core.term in leading:
                    raise self.violation(
                        1,
                        f"{node.name} leads term {core.term}; referee "
                        f"winner {winners.get(core.term)}, also {leading}",
                    )
                leading[core.term] = node.name
            held = core.held
            local = sim.now + node.offset
            # What the node may claim rests on the leader's word (``held``) while its lease
            # or authority runs, and on its last read of the partitions table while only its
            # database-derived lease does (degraded mode): re-check when either changes.
            basis: object = None
            lead = core.leadership
            if lead is not None:
                if local >= lead.authority_until:
                    continue
                claim = held
            elif core.role == FOLLOWER and core.joined and local < core.lease_until:
                claim = held
            elif core.role == FOLLOWER and core.joined and local < core.db_lease_until:
                basis = core.db_owned
                claim = core.claimable(local)
            else:
                continue
            same = node.checked is held and node.checked_basis is basis
            if same and node.checked_writes == writes:
                continue
            node.checked, node.checked_basis, node.checked_writes = held, basis, writes
            for p, e in claim.items():
                if epoch[p] != e or owner[p] != node.name:
                    raise self.violation(
                        2,
                        f"{node.name} may claim partition {p} at epoch {e}; "
                        f"referee: owner {owner[p]} epoch {epoch[p]}",
                    )

        if sim.keep_partitions:
            self._check_kept()

    def _check_kept(self) -> None:
        """Invariant 7: every partition claimable by its referee owner at its epoch."""
        sim = self.sim
        claims: dict[str, dict[int, int]] = {}
        for p in range(sim.config.partitions):
            o = sim.referee.owner[p]
            node = sim.nodes.get(o) if o is not None else None
            if o is None or node is None or not node.live:
                raise self.violation(7, f"partition {p} owned by {o}, not a live node")
            if o not in claims:
                claims[o] = node.core.claimable(sim.now + node.offset)
            if claims[o].get(p) != sim.referee.epoch[p]:
                raise self.violation(
                    7, f"partition {p} not claimable by its owner {o} at epoch "
                    f"{sim.referee.epoch[p]} ({node.core.role}, cut from its peers?)"
                )

    def check_requeue(self, job: SimJob) -> None:
        """Invariant 8: no job has two live claims. A running job is re-queued (and so may be
        claimed again) only once the process that claimed it is gone or can no longer claim:
        its registry touches have lapsed (``touch_until``) or it holds no lease at all."""
        sim = self.sim
        node = sim.nodes.get(job.claimed_by or "")
        if node is None or not node.live or node.process != job.process:
            return
        if job.id not in node.holding:
            return
        core, local = node.core, sim.now + node.offset
        if local >= core.touch_until:
            return
        lead = core.leadership
        if lead is not None:
            leased = local < lead.authority_until
        else:
            leased = core.role == FOLLOWER and core.joined and (
                local < core.lease_until or local < core.db_lease_until)
        if leased:
            raise self.violation(
                8, f"job {job.id} (partition {job.partition}, token {job.token}) re-queued "
                f"while its claimer {node.name} still runs it and may claim ({core.role})"
            )

    def check_eviction(
        self, leader: SimNode, member: str, reason: str = "", incarnation: object = None
    ) -> None:
        """Invariant 6: an evicted member's registry row was stale during the last session --
        or, evicted on its link's word (fast suspicion), its process is really gone: a live
        node is never declared dead for a link that closed and came back."""
        sim = self.sim
        if reason == "link_refused":
            now = sim.nodes.get(member)
            # The process behind the name now: an eviction of an older incarnation (a leader
            # that was paused reads its old links' news late) is of a process that is gone.
            current = now.core.incarnation if now is not None else None
            older = (  # incarnations start at registered_seq * 1e6: one block per process
                isinstance(incarnation, int) and current is not None
                and incarnation // 1_000_000 < current // 1_000_000
            )
            if now is not None and not now.crashed and not older:
                raise self.violation(
                    6, f"{leader.name} declared {member} dead on its link, but it is alive"
                )
            return
        timeout = sim.config.session_timeout
        if not sim.referee.stale_during(member, sim.now - timeout, sim.now, timeout):
            raise self.violation(
                6, f"{leader.name} declared {member} dead although its registry row was fresh "
                f"for the whole last {timeout}s"
            )

    def check_write(self, node: SimNode, action: ev.WriteAssignment) -> None:
        """Invariants 3 and 5, on an assignment as its leader hands it to the referee."""
        sim = self.sim
        lead = node.core.leadership
        if lead is None:
            raise self.violation(3, f"{node.name} writes an assignment without leading")
        target, members = lead.target, lead.target_members
        if not balanced(target, members, sim.config.partitions):
            raise self.violation(3, f"target of {node.name} unbalanced over {members}: {target}")
        live = lead.live_members()
        for p, o in action.owners.items():
            if target.get(p) != o or (o is not None and o not in live):
                raise self.violation(3, f"{node.name} writes {p}->{o}, target {target.get(p)}")
            if o is not None and o not in sim.nodes:
                # Invariant 5: partitions go only to nodes that registered with the referee (a
                # forged Join from a phantom never makes a member).
                raise self.violation(5, f"{node.name} writes {p}->{o}, never registered")
            sticky = sim.sticky_owners
            if sticky is not None and sticky.get(p) != o:
                raise self.violation(
                    9, f"{node.name} writes {p}->{o}; its named owner {sticky.get(p)} only "
                    f"restarted"
                )

    def converged(self) -> str | None:
        """``None`` if the cluster is settled (invariant 4), else what is still wrong."""
        sim = self.sim
        live = {n.name: n for n in sim.nodes.values() if n.live and sim.now >= n.paused_until}
        if not live:
            return "no live node"
        leaders = [n for n in live.values() if n.core.role == LEADER]
        if len(leaders) != 1:
            return f"{len(leaders)} leaders"
        lead = leaders[0].core.leadership
        assert lead is not None
        if sim.referee.leader != leaders[0].name or sim.referee.term != leaders[0].core.term:
            return "leader is not the referee's"
        if set(lead.members) != set(live):
            return f"members {sorted(lead.members)} != live {sorted(live)}"
        claimable = {name: n.core.claimable(sim.now + n.offset) for name, n in live.items()}
        counts: Counter[str] = Counter()
        for p in range(sim.config.partitions):
            o = sim.referee.owner[p]
            if o not in live or claimable[o].get(p) != sim.referee.epoch[p]:
                return f"partition {p} not claimable by a live owner (owner {o})"
            counts[o] += 1
        if not balanced(
            {p: sim.referee.owner[p] for p in range(sim.config.partitions)},
            list(live),
            sim.config.partitions,
        ):
            return f"unbalanced: {dict(counts)}"
        return None
