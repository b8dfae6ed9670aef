"""The protocol core, event by event, without the simulator: what a driver sees."""

from __future__ import annotations

import math

import pytest

from ringwork.errors import ConfigurationError, DatabaseUnavailable
from ringwork.protocol import events as ev
from ringwork.protocol import messages as m
from ringwork.protocol.config import ProtocolConfig
from ringwork.protocol.core import FOLLOWER, LEADER, Core
from ringwork.protocol.operations import perform
from ringwork.protocol.referee import NodeRecord, Ownership, TermRecord
from tests.sim.referee import MemoryReferee

CFG = ProtocolConfig(partitions=4)


def of(actions: list[ev.Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def sent(actions: list[ev.Action], kind: type) -> list:
    return [a.message for a in of(actions, ev.Send) if isinstance(a.message, kind)]


def node(name: str, seq: int, age: float = 0.0) -> NodeRecord:
    return NodeRecord(node_id=name, endpoint=f"tcp://{name}", registered_seq=seq, age=age)


def following(now: float = 0.0) -> Core:
    """A follower of leader "L" in term 1, joined, holding partition 2 at epoch 5."""
    core = Core("f", CFG, incarnation=7)
    core.handle(now, ev.Start())
    out = core.handle(
        now,
        ev.PollResult(
            op_id=1, term=TermRecord(term=1, leader="L"), nodes=(node("L", 1), node("f", 2))
        ),
    )
    join = sent(out, m.Join)[0]
    core.handle(
        now,
        ev.MessageReceived(
            message=m.Ack(
                sender="L",
                term=1,
                incarnation=7,
                seq=join.seq,
                sent_at=join.sent_at,
                authority=2.5,
                version=1,
                grant=((2, 5),),
            )
        ),
    )
    return core


def test_start_polls_the_referee_and_nothing_happens_before_start() -> None:
    core = Core("a", CFG)
    assert core.handle(0.0, ev.Tick()) == []
    assert of(core.handle(0.0, ev.Start()), ev.Poll)


def test_the_first_in_join_order_claims_an_empty_term() -> None:
    core = Core("a", CFG)
    core.handle(0.0, ev.Start())
    out = core.handle(
        0.0,
        ev.PollResult(
            op_id=1, term=TermRecord(term=0, leader=None), nodes=(node("a", 1), node("b", 2))
        ),
    )
    assert of(out, ev.ClaimLeadership)[0].seen_term == 0
    # ... and the second waits one election_backoff before trying.
    other = Core("b", CFG)
    other.handle(0.0, ev.Start())
    out = other.handle(
        0.0,
        ev.PollResult(
            op_id=1, term=TermRecord(term=0, leader=None), nodes=(node("a", 1), node("b", 2))
        ),
    )
    assert not of(out, ev.ClaimLeadership)


def test_winning_announces_and_the_first_rebalance_writes_after_the_debounce() -> None:
    core = Core("a", CFG)
    core.handle(0.0, ev.Start())
    out = core.handle(
        0.0,
        ev.PollResult(
            op_id=1, term=TermRecord(term=0, leader=None), nodes=(node("a", 1), node("b", 2))
        ),
    )
    claim = of(out, ev.ClaimLeadership)[0]
    out = core.handle(
        0.01,
        ev.LeadershipResult(
            op_id=claim.op_id, term=1, nodes=(node("a", 1), node("b", 2)), partitions={}
        ),
    )
    assert core.role == LEADER and of(out, ev.RoleChanged)[0].role == LEADER
    assert [a.to for a in of(out, ev.Send)] == ["b"] and sent(out, m.Announce)
    assert not of(out, ev.WriteAssignment)
    out = core.handle(0.01 + CFG.join_debounce, ev.Tick())
    write = of(out, ev.WriteAssignment)[0]
    assert write.owners == {0: "a", 1: "a", 2: "a", 3: "a"} and write.term == 1
    out = core.handle(0.52, ev.AssignResult(op_id=write.op_id, epochs={p: 1 for p in range(4)}))
    assert of(out, ev.Assigned)[0].partitions == {0: 1, 1: 1, 2: 1, 3: 1}
    assert core.claimable(0.6) == {0: 1, 1: 1, 2: 1, 3: 1}
    # Its authority runs leader_lease from the claim; without a confirming poll it lapses.
    assert core.claimable(0.0 + CFG.leader_lease) == {}


def _genesis_leader(registered: tuple[NodeRecord, ...]) -> tuple[Core, int | None]:
    """Leader "a" of a brand-new cluster; returns it and its formation poll's op id, if any
    (there is one when no other live node is registered: it alone has joined)."""
    core = Core("a", CFG)
    core.handle(0.0, ev.Start())
    out = core.handle(0.0, ev.PollResult(op_id=1, term=TermRecord(term=0, leader=None),
                                         nodes=registered))
    claim = of(out, ev.ClaimLeadership)[0]
    out = core.handle(0.01, ev.LeadershipResult(op_id=claim.op_id, term=1, nodes=registered,
                                                partitions={}))
    polls = of(out, ev.Poll)
    return core, polls[0].op_id if polls else None


def join(sender: str, incarnation: int) -> ev.MessageReceived:
    return ev.MessageReceived(
        message=m.Join(sender=sender, term=1, incarnation=incarnation, seq=1, sent_at=0.0)
    )


def test_genesis_balances_once_a_fresh_poll_shows_every_live_node_joined() -> None:
    registered = (node("a", 1), node("b", 2))
    core, formation_poll = _genesis_leader(registered)
    assert formation_poll is None  # b is registered and has not joined: nothing to confirm
    out = core.handle(0.02, join("b", 2))
    confirm = of(out, ev.Poll)[0]  # everyone known has joined: confirm with a fresh poll
    out = core.handle(0.03, ev.PollResult(op_id=confirm.op_id, term=TermRecord(term=1, leader="a"),
                                          nodes=registered))
    write = of(out, ev.WriteAssignment)[0]  # well before join_debounce
    assert sorted(set(write.owners.values())) == ["a", "b"]


def test_genesis_looks_again_when_a_join_arrives_while_its_poll_is_out() -> None:
    core, formation_poll = _genesis_leader((node("a", 1),))
    assert formation_poll is not None
    core.handle(0.02, join("b", 2))  # b registered and joined after that poll was sent
    out = core.handle(0.03, ev.PollResult(op_id=formation_poll, term=TermRecord(term=1, leader="a"),
                                          nodes=(node("a", 1), node("b", 2))))
    assert not of(out, ev.WriteAssignment)
    confirm = of(out, ev.Poll)[0]
    out = core.handle(0.04, ev.PollResult(op_id=confirm.op_id, term=TermRecord(term=1, leader="a"),
                                          nodes=(node("a", 1), node("b", 2))))
    assert sorted(set(of(out, ev.WriteAssignment)[0].owners.values())) == ["a", "b"]


def test_genesis_waits_for_a_node_the_registry_shows_starting() -> None:
    core, formation_poll = _genesis_leader((node("a", 1),))
    starting = (node("a", 1), node("c", 2))  # c registered after the election poll
    out = core.handle(0.02, ev.PollResult(op_id=formation_poll, term=TermRecord(term=1, leader="a"),
                                          nodes=starting))
    assert not of(out, ev.WriteAssignment) and not of(out, ev.Poll)
    out = core.handle(0.05, join("c", 2))
    confirm = of(out, ev.Poll)[0]
    out = core.handle(0.06, ev.PollResult(op_id=confirm.op_id, term=TermRecord(term=1, leader="a"),
                                          nodes=starting))
    write = of(out, ev.WriteAssignment)[0]
    assert sorted(set(write.owners.values())) == ["a", "c"]


def test_genesis_falls_back_to_the_debounce_for_a_node_that_never_joins() -> None:
    core, formation_poll = _genesis_leader((node("a", 1), node("z", 2)))
    assert formation_poll is None
    assert not of(core.handle(0.4, ev.Tick()), ev.WriteAssignment)
    write = of(core.handle(0.01 + CFG.join_debounce, ev.Tick()), ev.WriteAssignment)[0]
    assert set(write.owners.values()) == {"a"}


def test_a_follower_lease_runs_from_the_send_time_of_the_acknowledged_heartbeat() -> None:
    core = following(now=10.0)
    assert core.claimable(10.0) == {2: 5}
    expected = 10.0 + min(CFG.session_timeout, 2.5) - CFG.lease_margin
    assert core.lease_until == pytest.approx(expected)
    assert core.claimable(expected - 0.001) == {2: 5}
    assert core.claimable(expected) == {}  # self-fenced: nothing, however sure it feels


def _poll(core: Core, issued: float, answered: float, owner: str = "f", epoch: int = 5,
          leader_age: float = 0.2) -> None:
    """Let ``core`` issue a poll at ``issued`` and answer it at ``answered``."""
    core.next_poll = issued
    out = core.handle(issued, ev.Tick())
    polls = of(out, ev.Poll)
    assert polls and polls[0].partitions  # a follower's poll reads the partitions table
    core.handle(
        answered,
        ev.PollResult(
            op_id=polls[0].op_id,
            term=TermRecord(term=1, leader="L"),
            nodes=(node("L", 1, age=leader_age), node("f", 2)),
            partitions={2: Ownership(2, owner, epoch)},
        ),
    )


def test_cut_off_from_acks_a_follower_keeps_claiming_on_a_lease_from_its_own_touches() -> None:
    core = following()  # its lease from the Ack runs until 2.0
    _poll(core, 1.5, 1.51)  # its registry touch issued at 1.5 succeeded: degraded lease to 4.0
    assert core.claimable(1.9) == {2: 5} and not core.degraded
    _poll(core, 2.5, 2.51)
    assert core.degraded and core.claimable(2.6) == {2: 5} and core.claim_deadline() == 5.0
    _poll(core, 3.5, 3.52)  # renewed while it runs
    assert core.claimable(5.9) == {2: 5} and core.claimable(6.0) == {}


def test_a_degraded_follower_claims_only_what_the_partitions_table_confirms() -> None:
    core = following()
    _poll(core, 1.5, 1.51, epoch=6)  # the leader moved it on: the fence shows through the read
    assert core.claimable(2.5) == {}
    core = following()
    _poll(core, 1.5, 1.51, owner="g")
    assert core.claimable(2.5) == {}


def test_no_degraded_lease_from_a_slow_poll_a_lapsed_lease_or_a_stale_leader() -> None:
    core = following()
    _poll(core, 1.5, 1.5 + CFG.degraded_poll_budget + 0.01)  # its touch may have landed late
    assert core.claimable(2.1) == {}
    core = following()
    _poll(core, 2.1, 2.11)  # the Ack lease ran out at 2.0: only an Ack says it is still a member
    assert core.claimable(2.2) == {}
    core = following()
    _poll(core, 1.5, 1.51, leader_age=CFG.session_timeout)  # an election may be coming
    assert core.claimable(2.1) == {}


def test_an_ack_never_grants_beyond_the_leaders_authority() -> None:
    core = following()
    core.lease_until = -math.inf
    core.handle(
        1.0,
        ev.MessageReceived(
            message=m.Ack(
                sender="L", term=1, incarnation=7, seq=99, sent_at=1.0, authority=0.8, version=1
            )
        ),
    )
    assert core.lease_until == pytest.approx(1.0 + 0.8 - CFG.lease_margin)


def test_revocation_stops_claiming_at_once_and_reports_the_release() -> None:
    core = following()
    out = core.handle(
        0.1,
        ev.MessageReceived(
            message=m.Grant(sender="L", term=1, incarnation=7, version=2, grant=(), revoking=(2,))
        ),
    )
    assert of(out, ev.Revoked)[0].partitions == {2}
    assert core.claimable(0.1) == {}
    out = core.handle(0.2, ev.RevokeConfirmed(partitions=frozenset({2})))
    beat = sent(out, m.Heartbeat)[0]  # reported at once, and with every beat until handed over
    assert beat.released == ((2, 5),)


def test_reordered_or_duplicated_grants_are_ignored() -> None:
    core = following()
    core.handle(
        0.1,
        ev.MessageReceived(
            message=m.Grant(sender="L", term=1, incarnation=7, version=3, grant=((2, 5), (3, 1)))
        ),
    )
    out = core.handle(
        0.2,
        ev.MessageReceived(
            message=m.Grant(sender="L", term=1, incarnation=7, version=2, grant=((2, 5),))
        ),
    )
    assert out == [] or not of(out, ev.Lost)
    assert core.held == {2: 5, 3: 1}


def test_a_partition_taken_without_revocation_is_lost() -> None:
    core = following()
    out = core.handle(
        0.1,
        ev.MessageReceived(
            message=m.Grant(sender="L", term=1, incarnation=7, version=2, grant=((2, 6),))
        ),
    )
    assert of(out, ev.Lost)[0].partitions == {2}  # same partition, newer epoch: fenced
    assert of(out, ev.Assigned)[0].partitions == {2: 6}


def test_declared_dead_means_lose_everything_and_rejoin_as_a_new_incarnation() -> None:
    core = following()
    out = core.handle(5.0, ev.MessageReceived(message=m.Rejoin(sender="L", term=1, incarnation=7)))
    assert of(out, ev.Lost)[0].partitions == {2}
    join = sent(out, m.Join)[0]
    assert join.incarnation == 8 and join.held == ()
    assert core.claimable(5.0) == {}


def test_messages_from_a_stale_leader_or_incarnation_are_ignored() -> None:
    core = following()
    for msg in (
        m.Grant(sender="X", term=1, incarnation=7, version=9),
        m.Grant(sender="L", term=0, incarnation=7, version=9),
        m.Grant(sender="L", term=1, incarnation=6, version=9),
        m.Rejoin(sender="L", term=1, incarnation=6),
    ):
        assert core.handle(0.1, ev.MessageReceived(message=msg)) == []
    assert core.held == {2: 5}


def leader_with_member(now: float = 0.0) -> Core:
    core = Core("a", CFG)
    core.handle(now, ev.Start())
    out = core.handle(
        now, ev.PollResult(op_id=1, term=TermRecord(term=0, leader=None), nodes=(node("a", 1),))
    )
    claim = of(out, ev.ClaimLeadership)[0]
    registered = (node("a", 1), node("b", 2))  # b registered before it joined, as nodes do
    core.handle(
        now, ev.LeadershipResult(op_id=claim.op_id, term=1, nodes=registered, partitions={})
    )
    core.handle(
        now,
        ev.MessageReceived(message=m.Join(sender="b", term=1, incarnation=3, seq=1, sent_at=100.0)),
    )
    return core


def test_a_join_from_a_node_missing_from_the_registry_waits_for_a_poll() -> None:
    """A forged Join (no registry row) never makes a phantom member; a real one from a node the
    leader's last read predates is admitted as soon as a poll issued after it shows the row."""
    core = leader_with_member()
    lead = core.leadership
    assert lead is not None and "b" in lead.members
    for sender in ("phantom", "c"):
        join = m.Join(sender=sender, term=1, incarnation=1, seq=1, sent_at=0.1)
        core.handle(0.1, ev.MessageReceived(message=join))
    assert set(lead.members) == {"a", "b"}  # neither admitted yet
    rows = (node("a", 1), node("b", 2), node("c", 3))
    for t in (0.2, 0.4):  # answer every poll (one may have been issued before the Joins came)
        core.handle(t, ev.Tick())
        polls = [op for op, (kind, _) in core.machine.fx.ops.items() if kind == "Poll"]
        assert polls, "an unknown joiner makes the leader read the registry soon"
        for op in polls:
            core.handle(t, ev.PollResult(op_id=op, term=TermRecord(term=1, leader="a"),
                                         nodes=rows))
    assert set(lead.members) == {"a", "b", "c"}  # c registered: admitted; phantom forgotten
    assert core.machine.inbox.held_joins == {}


def _answer_polls(core: Core, t: float, nodes: tuple[NodeRecord, ...]) -> list[ev.Action]:
    out = core.handle(t, ev.Tick())
    for _ in range(3):  # an answer may make it poll again at once
        for poll in [op for op, (kind, _) in core.machine.fx.ops.items() if kind == "Poll"]:
            result = ev.PollResult(op_id=poll, term=TermRecord(term=1, leader="a"), nodes=nodes)
            out += core.handle(t, result)
    return out


def _dead(out: list[ev.Action]) -> list[object]:
    return [n.detail["node"] for n in of(out, ev.Notice) if n.event == "member_dead"]


def test_the_leader_declares_a_silent_member_dead_once_its_registry_row_is_stale() -> None:
    core = leader_with_member()
    stale = (node("a", 1), node("b", 2, age=CFG.session_timeout))
    for t in (0.5, 1.0, 1.5, 2.0, 2.5):  # keep its authority alive: answer every poll it made
        _answer_polls(core, t, stale)
    assert "b" in core.leadership.members  # type: ignore[union-attr]
    # Silent for session_timeout: not enough -- only a poll issued after that may evict it.
    assert _dead(core.handle(CFG.session_timeout, ev.Tick())) == []
    out = _answer_polls(core, CFG.session_timeout + 0.01, stale)
    assert "b" not in core.leadership.members  # type: ignore[union-attr]
    assert _dead(out) == ["b"]


def test_a_silent_member_whose_registry_row_is_fresh_is_not_evicted() -> None:
    core = leader_with_member()
    fresh = (node("a", 1), node("b", 2, age=0.3))  # it touches its row: cut off from us only
    out: list[ev.Action] = []
    for i in range(1, 30):
        out += _answer_polls(core, i * 0.5, fresh)
    assert "b" in core.leadership.members and _dead(out) == []  # type: ignore[union-attr]


def test_a_heartbeat_from_a_dropped_member_is_answered_with_rejoin() -> None:
    core = leader_with_member()
    out = core.handle(
        0.1,
        ev.MessageReceived(
            message=m.Heartbeat(sender="zz", term=1, incarnation=4, seq=1, sent_at=0.0)
        ),
    )
    assert sent(out, m.Rejoin)[0].incarnation == 4


def test_a_refused_or_failed_write_makes_the_leader_step_down() -> None:
    for result in (
        lambda op: ev.AssignResult(op_id=op, epochs=None),
        lambda op: ev.RefereeFailed(op_id=op, error="down"),
    ):
        core = leader_with_member()
        write = of(core.handle(CFG.join_debounce, ev.Tick()), ev.WriteAssignment)[0]
        out = core.handle(0.6, result(write.op_id))
        assert core.role == FOLLOWER and core.claimable(0.6) == {}
        assert next(n.event for n in of(out, ev.Notice)) == "stepped_down"


def test_a_lapsed_leader_steps_down_before_acting_on_anything() -> None:
    core = leader_with_member()
    out = core.handle(
        10.0,
        ev.MessageReceived(
            message=m.Heartbeat(sender="b", term=1, incarnation=3, seq=2, sent_at=101.0)
        ),
    )
    assert core.role == FOLLOWER and not sent(out, m.Ack)


def test_a_lower_term_is_told_who_leads_now() -> None:
    core = leader_with_member()
    out = core.handle(
        0.1,
        ev.MessageReceived(
            message=m.Heartbeat(sender="c", term=0, incarnation=1, seq=1, sent_at=0.0)
        ),
    )
    assert sent(out, m.Announce)[0].term == 1


def test_next_deadline_is_always_in_the_future() -> None:
    core = following(now=3.0)
    assert core.next_deadline() > 3.0
    idle = Core("x", CFG)
    assert idle.next_deadline() == math.inf


def test_config_rejects_unsafe_timings() -> None:
    with pytest.raises(ConfigurationError):
        ProtocolConfig(leader_lease=4.0)  # longer than session_timeout
    with pytest.raises(ConfigurationError):
        ProtocolConfig(lease_margin=3.0)
    with pytest.raises(ConfigurationError):
        ProtocolConfig(heartbeat_interval=2.0)
    assert ProtocolConfig().unconfirmed_revoke_wait == 10.0


class FlakyReferee(MemoryReferee):
    def claim_leadership(self, node_id: str, seen_term: int) -> int | None:
        raise DatabaseUnavailable("connection refused")


def test_perform_maps_referee_operations_and_outages() -> None:
    ref = MemoryReferee(4, clock=lambda: 5.0)
    ref.register("a", "tcp://a")
    won = perform(ev.ClaimLeadership(op_id=1, seen_term=0), "a", ref, ref)
    assert isinstance(won, ev.LeadershipResult) and won.term == 1
    assert won.partitions[0] == Ownership(partition=0, owner=None, epoch=0)
    lost = perform(ev.ClaimLeadership(op_id=2, seen_term=0), "b", ref, ref)
    assert isinstance(lost, ev.LeadershipResult) and lost.term is None
    wrote = perform(ev.WriteAssignment(op_id=3, term=1, owners={0: "a"}), "a", ref, ref)
    assert wrote == ev.AssignResult(op_id=3, epochs={0: 1})
    stale = perform(ev.WriteAssignment(op_id=4, term=1, owners={0: "b"}), "b", ref, ref)
    assert stale == ev.AssignResult(op_id=4, epochs=None)
    polled = perform(ev.Poll(op_id=5), "a", ref, ref)
    assert isinstance(polled, ev.PollResult) and polled.term == TermRecord(term=1, leader="a")
    failed = perform(ev.ClaimLeadership(op_id=6, seen_term=1), "a", FlakyReferee(4), ref)
    assert failed == ev.RefereeFailed(op_id=6, error="connection refused")
