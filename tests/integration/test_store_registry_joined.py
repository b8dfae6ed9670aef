"""The registry row records whether its node is a member (what status shows as not joined)."""

from __future__ import annotations

from ringwork.store import Store


def joined(store: Store, node_id: str) -> bool | None:
    return next(n.joined for n in store.list_nodes() if n.node_id == node_id)


def test_register_touch_and_mark(store: Store) -> None:
    store.register_node("a", "tcp://127.0.0.1:1")
    assert joined(store, "a") is False
    store.touch_node("a", joined=True)
    assert joined(store, "a") is True
    store.touch_node("a")  # a touch that does not say leaves it alone
    assert joined(store, "a") is True
    before = next(n.last_seen for n in store.list_nodes() if n.node_id == "a")
    store.mark_joined("a", False)
    after = next(n for n in store.list_nodes() if n.node_id == "a")
    assert after.joined is False and after.last_seen == before  # liveness untouched
    store.register_node("a", "tcp://127.0.0.1:2")  # a restart starts outside again
    assert joined(store, "a") is False
