"""What a worker measures for ``/metrics``: plain counters and bucket arrays, bumped in place.

The hot paths (a job's start and end, a store call) pay a dict lookup, a ``bisect`` and two
integer additions; nothing here touches the metrics library. :mod:`ringwork.metrics` reads
these at scrape time and turns them into Prometheus families.

Threads: written on the worker's loop only (one writer). The metrics server's thread reads
them through :meth:`Histograms.snapshot` and ``dict(...)`` copies: each copy of a dict or list
of ints and strings is one C call under the GIL, so a scrape sees every value whole (it may mix
two moments, which counters and histograms tolerate).
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Handler run time: a few ms up to an hour.
RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
               300.0, 900.0, 3600.0)
#: Queue wait: from sub-millisecond wake-ups to a day behind.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0, 900.0, 3600.0, 86400.0)
#: Database round trips.
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
              5.0, 10.0)


class Histogram:
    """One label set's buckets (non-cumulative; ``counts[-1]`` is +Inf's own) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, as Prometheus' ``le`` (less or equal) wants.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


@dataclass(frozen=True)
class Snapshot:
    """A histogram as a scrape reads it: cumulative ``(le, count)`` pairs, ending at +Inf."""

    buckets: list[tuple[str, int]]
    count: int
    sum: float


class Histograms:
    """Histograms by one label's value (a task, a store call)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.by: dict[str, Histogram] = {}

    def observe(self, label: str, value: float) -> None:
        h = self.by.get(label)
        if h is None:
            h = self.by[label] = Histogram(self.bounds)
        h.observe(value)

    def snapshot(self) -> dict[str, Snapshot]:
        """On any thread: a consistent-enough copy for one scrape."""
        out: dict[str, Snapshot] = {}
        for label, h in list(self.by.items()):
            counts, total = list(h.counts), h.sum
            running, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            out[label] = Snapshot(buckets, running, total)
        return out


@dataclass
class Measures:
    """Everything a worker measures beyond :class:`~ringwork.worker.ledger.Stats`' totals."""

    #: Handler run time by task: from the handler's start to its end (or the attempt's end by
    #: timeout or cancel, if earlier).
    run: Histograms = field(default_factory=lambda: Histograms(RUN_BUCKETS))
    #: Queue wait by task (:attr:`ringwork.Job.waited`).
    wait: Histograms = field(default_factory=lambda: Histograms(WAIT_BUCKETS))
    #: Store round trips by call (``claim``, ``complete``, ``fail``...), as the loop waits them.
    db: Histograms = field(default_factory=lambda: Histograms(DB_BUCKETS))
    #: Attempts by ``(task, outcome)``: succeeded, retried, dead, cancelled, fenced, abandoned.
    outcomes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    #: Partition events by kind (assigned, revoked, lost), and the partitions they named.
    rebalances: collections.Counter[str] = field(default_factory=collections.Counter)
    rebalanced_partitions: collections.Counter[str] = field(
        default_factory=collections.Counter)
