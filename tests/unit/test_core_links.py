"""Fast suspicion, event by event: a peer's link closed and refused, and what the core does.

The driver turns its socket monitor's events into ``LinkChanged``; these tests feed them by
hand (see ringwork/protocol/links.py for the rule, docs/protocol.md "Fast suspicion").
"""

from __future__ import annotations

from ringwork.protocol import events as ev
from ringwork.protocol import messages as m
from ringwork.protocol.core import Core
from ringwork.protocol.referee import TermRecord
from tests.unit.test_core import CFG, _dead, following, leader_with_member, node, of, sent

CONFIRM = CFG.link_confirm


def link(peer: str, change: str) -> ev.LinkChanged:
    return ev.LinkChanged(peer=peer, change=change)


def _down(core: Core, peer: str, t: float, refusals: int = 2) -> list[ev.Action]:
    out = core.handle(t, link(peer, "closed"))
    for i in range(refusals):
        out += core.handle(t + 0.02 * (i + 1), link(peer, "refused"))
    return out


def test_a_member_whose_link_closes_and_stays_refused_is_dead_at_once() -> None:
    core = leader_with_member()
    out = _down(core, "b", 0.1)
    assert _dead(out) == []  # suspected, not yet confirmed
    assert core.next_deadline() <= 0.1 + CONFIRM + 1e-9  # the core asks to look again then
    out = core.handle(0.1 + CONFIRM, ev.Tick())
    assert _dead(out) == ["b"]  # long before session_timeout, its registry row still fresh
    assert "b" not in core.leadership.members  # type: ignore[union-attr]
    notice = next(n for n in of(out, ev.Notice) if n.event == "member_dead")
    assert notice.detail["reason"] == "link_refused"


def test_a_transient_reconnect_or_a_message_resets_the_suspicion() -> None:
    for clear in (link("b", "connected"),
                  ev.MessageReceived(message=m.Heartbeat(
                      sender="b", term=1, incarnation=3, seq=2, sent_at=100.2))):
        core = leader_with_member()
        _down(core, "b", 0.1)
        core.handle(0.12, clear)
        out = core.handle(0.1 + CONFIRM, ev.Tick())
        out += core.handle(1.0, ev.Tick())
        assert _dead(out) == [] and "b" in core.leadership.members  # type: ignore[union-attr]


def test_a_closed_link_that_is_not_refused_is_only_a_suspicion() -> None:
    """A cut or a pause refuses nothing: without refusals, only the session timeout decides."""
    core = leader_with_member()
    out = _down(core, "b", 0.1, refusals=1)
    out += core.handle(1.0, ev.Tick())
    assert _dead(out) == [] and "b" in core.leadership.members  # type: ignore[union-attr]


def test_a_follower_whose_leader_link_is_refused_claims_the_term_at_once() -> None:
    core = following()  # follows L (seq 1); f is next in join order
    out = _down(core, "L", 0.2)
    out += core.handle(0.2 + CONFIRM, ev.Tick())
    polls = of(out, ev.Poll)
    assert polls, "it looks at the referee the moment the suspicion is confirmed"
    rows = (node("L", 1, age=0.3), node("f", 2))  # L's row is still fresh
    out = core.handle(0.21 + CONFIRM, ev.PollResult(
        op_id=polls[-1].op_id, term=TermRecord(term=1, leader="L"), nodes=rows))
    claim = of(out, ev.ClaimLeadership)
    assert claim and claim[0].seen_term == 1
    out = core.handle(0.22 + CONFIRM, ev.LeadershipResult(
        op_id=claim[0].op_id, term=2, nodes=rows, partitions={}))
    lead = core.leadership
    assert lead is not None
    # No takeover wait for the dead leader's authority: its process is gone.
    assert lead.takeover_until is None or lead.takeover_until <= 0.22 + CONFIRM
    assert sent(out, m.Announce) == [] or all(a.term == 2 for a in sent(out, m.Announce))


def test_a_follower_without_refusals_keeps_waiting_for_the_session_timeout() -> None:
    core = following()
    out = core.handle(0.2, link("L", "closed"))
    out += core.handle(0.2 + CONFIRM, ev.Tick())
    assert not core.machine.following.suspicious(0.2 + CONFIRM)
    assert not of(out, ev.ClaimLeadership)




def test_a_named_member_is_never_declared_dead_on_its_link() -> None:
    """Static membership: a named node's partitions wait for its next process, so its link
    closing (a clean stop closes its sockets too) proves nothing the leader may act on."""
    core = leader_with_member()
    named = m.Join(sender="c", term=1, incarnation=5, seq=1, sent_at=1.0, named=1)
    core.handle(0.05, ev.MessageReceived(message=named))
    rows = (node("a", 1), node("b", 2), node("c", 3))
    for t in (0.06, 0.07):
        core.handle(t, ev.Tick())
        for op in [op for op, (kind, _) in core.machine.fx.ops.items() if kind == "Poll"]:
            core.handle(t, ev.PollResult(op_id=op, term=TermRecord(term=1, leader="a"),
                                         nodes=rows))
    assert "c" in core.leadership.members  # type: ignore[union-attr]
    _down(core, "c", 0.1)
    out = core.handle(0.1 + CONFIRM, ev.Tick())
    assert _dead(out) == [] and "c" in core.leadership.members  # type: ignore[union-attr]


def test_a_follower_of_a_named_leader_waits_for_the_session_timeout() -> None:
    core = following()
    ack = m.Ack(sender="L", term=1, incarnation=7, seq=1, sent_at=0.0, authority=2.5,
                version=1, grant=((2, 5),), named=1)
    core.handle(0.05, ev.MessageReceived(message=ack))
    _down(core, "L", 0.2)
    out = core.handle(0.2 + CONFIRM, ev.Tick())
    assert not core.machine.following.suspicious(0.2 + CONFIRM)
    assert not of(out, ev.ClaimLeadership)


def test_a_follower_second_in_line_does_not_usurp_a_live_leader_on_its_own_link() -> None:
    """Only the first in join order acts on its link: a one-way firewall rule that refuses one
    follower the leader's port must not hand that follower the term while the leader lives."""
    core = following()  # follows L (seq 1); f is seq 3 here, with e (seq 2) before it
    out = _down(core, "L", 0.2)
    out += core.handle(0.2 + CONFIRM, ev.Tick())
    polls = of(out, ev.Poll)
    assert polls
    rows = (node("L", 1, age=0.3), node("e", 2), node("f", 3))  # L touches its row: alive
    out = core.handle(0.21 + CONFIRM, ev.PollResult(
        op_id=polls[-1].op_id, term=TermRecord(term=1, leader="L"), nodes=rows))
    for t in (0.5, 1.0, 1.5, 2.0):  # well before L's row could go stale
        out += core.handle(t, ev.Tick())
        for poll in of(out, ev.Poll):
            out += core.handle(t, ev.PollResult(
                op_id=poll.op_id, term=TermRecord(term=1, leader="L"), nodes=rows))
    assert of(out, ev.ClaimLeadership) == []


def test_many_members_down_at_once_is_a_fault_on_our_side_not_a_mass_death() -> None:
    """Every link down together (our firewall reloading, our proxy restarting) looks like every
    peer dying: no verdict is taken from links then; the session timeout decides."""
    core = Core("a", CFG)
    core.handle(0.0, ev.Start())
    out = core.handle(0.0, ev.PollResult(op_id=1, term=TermRecord(term=0, leader=None),
                                         nodes=(node("a", 1),)))
    registered = (node("a", 1), node("b", 2), node("c", 3))
    core.handle(0.0, ev.LeadershipResult(op_id=of(out, ev.ClaimLeadership)[0].op_id, term=1,
                                         nodes=registered, partitions={}))
    for sender, incarnation in (("b", 3), ("c", 4)):
        core.handle(0.0, ev.MessageReceived(message=m.Join(
            sender=sender, term=1, incarnation=incarnation, seq=1, sent_at=100.0)))
    assert {"b", "c"} <= core.leadership.members.keys()  # type: ignore[union-attr]
    out = _down(core, "b", 0.1) + _down(core, "c", 0.1)
    out += core.handle(0.1 + CONFIRM, ev.Tick())
    out += core.handle(1.0, ev.Tick())
    assert _dead(out) == []
    assert {"b", "c"} <= core.leadership.members.keys()  # type: ignore[union-attr]
    # One of them back: the other's link alone is proof again.
    out = core.handle(1.1, link("c", "connected"))
    out += core.handle(1.2, ev.Tick())
    assert _dead(out) == ["b"]
