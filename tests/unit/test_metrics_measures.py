"""The worker's measurements and the collector's backlog cache, without a worker."""

from __future__ import annotations

from ringwork.errors import DatabaseUnavailable
from ringwork.metrics import BacklogCache
from ringwork.worker.measures import Histograms


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    h = Histograms((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe("t", v)
    snap = h.snapshot()["t"]
    assert snap.buckets == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert snap.count == 5 and abs(snap.sum - 8.65) < 1e-9
    assert h.snapshot().keys() == {"t"}


def test_backlog_is_read_once_per_ttl_and_again_when_ownership_changes() -> None:
    reads: list[list[int]] = []
    now = [100.0]

    def read(parts: list[int]) -> dict[int, tuple[int, float | None]]:
        reads.append(parts)
        return {p: (len(reads), None) for p in parts}

    cache = BacklogCache(read, ttl=1.0, clock=lambda: now[0])
    assert cache.get([2, 1]) == {1: (1, None), 2: (1, None)}
    now[0] += 0.5
    assert cache.get([1, 2]) == {1: (1, None), 2: (1, None)}  # cached
    assert cache.get([1]) == {1: (2, None)}  # another owned set: read at once
    now[0] += 1.0
    assert cache.get([1]) == {1: (3, None)}
    assert reads == [[1, 2], [1], [1]]
    assert cache.get([]) == {}
    assert len(reads) == 3  # nothing owned: no query


def test_backlog_of_an_unreachable_database_is_left_out() -> None:
    def read(parts: list[int]) -> dict[int, tuple[int, float | None]]:
        raise DatabaseUnavailable("connection refused")

    assert BacklogCache(read).get([0]) is None
