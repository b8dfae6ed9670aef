"""The dashboard's pure parts: percentiles, sparklines, owner colours, the rebalance feed,
the jobs filter's parsing, basic auth's check. No web server, no database."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from ringwork.dashboard.auth import check
from ringwork.dashboard.data import owner_colours, percentile, sparkline
from ringwork.dashboard.live import Moves
from ringwork.dashboard.pages import age
from ringwork.dashboard.routes import job_filter


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_sparkline_is_inline_svg_of_every_value() -> None:
    svg = sparkline([0, 2, 4])
    assert svg.startswith("<svg") and svg.count(",") >= 3 and "0, 2, 4" in svg
    assert "<polyline" in sparkline([])


def test_a_survivor_keeps_its_colour_when_another_node_dies() -> None:
    before = owner_colours(["a", "b", "c"], ["a", "b", "c", "a"])
    after = owner_colours(["a", "b", "c"], ["a", "c", "c", "a"])
    assert after == {"a": before["a"], "c": before["c"]}
    assert set(owner_colours([], ["x", None])) == {"x"}


def test_the_feed_groups_moves_between_two_reads() -> None:
    moves = Moves()
    assert moves.observe({0: ("a", 1), 1: ("b", 1), 2: ("b", 1)}) is None  # the first read
    assert moves.observe({0: ("a", 1), 1: ("b", 1), 2: ("b", 1)}) is None  # no change
    seen = moves.observe({0: ("a", 1), 1: ("a", 2), 2: ("c", 2)}, term=4, now=lambda: 10.0)
    assert seen is not None and seen.moved == 2 and seen.term == 4
    assert {(m.source, m.target, m.partitions) for m in seen.moves} == {
        ("b", "a", (1,)), ("b", "c", (2,))}
    assert moves.feed() == [seen]


def test_job_filter_parsing() -> None:
    f = job_filter({"state": "dead", "partition": "3", "since": "15m", "key": "k"})
    assert (f.state, f.partition, f.within, f.key, f.task) == ("dead", 3, 900.0, "k", None)
    for bad, word in [({"state": "asleep"}, "unknown job state"),
                      ({"partition": "x"}, "partition must be a number"),
                      ({"since": "soon"}, "since must be a duration"),
                      ({"since": "99999999999w"}, "at most 100 years")]:
        with pytest.raises(ValueError, match=word):
            job_filter(bad)


def test_basic_auth_check() -> None:
    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert check(header("ops:pw"), "ops", "pw") is None
    assert check(header("ops:pw:with:colons"), "ops", "pw:with:colons") is None
    assert check(header("ops:nope"), "ops", "pw") is not None
    assert check(header("ops"), "ops", "pw") is not None
    assert check("Bearer x", "ops", "pw") is not None
    assert check(None, "ops", "pw") is not None


def test_ages_read_as_people_say_them() -> None:
    assert age(None) == "—"
    assert age(0.005) == "5 ms"
    assert age(2.44) == "2.4s"
    assert age(185) == "3m 05s"
    assert age(2 * 86400 + 3600) == "2d 1h"


def test_the_stream_sends_changes_only_and_survives_a_failed_read() -> None:
    import asyncio

    from ringwork.dashboard.live import stream
    from ringwork.errors import DatabaseUnavailable

    reads: list[Any] = [
        {"owners": {"0": ["a", 1]}, "term": 1},
        {"owners": {"0": ["a", 1]}, "term": 1},  # unchanged: not sent
        DatabaseUnavailable("connection refused\nmore detail"),
        {"owners": {"0": ["b", 2]}, "term": 1},
    ]

    def read() -> dict[str, Any]:
        item = reads.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def never() -> bool:
        return False

    moves = Moves()

    async def collect() -> list[str]:
        return [frame async for frame in stream(read, moves, 0.0, 2, never)]

    frames = asyncio.run(collect())
    assert [f.split("\n")[0] for f in frames] == [
        'data: {"owners": {"0": ["a", 1]}, "term": 1}',
        "event: error",
        'data: {"owners": {"0": ["b", 2]}, "term": 1}',
    ]
    assert '"connection refused"' in frames[1]
    assert [m.target for r in moves.feed() for m in r.moves] == ["b"]
