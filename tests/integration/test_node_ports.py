"""A node's listening ports are predictable: ROUTER on the --bind port, PUB on the next one."""

from __future__ import annotations

import socket

import pytest

from ringwork.node import Node
from ringwork.protocol.config import ProtocolConfig
from ringwork.store import Store


def free_pair() -> int:
    """A port P such that P and P+1 are both free on 127.0.0.1 (at the time of asking)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two adjacent free ports")


def started(store: Store, **kwargs: object) -> Node:
    node = Node(store, ProtocolConfig(cluster=store.cluster, partitions=store.partitions),
                **kwargs)  # type: ignore[arg-type]
    node.start(lambda kind, parts: None, None)
    return node


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pub_listens_on_the_next_port(store: Store) -> None:
    port = free_pair()
    node = started(store, bind=f"tcp://127.0.0.1:{port}")
    try:
        assert node.endpoint == f"tcp://127.0.0.1:{port}"
        assert node.pub_endpoint == f"tcp://127.0.0.1:{port + 1}"
        row = next(n for n in store.list_nodes() if n.node_id == node.node_id)
        assert row.pub_endpoint == node.pub_endpoint  # what peers read to subscribe
    finally:
        node.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_pub_port_and_advertise(store: Store) -> None:
    port, pub = free_pair(), free_pair()
    node = started(store, bind=f"tcp://0.0.0.0:{port}", advertise="127.0.0.1", pub_port=pub)
    try:
        assert node.endpoint == f"tcp://127.0.0.1:{port}"
        assert node.pub_endpoint == f"tcp://127.0.0.1:{pub}"
    finally:
        node.stop()
