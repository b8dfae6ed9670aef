"""The core tells its driver whether it is a member and since when it has been trying to be."""

from __future__ import annotations

from ringwork.protocol import events as ev
from ringwork.protocol import messages as m
from ringwork.protocol.core import Core
from ringwork.protocol.referee import TermRecord
from tests.unit.test_core import CFG, following, node, of


def test_a_follower_is_joining_from_start_until_acknowledged() -> None:
    core = Core("f", CFG, incarnation=7)
    core.handle(5.0, ev.Start())
    assert core.view()["joined"] is False and core.view()["joining_since"] == 5.0
    core.handle(6.0, ev.PollResult(op_id=1, term=TermRecord(term=1, leader="L"),
                                   nodes=(node("L", 1), node("f", 2))))
    core.handle(9.0, ev.Tick())  # Joins unanswered: still trying since the start
    assert core.view()["joining_since"] == 5.0 and not core.is_member()

    joined = following(now=10.0)
    assert joined.view()["joined"] is True and joined.view()["joining_since"] is None


def test_a_rejoin_starts_the_clock_again() -> None:
    core = following(now=0.0)
    core.handle(4.0, ev.MessageReceived(message=m.Rejoin(sender="L", term=1, incarnation=7)))
    assert not core.is_member() and core.joining_since == 4.0


def test_a_leader_is_a_member() -> None:
    core = Core("a", CFG)
    core.handle(0.0, ev.Start())
    out = core.handle(0.0, ev.PollResult(op_id=1, term=TermRecord(term=0, leader=None),
                                         nodes=(node("a", 1),)))
    claim = of(out, ev.ClaimLeadership)[0]
    core.handle(0.1, ev.LeadershipResult(op_id=claim.op_id, term=1, partitions={}, nodes=()))
    assert core.is_member() and core.view()["joined"] is True
    assert core.joining_since is None
