"""Static membership in the node and the store: incarnations, the restart re-queue, the stop.

The whole cluster, with real processes, is tests/acceptance/test_static_membership.py; here the
parts, each on its own: the registration counter a named node's incarnation comes from, the
re-queue of the jobs its previous process left running, a named node's stop (no leave, its row
and its partitions stay) and its restart (the same partitions, at new epochs), and a DEALER
that follows a node id to its new address.
"""

from __future__ import annotations

import zmq

from ringwork.job import JobRecord, NewJob
from ringwork.node import Node
from ringwork.node.driver import first_incarnation
from ringwork.node.peers import Peers
from ringwork.node.sockets import SocketMaker
from ringwork.protocol.config import ProtocolConfig
from ringwork.store import Store
from ringwork.store.restarts import restarted_error
from tests.support import own_all, wait_for


def job(store: Store, job_id: int) -> JobRecord:
    record = store.get_job(job_id)
    assert record is not None
    return record


def test_a_registration_under_the_same_name_counts_higher_but_keeps_its_priority(
    store: Store,
) -> None:
    first = store.register_counted("web-1", "tcp://127.0.0.1:1")
    other = store.register_counted("web-2", "tcp://127.0.0.1:2")
    again = store.register_counted("web-1", "tcp://127.0.0.1:3")  # its row is still there
    assert again.seq == first.seq  # the leader priority is the row's
    assert first.counter < other.counter < again.counter
    # The core adds one per rejoin: the next process starts above every one of them.
    assert first_incarnation(again.counter) > first_incarnation(first.counter) + 2**20
    assert store.register_node("web-2", "tcp://127.0.0.1:4") == other.seq


def test_the_restart_requeues_what_ran_under_the_name_and_nothing_else(store: Store) -> None:
    epochs = own_all(store, "web-1")
    ids = store.enqueue([NewJob(task="t", key=f"k{i}", partition=0,
                                max_attempts=1 if i == 2 else 5)
                         for i in range(5)])
    claimed = store.claim("web-1", {0: epochs[0]}, 4)  # ids[4] stays queued
    assert {j.id for j in claimed} == set(ids[:4])
    store.cancel(ids[3])  # running: a cancel request
    assert store.requeue_restarted("web-2") == 0  # another name's restart touches nothing
    assert store.requeue_restarted("web-1") == 4
    rows = {i: job(store, i) for i in ids}
    assert rows[ids[0]].state == rows[ids[1]].state == "queued"
    assert rows[ids[0]].attempts == 1  # counted at the claim
    assert rows[ids[0]].last_error == restarted_error("web-1")
    assert rows[ids[2]].state == "dead"  # its one attempt used
    assert rows[ids[3]].state == "cancelled"
    assert rows[ids[4]].state == "queued" and rows[ids[4]].attempts == 0
    # Each interrupted attempt is in the history, ended lost, under the old process's claim.
    for claim in claimed:
        [attempt] = store.get_attempts(claim.id)
        assert (attempt.outcome, attempt.node, attempt.epoch) == ("lost", "web-1", claim.token)
        assert attempt.error == restarted_error("web-1") and attempt.finished_at is not None
    assert store.get_attempts(ids[4]) == []
    assert store.requeue_restarted("web-1") == 0
    # The old process's late outcome is refused (fenced): it is not its running job any more.
    assert store.complete("web-1", [(claimed[0].id, claimed[0].token)]) == [claimed[0].id]


def config(store: Store) -> ProtocolConfig:
    return ProtocolConfig.for_session(cluster=store.cluster, partitions=store.partitions,
                                      heartbeat_interval=0.2, session_timeout=1.2)


def started(store: Store, **kwargs: object) -> Node:
    node = Node(store, config(store), **kwargs)  # type: ignore[arg-type]
    node.start(lambda kind, partitions: None, None)
    return node


def test_a_named_node_stops_without_leaving_and_comes_back_to_its_partitions(
    store: Store,
) -> None:
    ids = store.enqueue([NewJob(task="t", key="k", partition=0)])
    node = started(store, name="web-1")
    try:
        wait_for(lambda: len(node.claimable()) == store.partitions, 30, message="it owns all")
        held = dict(node.claimable())
        store.claim("web-1", {0: held[0]}, 1)  # running when the process ends
    finally:
        node.stop()
    # No leave, no unregister: its row and its partitions wait for it.
    assert [n.node_id for n in store.list_nodes()] == ["web-1"]
    assert {p: (o.owner, o.epoch) for p, o in store.read_partitions().items()} == {
        p: ("web-1", e) for p, e in held.items()}
    again = started(store, name="web-1")
    try:
        assert job(store, ids[0]).state == "queued"
        wait_for(lambda: again.claimable().keys() == held.keys(), 30, message="all back")
        assert all(e > held[p] for p, e in again.claimable().items())  # the old one fenced
        assert again.view()["incarnation"] > (1 << 24)
    finally:
        again.stop()


def test_an_unnamed_node_still_leaves_and_unregisters(store: Store) -> None:
    node = started(store)
    try:
        wait_for(lambda: len(node.claimable()) == store.partitions, 30, message="it owns all")
    finally:
        node.stop()
    assert store.list_nodes() == []
    assert {o.owner for o in store.read_partitions().values()} == {None}


def test_a_dealer_follows_a_node_id_to_its_new_address() -> None:
    ctx = zmq.Context()
    make = SocketMaker(ctx, None)
    old, new = make(zmq.ROUTER, server=True), make(zmq.ROUTER, server=True)
    where = {"web-1": f"tcp://127.0.0.1:{old.bind_to_random_port('tcp://127.0.0.1')}"}
    new_endpoint = f"tcp://127.0.0.1:{new.bind_to_random_port('tcp://127.0.0.1')}"
    counters: dict[str, int] = {"send_dropped": 0}
    peers = Peers(make, "me", where.get, lambda: None, counters)  # type: ignore[arg-type]

    def delivered(router: zmq.Socket, payload: bytes) -> bool:
        peers.send_or_hold("web-1", payload)
        peers.flush_held()
        if router.poll(50):
            return router.recv_multipart() == [b"me", payload]
        return False

    try:
        wait_for(lambda: delivered(old, b"one"), 10, 0.0, "a message at the old address")
        where["web-1"] = new_endpoint  # the registry shows its next process
        wait_for(lambda: delivered(new, b"two"), 10, 0.0, "a message at the new address")
    finally:
        peers.close()
        old.close(linger=0)
        new.close(linger=0)
        ctx.term()
