"""A node's poll: the touch, then the term, the registry and the partitions read together.

On PostgreSQL the reads are one statement (an idle cluster's database load is mostly polls);
they must say exactly what the three separate reads say, on both databases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ringwork.node.registry import SqlRegistry
from ringwork.protocol import events as ev
from ringwork.protocol.operations import perform
from ringwork.store import Store
from tests.support import own_all


def test_the_poll_read_says_what_the_three_reads_say(store: Store) -> None:
    store.register_node("a", "tcp://127.0.0.1:1", pub_endpoint="tcp://127.0.0.1:2",
                        wake_endpoint="udp://127.0.0.1:3")
    store.register_node("b", "tcp://127.0.0.1:4")
    store.touch_node("a", joined=True)
    own_all(store, "a")
    assert store.claim_leadership("a", store.read_term().term) is not None
    term, found, owned = store.read_poll(True)
    assert term == store.read_term() and term.leader == "a"
    assert owned == store.read_partitions() and len(owned) == store.partitions
    separately = store.list_nodes()
    assert [n.node_id for n in found] == [n.node_id for n in separately] == ["a", "b"]
    for one, other in zip(found, separately, strict=True):
        assert (one.endpoint, one.pub_endpoint, one.wake_endpoint, one.registered_seq,
                one.joined, one.last_seen) == (other.endpoint, other.pub_endpoint,
                                               other.wake_endpoint, other.registered_seq,
                                               other.joined, other.last_seen)
        assert abs(one.age - other.age) < 5.0 and one.age >= 0.0
    assert store.read_poll(False)[2] == {}


def test_an_empty_registry_reads_as_no_nodes(store: Store) -> None:
    term, found, owned = store.read_poll(True)
    assert found == [] and term.leader is None
    assert all(o.owner is None for o in owned.values())


def test_a_poll_is_a_touch_and_one_read_on_postgresql(
        store: Store, count_statements: Callable[..., Any]) -> None:
    registry = SqlRegistry(store, "tcp://127.0.0.1:9", None)
    registry.register("a", "tcp://127.0.0.1:8")
    with count_statements(store.engine) as log:
        result = perform(ev.Poll(op_id=1, partitions=True), "a", store, registry)
    seen = log.statements
    assert isinstance(result, ev.PollResult)
    assert [n.node_id for n in result.nodes] == ["a"] and len(result.partitions) == store.partitions
    assert registry.router_endpoint("a") == "tcp://127.0.0.1:8"  # the driver's map is kept
    assert "UPDATE ringwork_nodes" in seen[0]  # the touch first, on its own
    if store.dialect == "postgresql":
        assert len(seen) == 2, seen
    else:
        assert len(seen) == 4, seen  # SQLite: local reads, in one transaction
