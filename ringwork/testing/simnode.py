"""The record of one simulated node: its core, its clock offset, and what the simulator tracks
about the process behind its name.

It sits below the run loop, the invariant checks and the database link, which all read it, so
none of them has to import another to know what a node is. Single-threaded, like the whole
simulator.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from ringwork.protocol import events as ev
from ringwork.protocol.core import Core


@dataclass(eq=False)
class SimNode:
    """One name in the cluster and the process currently behind it (a restart replaces ``core``
    and bumps ``process``, so events addressed to the old process are dropped)."""

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
    holding: dict[int, int] = field(default_factory=dict)  # jobs this process runs: id -> token

    @property
    def live(self) -> bool:
        return not (self.crashed or self.stopped)
