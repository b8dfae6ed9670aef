"""The node thread acts on what other threads hand it at once, not when its poll times out.

Two things reach the protocol thread from elsewhere: the worker's commands (``revoke_done``,
``begin_leave``...) through its inbox, and the answers of referee calls run on the referee pool.
Neither is a socket the loop polls, so unless they wake the poll, each waits for its timeout.
Here the poll timeout is raised to 2 s and the protocol's own timers are slowed down (heartbeats
every 5 s), so a node that waits for its timeout takes seconds for what should take milliseconds.
The bounds are generous: they tell "at once" from "at the next timeout", they measure no speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import ringwork.node.driver as driver
from ringwork.node import Node
from ringwork.protocol.config import ProtocolConfig
from ringwork.store import Store
from tests.support import wait_for

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

#: The poll timeout the test gives the node: what it would wait without a wake-up.
POLL = 2.0


def slow_config(store: Store) -> ProtocolConfig:
    """Timers far apart, so nothing but a wake-up ends a poll early."""
    return ProtocolConfig(cluster=store.cluster, partitions=store.partitions,
                          heartbeat_interval=5.0, session_timeout=20.0, lease_margin=1.0,
                          leader_lease=15.0, poll_interval=10.0, revoke_timeout=30.0)


class Events:
    """A node's partition events, recorded on its thread, with when they came; revocations are
    confirmed at once once ``confirm`` is set (as a worker with nothing in flight does)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[float, str, frozenset[int]]] = []
        self.confirm: Callable[[frozenset[int]], None] | None = None

    def __call__(self, kind: str, partitions: frozenset[int]) -> None:
        with self.lock:
            self.seen.append((time.monotonic(), kind, partitions))
        if kind == "revoked" and self.confirm is not None:
            self.confirm(partitions)

    def first(
        self, kind: str, want: Callable[[frozenset[int]], bool]
    ) -> tuple[float, frozenset[int]] | None:
        with self.lock:
            for at, k, parts in self.seen:
                if k == kind and want(parts):
                    return at, parts
        return None


@pytest.fixture(autouse=True)
def long_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "MAX_POLL", POLL)


def test_referee_answers_are_acted_on_at_once(store: Store) -> None:
    """Becoming the leader of a new cluster takes several referee calls in a row (read the
    registry and the term, claim the term, assign the partitions): waiting a poll timeout for
    each answer took 6.5 s (three runs); acted on at once, it takes tens of milliseconds."""
    events = Events()
    node = Node(store, slow_config(store))
    events.confirm = node.revoke_done  # so that it leaves at once at the end
    began = time.monotonic()
    node.start(events, None)
    try:
        got = wait_for(lambda: events.first("assigned", lambda p: len(p) == store.partitions),
                       60, message="the node owns every partition")
        took = got[0] - began
        assert took < 1.5, f"leading took {took:.2f} s: referee answers waited for the poll"
    finally:
        node.stop()


def test_revoke_done_is_acted_on_at_once(store: Store, make_store: Callable[..., Store]) -> None:
    """The worker confirms a revocation from its own thread; the leader then moves the partition
    (an epoch bump at the referee) and tells the new owner. Waiting for the poll timeout, once
    for the confirmation and once for the referee's answer, took 2.5 s (three runs)."""
    first, second = Events(), Events()
    a = Node(store, slow_config(store))
    a.start(first, None)
    other = make_store()
    other.open()
    b = Node(other, slow_config(other))
    second.confirm = b.revoke_done
    try:
        wait_for(lambda: first.first("assigned", lambda p: len(p) == store.partitions), 60,
                 message="the first node owns every partition")
        b.start(second, None)
        revoked = wait_for(lambda: first.first("revoked", bool), 60, message="a revocation")[1]
        confirmed = time.monotonic()
        a.revoke_done(revoked)
        got = wait_for(lambda: second.first("assigned", lambda p: p >= revoked), 60,
                       message="the revoked partitions reach the second node")
        took = got[0] - confirmed
        assert took < 0.5, f"the hand-over took {took:.2f} s: the node waited for its poll"
        first.confirm = a.revoke_done
    finally:
        b.stop()
        a.stop()
