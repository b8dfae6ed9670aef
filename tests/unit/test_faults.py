"""Failures from peers' input: every one counted, but the log rate-limited per reason."""

from __future__ import annotations

import logging

import pytest

from ringwork.faults import FaultLog, reason_of


def test_counts_everything_but_logs_each_reason_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    faults = FaultLog("peer_input_failed", "n1", interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="ringwork"):
        for _ in range(1000):
            faults.record("router:ValueError", ValueError("x" * 1000))
        faults.record("sub:KeyError", KeyError("k"))
        now[0] = 10.5
        faults.record("router:ValueError", ValueError("again"))
    lines = [r.getMessage() for r in caplog.records]
    assert faults.counts == {"router:ValueError": 1001, "sub:KeyError": 1}
    assert len(lines) == 3, lines
    assert "not_logged" not in lines[0] and len(lines[0]) < 400  # the error text is cut short
    assert "not_logged=999" in lines[2] and "total=1001" in lines[2]


def test_reason_names_the_place_and_the_type() -> None:
    assert reason_of("router", UnicodeEncodeError("utf-8", "x", 0, 1, "no")) == (
        "router:UnicodeEncodeError"
    )
