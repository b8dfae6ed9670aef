"""The simulated network: per-message drop, delay (hence reordering), duplication, and partitions.

All randomness comes from the simulation's seeded ``random.Random``, so a run is a pure function
of its seed. Links are directed: blocking ``a -> b`` alone is a one-way partition.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class NetworkModel:
    """Fault rates of the simulated network (all delays in seconds)."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.0002, 0.005)
    #: Probability and range of a delay spike (a message overtaken by later ones).
    spike: float = 0.0
    spike_delay: tuple[float, float] = (0.05, 0.8)

    def quiet(self) -> NetworkModel:
        """The same latencies without faults: what "the network heals" leaves behind."""
        return NetworkModel(delay=self.delay)


class Network:
    def __init__(self, rng: random.Random, model: NetworkModel) -> None:
        self.rng = rng
        self.model = model
        self.blocked: set[tuple[str, str]] = set()
        self.sent = 0
        self.dropped = 0

    def deliveries(self, src: str, dst: str) -> list[float]:
        """Delays after which copies of one message from ``src`` arrive at ``dst`` (maybe none)."""
        self.sent += 1
        m, rng = self.model, self.rng
        if (src, dst) in self.blocked or (m.drop and rng.random() < m.drop):
            self.dropped += 1
            return []
        copies = 2 if m.duplicate and rng.random() < m.duplicate else 1
        delays = []
        for _ in range(copies):
            lo, hi = m.spike_delay if m.spike and rng.random() < m.spike else m.delay
            delays.append(rng.uniform(lo, hi))
        return delays

    def split(self, *groups: Iterable[str]) -> None:
        """Symmetric partition: no message crosses between different groups."""
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self.blocked.add((x, y))
                        self.blocked.add((y, x))

    def block(self, src: str, dst: str) -> None:
        """One-way partition: ``src`` can no longer reach ``dst`` (the reverse still works)."""
        self.blocked.add((src, dst))

    def isolate(self, node: str, others: Iterable[str]) -> None:
        self.split([node], [o for o in others if o != node])

    def heal(self) -> None:
        self.blocked.clear()
