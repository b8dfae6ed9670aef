"""A deterministic cluster simulator: N real protocol cores, a simulated network, clock and referee.

In the spirit of "Clustering by Consensus" (500 Lines or Less) and FoundationDB's simulation: one
seeded ``random.Random`` drives every delay, drop, duplicate and fault, and a timer heap orders
every step, so a run is a pure function of its seed -- a failing seed replays exactly.

What is simulated: message drop, delay (and so reordering), duplication, symmetric and one-way
partitions; node crash, restart (same name, new process and incarnation), long pause (a zombie
whose timers and inbox wait, then fire all at once with a clock that has moved on); the referee's
latency, slow spells, and failures (before applying, or after applying -- the ambiguous commit);
and the runtime above each core (revoked partitions drain for a while, sometimes past
revoke_timeout). Each node sees its own clock (a random offset), so nothing compares clocks.

Invariants, checked after **every** step (:meth:`Simulation.check`):

1. at most one leader per term: the referee's history has one winner per term, and every core
   that acts as leader of a term is that winner;
2. for each partition, at most one node may claim it at the referee's current epoch, and no node
   believes it may claim a partition at an epoch the referee has moved past: every entry of every
   live core's ``claimable(now)`` equals the referee's (owner, epoch) for that partition;
3. every assignment a leader writes moves partitions only to their place in a target that is
   balanced (floor/ceil) over the members that leader believes alive (checked at each write);
4. liveness (:meth:`Simulation.converged`, checked by the runners once faults stop): exactly one
   leader, every live node a member, every partition claimable by a live node, balanced;
5. partitions are written only to nodes that registered with the referee: a forged message
   (:meth:`Simulation.forge`: any sender, any term) never makes a phantom a member;
6. no member is declared dead unless its registry row was stale (not touched for
   session_timeout, or gone) at some moment in the session_timeout before: heartbeat silence
   alone never evicts a node that still reaches the database (checked at each ``member_dead``);
7. degrade, do not stall: while :attr:`Simulation.keep_partitions` is set -- a scenario that cuts
   only peer links, with the referee reachable and no node joining, leaving or crashing --
   every partition is claimable, at the referee's epoch, by its owner, at every step (a node
   with a live database connection and no peer link keeps its partitions).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ringwork.protocol import events as ev
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.core import FOLLOWER, LEADER, Core
from ringwork.protocol.messages import Codec, Message
from ringwork.protocol.operations import perform
from ringwork.testing.network import Network, NetworkModel
from ringwork.testing.referee import MemoryReferee


class InvariantViolation(AssertionError):
    """An invariant failed; the message names the seed, the step and the replay command."""


@dataclass(frozen=True, kw_only=True)
class RefereeModel:
    """Latency and failures of the simulated database."""

    delay: tuple[float, float] = (0.0005, 0.005)
    slow: float = 0.0  # probability that an operation is slow ...
    slow_delay: tuple[float, float] = (0.2, 2.0)  # ... and by how much
    fail: float = 0.0  # probability that an operation raises DatabaseUnavailable ...
    fail_after_apply: float = 0.5  # ... after applying (writes and claims only)


@dataclass(frozen=True, kw_only=True)
class RuntimeModel:
    """How long the runtime above a core takes to drain a revoked partition."""

    drain: tuple[float, float] = (0.0, 0.3)
    stuck: float = 0.0  # probability that a drain takes stuck_drain instead
    stuck_drain: tuple[float, float] = (5.0, 15.0)


@dataclass(eq=False)
class SimNode:
    name: str
    core: Core
    offset: float  # this node's clock = simulation time + offset
    process: int  # which process (restart count) owns the name now
    crashed: bool = False
    stopped: bool = False  # left cleanly
    paused_until: float = -math.inf
    backlog: list[ev.Event] = field(default_factory=list)
    tick_at: float = math.inf
    db_free: float = 0.0  # referee operations of one node run one after the other
    events: Counter[str] = field(default_factory=Counter)
    checked: object = None  # the ``held`` dict last found consistent with the referee ...
    checked_basis: object = None  # ... and this read of the partitions table (degraded mode)
    checked_writes: int = -1  # ... at this many referee writes

    @property
    def live(self) -> bool:
        return not (self.crashed or self.stopped)


@dataclass(frozen=True)
class Happening:
    """A notable output of a core (notice, partition event, role change), with simulated time."""

    time: float
    node: str
    action: ev.Action


class Simulation:
    """Run real :class:`Core` instances under a seeded fault schedule, checking invariants."""

    def __init__(
        self,
        seed: int,
        *,
        config: ProtocolConfig | None = None,
        network: NetworkModel | None = None,
        referee: RefereeModel | None = None,
        runtime: RuntimeModel | None = None,
        replay: str = "",
        trace: bool = False,
        wire_every: int = 1,
    ) -> None:
        self.seed = seed
        self.config = config or ProtocolConfig(partitions=16)
        self.rng = random.Random(seed)
        self.net = Network(self.rng, network or NetworkModel())
        self.referee_model = referee or RefereeModel()
        self.runtime = runtime or RuntimeModel()
        self.referee = MemoryReferee(self.config.partitions, clock=lambda: self.now)
        self.codec = Codec(self.config.cluster, max_bytes=self.config.max_message_bytes)
        self.replay = replay or f"seed {seed}"
        self.trace = trace
        self.now = 0.0
        self.steps = 0
        self.nodes: dict[str, SimNode] = {}
        self.history: list[Happening] = []
        self.writes = 0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._wire: tuple[object, Any] = (None, None)
        #: Round-trip every n-th message through the codec (1: all; the codec has its own tests).
        self.wire_every = wire_every
        self._sends = 0
        self._recent: deque[tuple[float, str, str, object]] = deque(maxlen=40)
        #: Invariant 6 is checked while this is set (see the module docstring).
        self.keep_partitions = False
        #: Per-node referee latency overrides: one node's database round trips are slow.
        self.db_slow: dict[str, tuple[float, float]] = {}

    # ==================================================================== scheduling and running

    def at(self, time: float, fn: Callable[..., None], *args: Any) -> None:
        """Schedule ``fn(*args)`` at ``time`` (never in the past: time only moves forward)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(time, self.now), self._seq, fn, args))

    def run_until(self, time: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= time:
            t, _, fn, args = heapq.heappop(heap)
            self.now = t
            fn(*args)
            self.steps += 1
            self.check()
        self.now = max(self.now, time)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def _note(self, node: str, what: str, obj: object = None) -> None:
        """Remember a step for the failure report (formatted only when needed: it is hot)."""
        self._recent.append((self.now, node, what, obj))
        if self.trace:
            print(f"[{self.now:9.4f}] {node:>6} {what}{_describe(obj)}")

    # ================================================================================== nodes

    def add_node(self, name: str | None = None, *, start_in: float = 0.0) -> str:
        name = name or f"n{len(self.nodes) + 1}"
        seq = self.referee.register(name, f"sim://{name}")
        previous = self.nodes.get(name)
        node = SimNode(
            name=name,
            core=Core(name, self.config, incarnation=seq * 1_000_000),
            offset=self.rng.uniform(0, 1000),
            process=(previous.process + 1) if previous else 0,
        )
        self.nodes[name] = node
        self.at(self.now + start_in, self._feed, node, node.process, ev.Start())
        self._note(name, f"start (registered_seq {seq})")
        return name

    def start(self, count: int, *, jitter: float = 0.05) -> list[str]:
        return [self.add_node(start_in=self.rng.uniform(0, jitter)) for _ in range(count)]

    def crash(self, name: str) -> None:
        self.nodes[name].crashed = True
        self._note(name, "CRASH")

    def restart(self, name: str) -> None:
        """A new process under the same name: re-registers (new priority, new incarnation)."""
        self.add_node(name)

    def pause(self, name: str, duration: float) -> None:
        node = self.nodes[name]
        node.paused_until = max(node.paused_until, self.now + duration)
        self.at(node.paused_until, self._resume, node, node.process)
        self._note(name, f"PAUSE for {duration:.2f}s")

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        self._feed(node, node.process, ev.LeaveRequested())

    def _resume(self, node: SimNode, process: int) -> None:
        if node.process != process or self.now < node.paused_until or not node.live:
            return
        self._note(node.name, f"RESUME ({len(node.backlog)} queued events)")
        backlog, node.backlog = node.backlog, []
        for event in backlog:
            self.at(self.now, self._feed, node, process, event)
        self._schedule_tick(node)

    def _feed(self, node: SimNode, process: int, event: ev.Event) -> None:
        if node.process != process or not node.live:
            return  # addressed to a process that has died
        if self.now < node.paused_until:
            node.backlog.append(event)
            return
        self._note(node.name, "<- ", event)
        actions = node.core.handle(self.now + node.offset, event)
        self._perform(node, actions)
        self._schedule_tick(node)

    def _schedule_tick(self, node: SimNode) -> None:
        # (+1 ns: local = sim + offset must reach the deadline despite float rounding)
        deadline = max(node.core.next_deadline() - node.offset + 1e-9, self.now)
        if deadline < node.tick_at:
            node.tick_at = deadline
            self.at(deadline, self._tick, node, node.process, deadline)

    def _tick(self, node: SimNode, process: int, when: float) -> None:
        if node.process != process or when != node.tick_at:
            return  # superseded by an earlier deadline
        node.tick_at = math.inf
        self._feed(node, process, ev.Tick())

    # ================================================================================ actions

    def _perform(self, node: SimNode, actions: list[ev.Action]) -> None:
        for action in actions:
            kind = type(action)
            if kind is ev.Send:
                self._send(node.name, action.to, action.message)  # type: ignore[attr-defined]
            elif kind is ev.Broadcast:
                for other in self.nodes:
                    if other != node.name:
                        self._send(node.name, other, action.message)  # type: ignore[attr-defined]
            elif isinstance(action, ev.RefereeAction):
                self._submit(node, action)
            else:
                node.events[kind.__name__] += 1
                self.history.append(Happening(self.now, node.name, action))
                self._note(node.name, "-> ", action)
                if isinstance(action, ev.Revoked):
                    self._drain(node, action.partitions)
                elif kind is ev.Notice and action.event == "member_dead":  # type: ignore[attr-defined]
                    self._check_eviction(node, str(action.detail["node"]))  # type: ignore[attr-defined]
                elif kind is ev.Left:
                    node.stopped = True
                    self.referee.unregister(node.name)

    def _send(self, src: str, dst: str, message: Message) -> None:
        delays = self.net.deliveries(src, dst)
        if delays:
            if message is not self._wire[0]:  # messages round-trip (a broadcast once)
                self._sends += 1
                decoded: Message | None = message
                if self._sends % self.wire_every == 0:
                    decoded = self.codec.decode(self.codec.encode(message))
                    assert decoded == message, (decoded, message)
                self._wire = (message, decoded)
            decoded = self._wire[1]
            for delay in delays:
                self.at(self.now + delay, self._receive, dst, decoded)

    def forge(self, dst: str, message: Message, delay: float = 0.001) -> None:
        """Deliver ``message`` to ``dst`` as if an attacker who can reach its port sent it (any
        sender, any term): what the protocol does with it is checked like everything else."""
        self._note("forger", f"-> {dst} ", message)
        self.at(self.now + delay, self._receive, dst, message)

    def _receive(self, dst: str, message: Message) -> None:
        node = self.nodes.get(dst)
        if node is not None:
            self._feed(node, node.process, ev.MessageReceived(message=message))

    def _drain(self, node: SimNode, partitions: frozenset[int]) -> None:
        rt, rng = self.runtime, self.rng
        lo, hi = rt.stuck_drain if rt.stuck and rng.random() < rt.stuck else rt.drain
        confirm = ev.RevokeConfirmed(partitions=partitions)
        self.at(self.now + rng.uniform(lo, hi), self._feed, node, node.process, confirm)

    def _submit(self, node: SimNode, action: ev.RefereeAction) -> None:
        model, rng = self.referee_model, self.rng
        if isinstance(action, ev.WriteAssignment):
            self._check_write(node, action)
        lo, hi = model.slow_delay if model.slow and rng.random() < model.slow else model.delay
        if node.name in self.db_slow:
            lo, hi = self.db_slow[node.name]
        run_at = max(node.db_free, self.now + rng.uniform(lo, hi))
        node.db_free = run_at
        self.at(run_at, self._execute, node, node.process, action)

    def _execute(self, node: SimNode, process: int, action: ev.RefereeAction) -> None:
        """The operation reaches the database (even if its process has died meanwhile)."""
        model, rng = self.referee_model, self.rng
        result: ev.Event
        if model.fail and rng.random() < model.fail:
            writes = isinstance(action, ev.WriteAssignment | ev.ClaimLeadership)
            if writes and rng.random() < model.fail_after_apply:
                perform(action, node.name, self.referee, self.referee)  # applied, reply lost
            result = ev.RefereeFailed(op_id=action.op_id, error="simulated outage")
        else:
            result = perform(action, node.name, self.referee, self.referee)
        if isinstance(result, ev.AssignResult) and result.epochs is not None:
            self.writes += 1
        self._note(node.name, f"referee {type(action).__name__} -> ", result)
        lo, hi = self.db_slow.get(node.name, model.delay)
        self.at(self.now + rng.uniform(lo, hi), self._feed, node, process, result)

    # ============================================================================= invariants

    def violation(self, number: int, detail: str) -> InvariantViolation:
        recent = "\n".join(f"  [{t:9.4f}] {n:>6} {w}{_describe(o)}" for t, n, w, o in self._recent)
        return InvariantViolation(
            f"invariant {number} violated at step {self.steps} (t={self.now:.4f}s, seed "
            f"{self.seed}): {detail}\n  replay: {self.replay}\n  last events:\n{recent}"
        )

    def check(self) -> None:
        """Invariants 1 and 2, over every live node (paused ones included: they are judged by
        what they would believe if they woke up now).

        Equivalent to comparing every ``claimable(now)`` with the referee at every step, but
        cheap: a node's claimable set is ``held`` while its authority or lease runs, then the part
        of ``held`` its last read of the partitions table confirmed (``db_owned``) while its
        database-derived lease runs, then empty; so it only needs re-checking when ``held`` or
        ``db_owned`` (always replaced, never mutated) or the referee's epochs have changed --
        time alone can only shrink it.
        """
        epoch, owner = self.referee.epoch, self.referee.owner
        winners = self.referee.leaders_by_term
        writes = self.referee.writes
        leading: dict[int, str] = {}
        for node in self.nodes.values():
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
            local = self.now + node.offset
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

        if self.keep_partitions:
            self._check_kept()

    def _check_kept(self) -> None:
        """Invariant 7: every partition claimable by its referee owner at its epoch."""
        claims: dict[str, dict[int, int]] = {}
        for p in range(self.config.partitions):
            o = self.referee.owner[p]
            node = self.nodes.get(o) if o is not None else None
            if o is None or node is None or not node.live:
                raise self.violation(7, f"partition {p} owned by {o}, not a live node")
            if o not in claims:
                claims[o] = node.core.claimable(self.now + node.offset)
            if claims[o].get(p) != self.referee.epoch[p]:
                raise self.violation(
                    7, f"partition {p} not claimable by its owner {o} at epoch "
                    f"{self.referee.epoch[p]} ({node.core.role}, cut from its peers?)"
                )

    def _check_eviction(self, leader: SimNode, member: str) -> None:
        """Invariant 6: an evicted member's registry row was stale during the last session."""
        timeout = self.config.session_timeout
        if not self.referee.stale_during(member, self.now - timeout, self.now, timeout):
            raise self.violation(
                6, f"{leader.name} declared {member} dead although its registry row was fresh "
                f"for the whole last {timeout}s"
            )

    def _check_write(self, node: SimNode, action: ev.WriteAssignment) -> None:
        lead = node.core.leadership
        if lead is None:
            raise self.violation(3, f"{node.name} writes an assignment without leading")
        target, members = lead.target, lead.target_members
        if not balanced(target, members, self.config.partitions):
            raise self.violation(3, f"target of {node.name} unbalanced over {members}: {target}")
        live = lead.live_members()
        for p, o in action.owners.items():
            if target.get(p) != o or (o is not None and o not in live):
                raise self.violation(3, f"{node.name} writes {p}->{o}, target {target.get(p)}")
            if o is not None and o not in self.nodes:
                # Invariant 5: partitions go only to nodes that registered with the referee (a
                # forged Join from a phantom never makes a member).
                raise self.violation(5, f"{node.name} writes {p}->{o}, never registered")

    def converged(self) -> str | None:
        """``None`` if the cluster is settled (invariant 4), else what is still wrong."""
        live = {n.name: n for n in self.nodes.values() if n.live and self.now >= n.paused_until}
        if not live:
            return "no live node"
        leaders = [n for n in live.values() if n.core.role == LEADER]
        if len(leaders) != 1:
            return f"{len(leaders)} leaders"
        lead = leaders[0].core.leadership
        assert lead is not None
        if self.referee.leader != leaders[0].name or self.referee.term != leaders[0].core.term:
            return "leader is not the referee's"
        if set(lead.members) != set(live):
            return f"members {sorted(lead.members)} != live {sorted(live)}"
        claimable = {name: n.core.claimable(self.now + n.offset) for name, n in live.items()}
        counts: Counter[str] = Counter()
        for p in range(self.config.partitions):
            o = self.referee.owner[p]
            if o not in live or claimable[o].get(p) != self.referee.epoch[p]:
                return f"partition {p} not claimable by a live owner (owner {o})"
            counts[o] += 1
        if not balanced(
            {p: self.referee.owner[p] for p in range(self.config.partitions)},
            list(live),
            self.config.partitions,
        ):
            return f"unbalanced: {dict(counts)}"
        return None

    # ============================================================================== queries

    def leader(self) -> str | None:
        """The node acting as leader (a paused one cannot act)."""
        for node in self.nodes.values():
            if node.live and node.core.role == LEADER and self.now >= node.paused_until:
                return node.name
        return None

    def live_names(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.live]

    def happenings(self, kind: type[ev.Action], since: float = 0.0) -> list[Happening]:
        return [h for h in self.history if isinstance(h.action, kind) and h.time >= since]

    def notices(self, event: str, since: float = 0.0) -> list[Happening]:
        return [
            h
            for h in self.history
            if isinstance(h.action, ev.Notice) and h.action.event == event and h.time >= since
        ]


def balanced(assignment: dict[int, str | None], members: list[str], partitions: int) -> bool:
    if not members:
        return all(o is None for o in assignment.values())
    counts = Counter(assignment.values())
    floor, ceil = partitions // len(members), -(-partitions // len(members))
    return set(counts) <= set(members) and all(counts[m] in (floor, ceil) for m in members)


def _describe(obj: object) -> str:
    if obj is None:
        return ""
    if isinstance(obj, ev.MessageReceived):
        return _describe(obj.message)
    name = type(obj).__name__
    if isinstance(obj, ev.Send):
        return f"{_describe(obj.message)} to {obj.to}"
    fields = getattr(obj, "__dataclass_fields__", {})
    parts = [f"{k}={getattr(obj, k)!r}" for k in fields if k not in ("nodes", "partitions")]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) < 160 else text[:157] + "..."
