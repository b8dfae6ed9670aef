"""What misbehaves around a simulated node apart from the network: its database and its runtime.

A real node reaches the referee over a database connection that can be slow, fail, or fail after
the write went through (the ambiguous commit), and the runtime above its core can take long to
drain a revoked partition. This module holds those models (:class:`RefereeModel`,
:class:`RuntimeModel`) and :class:`RefereeLink`, which carries a core's referee operations to the
in-memory referee under them, so the run loop in :mod:`ringwork.testing.simulator` only
schedules. The network's faults live in :mod:`ringwork.testing.network`; crashes, pauses and
forged messages are verbs of the :class:`~ringwork.testing.simulator.Simulation` itself.

Every draw comes from the simulation's seeded ``random.Random``, in a fixed order, so a run stays
a pure function of its seed. Single-threaded, like the whole simulator.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ringwork.protocol import events as ev
from ringwork.protocol.operations import perform
from ringwork.testing.referee import MemoryReferee
from ringwork.testing.simnode import SimNode


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
    """The runtime above a core: how long it takes to confirm a revoked partition (its claim
    round coming back), and the jobs it claims and runs (fenced by job: they outlive moves)."""

    drain: tuple[float, float] = (0.0, 0.3)
    stuck: float = 0.0  # probability that a drain takes stuck_drain instead
    stuck_drain: tuple[float, float] = (5.0, 15.0)
    #: Every ``work_every`` seconds each claimable partition gets a job with this chance.
    work_every: float = 0.25
    claim_chance: float = 0.2
    job_time: tuple[float, float] = (0.05, 1.5)
    long_job: float = 0.2  # probability that a job runs long_job_time instead
    long_job_time: tuple[float, float] = (4.0, 25.0)

    def drain_time(self, rng: random.Random) -> float:
        lo, hi = self.stuck_drain if self.stuck and rng.random() < self.stuck else self.drain
        return rng.uniform(lo, hi)

    def run_time(self, rng: random.Random) -> float:
        lo, hi = self.long_job_time if rng.random() < self.long_job else self.job_time
        return rng.uniform(lo, hi)


class RefereeLink:
    """Each node's database connection: one operation at a time, with the current
    :class:`RefereeModel` (and per-node ``db_slow`` overrides) deciding delays and failures.

    ``model`` and ``db_slow`` are read at each operation, because scenarios change them in the
    middle of a run (an outage starts, a node's round trips turn slow). The simulation hands in
    its clock, its scheduler, its step log and its way to feed a result to a node's core.
    """

    def __init__(
        self,
        referee: MemoryReferee,
        model: RefereeModel,
        rng: random.Random,
        *,
        clock: Callable[[], float],
        at: Callable[..., None],
        note: Callable[[str, str, object], None],
        deliver: Callable[[SimNode, int, ev.Event], None],
    ) -> None:
        self.referee = referee
        self.model = model
        self.rng = rng
        self.db_slow: dict[str, tuple[float, float]] = {}
        self.writes = 0  # assignments the referee accepted
        self._clock, self._at, self._note, self._deliver = clock, at, note, deliver

    def submit(self, node: SimNode, action: ev.RefereeAction) -> None:
        model, rng = self.model, self.rng
        lo, hi = model.slow_delay if model.slow and rng.random() < model.slow else model.delay
        if node.name in self.db_slow:
            lo, hi = self.db_slow[node.name]
        run_at = max(node.db_free, self._clock() + rng.uniform(lo, hi))
        node.db_free = run_at
        self._at(run_at, self._execute, node, node.process, action)

    def _execute(self, node: SimNode, process: int, action: ev.RefereeAction) -> None:
        """The operation reaches the database (even if its process has died meanwhile)."""
        model, rng, referee = self.model, self.rng, self.referee
        result: ev.Event
        if model.fail and rng.random() < model.fail:
            writes = isinstance(action, ev.WriteAssignment | ev.ClaimLeadership | ev.SweepOrphans)
            if writes and rng.random() < model.fail_after_apply:
                perform(action, node.name, referee, referee)  # applied, reply lost
            result = ev.RefereeFailed(op_id=action.op_id, error="simulated outage")
        else:
            result = perform(action, node.name, referee, referee)
        if isinstance(result, ev.AssignResult) and result.epochs is not None:
            self.writes += 1
        self._note(node.name, f"referee {type(action).__name__} -> ", result)
        lo, hi = self.db_slow.get(node.name, model.delay)
        self._at(self._clock() + rng.uniform(lo, hi), self._deliver, node, process, result)
