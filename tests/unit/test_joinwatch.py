"""When a node that cannot join complains, and what it says."""

from __future__ import annotations

from ringwork.node.joinwatch import ALARM_AFTER, ALARM_EVERY, JoinWatch, Link, reason


def test_alarm_after_a_few_session_timeouts_then_repeated_then_joined() -> None:
    watch = JoinWatch(session_timeout=2.0)
    assert watch.update(0.0, False, 0.0) is None
    assert watch.update(ALARM_AFTER * 2.0 - 0.1, False, 0.0) is None
    assert watch.update(ALARM_AFTER * 2.0, False, 0.0) == "alarm"
    assert watch.update(ALARM_AFTER * 2.0 + 1, False, 0.0) is None
    again = ALARM_AFTER * 2.0 + ALARM_EVERY * 2.0
    assert watch.update(again, False, 0.0) == "alarm"
    assert watch.update(again + 1, True, None) == "joined"
    assert watch.update(again + 2, True, None) is None
    assert watch.update(again + 3, False, again + 3) is None  # lost membership: a fresh wait
    assert watch.update(again + 3 + ALARM_AFTER * 2.0, False, again + 3) == "alarm"


def test_a_quick_join_never_alarms() -> None:
    watch = JoinWatch(session_timeout=3.0)
    assert watch.update(0.0, False, 0.0) is None
    assert watch.update(1.0, True, None) is None
    assert watch.update(100.0, True, None) is None


def test_reasons() -> None:
    assert "no live leader" in reason(None, None)
    link = Link("tcp://10.0.0.1:7000")
    assert reason("L", link) == "no answer from the leader at tcp://10.0.0.1:7000"
    link.retrying()
    assert "cannot connect to the leader at tcp://10.0.0.1:7000" in reason("L", link)
    link.connection_made()
    link.handshake_failed("CURVE handshake failed (key mismatch?)")
    assert reason("L", link) == "CURVE handshake failed (key mismatch?) with tcp://10.0.0.1:7000"
    link.handshake_succeeded()
    assert reason("L", link).startswith("no answer")
