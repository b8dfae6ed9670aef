"""A deterministic cluster simulator: N real protocol cores, a simulated network, clock and referee.

In the spirit of "Clustering by Consensus" (500 Lines or Less) and FoundationDB's simulation: one
seeded ``random.Random`` drives every delay, drop, duplicate and fault, and a timer heap orders
every step, so a run is a pure function of its seed -- a failing seed replays exactly.

What is simulated: message drop, delay (and so reordering), duplication, symmetric and one-way
partitions (:mod:`tests.sim.network`); node crash, restart (same name, new process and
incarnation), long pause (a zombie whose timers and inbox wait, then fire all at once with a clock
that has moved on) and forged messages (here); the referee's latency, slow spells, and failures
(before applying, or after applying -- the ambiguous commit), and the runtime above each core
(revoked partitions drain for a while, sometimes past revoke_timeout) (:mod:`.faults`). Each node
sees its own clock (a random offset), so nothing compares clocks.

This module is the run loop: the timer heap, the nodes, and carrying each core's actions out.
The rules every step is held to are in :mod:`tests.sim.invariants` (checked after
**every** step), the step log for failure reports and ``--trace`` in :mod:`.steplog`. Everything
runs on the caller's thread; nothing here is shared between threads.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringwork.protocol import events as ev
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.core import LEADER, Core
from ringwork.protocol.messages import Codec, Message
from tests.sim.faults import RefereeLink, RefereeModel, RuntimeModel
from tests.sim.invariants import Invariants, InvariantViolation
from tests.sim.network import Network, NetworkModel
from tests.sim.referee import MemoryReferee
from tests.sim.simnode import SimNode
from tests.sim.steplog import StepLog


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
        self.runtime = runtime or RuntimeModel()
        self.referee = MemoryReferee(self.config.partitions, clock=lambda: self.now)
        self.codec = Codec(self.config.cluster, max_bytes=self.config.max_message_bytes)
        self.replay = replay or f"seed {seed}"
        self.now = 0.0
        self.steps = 0
        self.nodes: dict[str, SimNode] = {}
        self.history: list[Happening] = []
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self._wire: tuple[object, Any] = (None, None)
        #: Round-trip every n-th message through the codec (1: all; the codec has its own tests).
        self.wire_every = wire_every
        self._sends = 0
        self.log = StepLog(trace=trace)
        #: Invariant 7 is checked while this is set (see :mod:`tests.sim.invariants`).
        self.keep_partitions = False
        #: Invariant 8 is checked while this is set: partition -> the named owner it must stay
        #: with (see :mod:`tests.sim.invariants`).
        self.sticky_owners: dict[int, str] | None = None
        #: Kills so far, and how long each failover the ``kill`` family checked took.
        self.kills = 0
        self.failovers: list[float] = []
        self._flapping: dict[tuple[str, str], float] = {}  # link -> when its flap ends
        #: Names whose processes are named nodes (``--node-name``: static membership).
        self.named: set[str] = set()
        self.invariants = Invariants(self)
        self.referee.jobs.on_requeue = self.invariants.check_requeue
        self._link = RefereeLink(
            self.referee,
            referee or RefereeModel(),
            self.rng,
            clock=lambda: self.now,
            at=self.at,
            note=self._note,
            deliver=self._feed,
        )

    # ==================================================================== scheduling and running

    def at(self, time: float, fn: Callable[..., None], *args: Any) -> None:
        """Schedule ``fn(*args)`` at ``time`` (never in the past: time only moves forward)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(time, self.now), self._seq, fn, args))

    def run_until(self, time: float) -> None:
        heap, check = self._heap, self.invariants.check
        while heap and heap[0][0] <= time:
            t, _, fn, args = heapq.heappop(heap)
            self.now = t
            fn(*args)
            self.steps += 1
            check()  # after every step
        self.now = max(self.now, time)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def _note(self, node: str, what: str, obj: object = None) -> None:
        """Remember a step for the failure report (formatted only when needed: it is hot)."""
        self.log.note(self.now, node, what, obj)

    # ================================================================================== nodes

    def add_node(self, name: str | None = None, *, start_in: float = 0.0) -> str:
        name = name or f"n{len(self.nodes) + 1}"
        seq = self.referee.register(name, f"sim://{name}")
        previous = self.nodes.get(name)
        node = SimNode(
            name=name,
            core=Core(name, self.config, incarnation=seq * 1_000_000, named=name in self.named),
            offset=self.rng.uniform(0, 1000),
            process=(previous.process + 1) if previous else 0,
        )
        self.nodes[name] = node
        if previous is not None:  # peers' reconnects to the name succeed again
            for other in list(self.nodes.values()):
                if other is not node and other.live:
                    self.at(self.now + start_in + 0.001, self._link_event, other, other.process,
                            name, "connected")
        self.at(self.now + start_in, self._feed, node, node.process, ev.Start())
        self.at(self.now + start_in + self.runtime.work_every, self._work, node, node.process)
        self._note(name, f"start (registered_seq {seq})")
        return name

    def start(self, count: int, *, jitter: float = 0.05) -> list[str]:
        return [self.add_node(start_in=self.rng.uniform(0, jitter)) for _ in range(count)]

    def crash(self, name: str) -> None:
        """The process is gone without a word on the wire: a machine lost, a cable cut (no
        peer hears a connection close; only the session timeout finds out)."""
        self.nodes[name].crashed = True
        self._note(name, "CRASH")

    def kill(self, name: str) -> None:
        """``kill -9`` on a host that stays up: the kernel closes the process's connections at
        once and refuses every reconnect (a growing interval, as ZeroMQ's backoff) until a new
        process listens under that name; every peer's driver reports it (``LinkChanged``)."""
        node = self.nodes[name]
        node.crashed = True
        self._note(name, "KILL (links close, reconnects refused)")
        for other in list(self.nodes.values()):
            if other is not node and other.live:
                delay = self.rng.uniform(0.0002, 0.005)
                self.at(self.now + delay, self._link_event, other, other.process, name, "closed")
                self.at(self.now + delay + 0.02, self._refuse, other, other.process, node,
                        node.process, 0.02)

    def flap(self, at: str, peer: str, down_for: float, refusals: int = 0) -> None:
        """``at``'s connection to a live ``peer`` drops (a reset, ``ss -K``) and comes back
        after ``down_for``, with ``refusals`` failed reconnects in between (a live listener
        refuses none; 1 stands for a race): a false suspicion the protocol must shrug off."""
        node = self.nodes[at]
        if self.now < self._flapping.get((at, peer), -math.inf):
            return  # one drop at a time per link: two overlapping would refuse twice
        self._flapping[(at, peer)] = self.now + down_for
        self._note(at, f"LINK FLAP to {peer} for {down_for:.3f}s ({refusals} refused)")
        self.at(self.now, self._link_event, node, node.process, peer, "closed")
        for i in range(refusals):
            when = self.now + down_for * (i + 1) / (refusals + 1)
            self.at(when, self._link_event, node, node.process, peer, "refused")
        self.at(self.now + down_for, self._link_event, node, node.process, peer, "connected")

    def _link_event(self, node: SimNode, process: int, peer: str, change: str) -> None:
        self._feed(node, process, ev.LinkChanged(peer=peer, change=change))

    def _refuse(self, at: SimNode, process: int, dead: SimNode, dead_process: int,
                interval: float) -> None:
        """One refused reconnect from ``at`` to the killed ``dead``, while it stays dead."""
        if at.process != process or not at.live or self.nodes.get(dead.name) is not dead:
            return  # the name has a new process now: its reconnects succeed
        if not dead.crashed or dead.process != dead_process:
            return
        self._link_event(at, process, dead.name, "refused")
        nxt = min(interval * 2, 1.0)
        self.at(self.now + nxt, self._refuse, at, process, dead, dead_process, nxt)

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
                if isinstance(action, ev.WriteAssignment):
                    self.invariants.check_write(node, action)
                self._link.submit(node, action)
            else:
                node.events[kind.__name__] += 1
                self.history.append(Happening(self.now, node.name, action))
                self._note(node.name, "-> ", action)
                if isinstance(action, ev.Revoked):
                    self._drain(node, action.partitions)
                elif kind is ev.Notice and action.event == "member_dead":  # type: ignore[attr-defined]
                    detail = action.detail  # type: ignore[attr-defined]
                    self.invariants.check_eviction(node, str(detail["node"]),
                                                   str(detail.get("reason", "")),
                                                   detail.get("incarnation"))
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

    # ================================================================================ jobs

    def _work(self, node: SimNode, process: int) -> None:
        """The runtime claims a job now and then from each partition it may claim."""
        if node.process != process or not node.live:
            return
        self.at(self.now + self.runtime.work_every, self._work, node, process)
        if self.now < node.paused_until:
            return
        rng, jobs = self.rng, self.referee.jobs
        for p, epoch in sorted(node.core.claimable(self.now + node.offset).items()):
            if rng.random() >= self.runtime.claim_chance:
                continue
            job = jobs.claim(node.name, process, p, epoch)
            node.holding[job.id] = epoch
            self.at(self.now + self.runtime.run_time(rng), self._finish, node, process, job.id,
                    epoch)

    def _finish(self, node: SimNode, process: int, job_id: int, token: int) -> None:
        """A handler returned: write its outcome under its claim (a paused process writes
        when it wakes up; a dead one never does)."""
        if node.process != process or not node.live:
            return
        if self.now < node.paused_until:
            self.at(node.paused_until, self._finish, node, process, job_id, token)
            return
        if node.holding.get(job_id) == token:
            del node.holding[job_id]
        if not self.referee.jobs.finish(node.name, process, job_id, token):
            node.events["job_fenced"] += 1
            self._note(node.name, f"job {job_id} fenced")

    def _drain(self, node: SimNode, partitions: frozenset[int]) -> None:
        confirm = ev.RevokeConfirmed(partitions=partitions)
        delay = self.runtime.drain_time(self.rng)
        self.at(self.now + delay, self._feed, node, node.process, confirm)

    # ============================================================= the database, the invariants

    @property
    def referee_model(self) -> RefereeModel:
        """How the database behaves now; assign a new model to start or end an outage."""
        return self._link.model

    @referee_model.setter
    def referee_model(self, model: RefereeModel) -> None:
        self._link.model = model

    @property
    def db_slow(self) -> dict[str, tuple[float, float]]:
        """Per-node referee latency overrides (mutable): one node's round trips are slow."""
        return self._link.db_slow

    @property
    def writes(self) -> int:
        """Assignments the referee accepted (their reply may still have been lost)."""
        return self._link.writes

    def violation(self, number: int, detail: str) -> InvariantViolation:
        """The report for a broken invariant ``number``: seed, step, replay, the last steps."""
        return self.invariants.violation(number, detail)

    def converged(self) -> str | None:
        """``None`` if the cluster is settled (invariant 4), else what is still wrong."""
        return self.invariants.converged()

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

