"""A real node on loopback against hostile frames: it drops, counts and carries on; and if its loop
dies anyway, the worker stops at once with exit code 70 instead of lingering as a zombie.

The node runs on a thread of the test process here, so the test can look inside it; in a worker
it runs in its own process (tests/acceptance/test_node_fate.py covers that process dying)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from ringwork import App, Job
from ringwork.coordinator import NODE_FAILED_EXIT
from ringwork.node import Node
from ringwork.protocol import events as ev
from ringwork.protocol.messages import PROTOCOL_VERSION
from ringwork.worker import Worker, cluster_node
from tests.support import running_worker, wait_for

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=8, cluster=cluster_name)
    app.configure(concurrency=2, poll_interval=5.0)
    yield app
    app.close()


def frame(cluster: str, sender: str, **fields: Any) -> bytes:
    body = {"sender": sender, "term": 1, "incarnation": 0, "seq": 1, "sent_at": 0.5, **fields}
    env = {"v": PROTOCOL_VERSION, "c": cluster, "t": "Heartbeat", "m": body}
    return json.dumps(env).encode("utf-8", "surrogatepass")


def leading(node: Node) -> dict[str, Any] | None:
    view = node.view()
    return view if view.get("role") == "leader" and len(view.get("held") or {}) == 8 else None


def test_day_one_frames_do_not_stop_the_node(app: App, cluster_name: str) -> None:
    with running_worker(app, coordinator=cluster_node(app, process=False)) as worker:
        node = worker.coordinator
        assert isinstance(node, Node)
        before = wait_for(lambda: leading(node), 15, message="the node leads")
        ctx = zmq.Context()
        try:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.IDENTITY, "\ud800".encode("utf-8", "surrogatepass"))
            dealer.connect(node.endpoint)
            frames = [
                frame(cluster_name, "a", sent_at=10**400),  # day one: OverflowError
                frame(cluster_name, "\ud800"),  # day one: UnicodeEncodeError in the node
                frame(cluster_name, "\ud800").replace(b"\\ud800", b"\xed\xa0\x80"),  # raw
                frame(cluster_name, "a", term=10**400),
                frame(cluster_name, "a", released=[[-1, 1]]),
                b"[" * 30_000 + b"]" * 30_000,  # deep, but within MAXMSGSIZE
            ]
            for data in frames:
                dealer.send(data)
            dealer.send_multipart([b"one", b"two", b"three"])
            dealer.send(b"x" * (node.config.max_message_bytes + 1))  # zmq drops the connection

            def dropped_all() -> dict[str, int] | None:
                dropped: dict[str, int] = node.view()["dropped"]  # type: ignore[assignment]
                return dropped if sum(dropped.values()) >= 6 else None

            dropped = wait_for(dropped_all, 10, message="every frame dropped")
            assert dropped["malformed"] >= 5 and dropped["out_of_range"] == 1, dropped
            wait_for(lambda: node.view()["dropped_frames"] == 1, 10, message="3-part frame")
            # Still the same leader of the same term, and alive.
            after = leading(node)
            assert after is not None and after["term"] == before["term"]
            assert node.failure() is None and node._thread is not None and node._thread.is_alive()
            assert node.view()["errors"] == {}
        finally:
            ctx.destroy(linger=0)


def test_a_failure_while_handling_a_message_is_counted_and_survived(
    app: App, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_worker(app, coordinator=cluster_node(app, process=False)) as worker:
        node = worker.coordinator
        assert isinstance(node, Node)
        before = wait_for(lambda: leading(node), 15, message="the node leads")
        assert node._core is not None
        core = node._core
        real = core.handle

        def handle(now: float, event: ev.Event) -> list[ev.Action]:
            if isinstance(event, ev.MessageReceived) and event.message.sender == "boom":
                raise RuntimeError("a bug reached by a peer's message")
            return real(now, event)

        monkeypatch.setattr(core, "handle", handle)
        ctx = zmq.Context()
        try:
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.IDENTITY, b"boom")
            dealer.connect(node.endpoint)
            for _ in range(50):
                dealer.send(frame(cluster_name, "boom", term=before["term"]))
            wait_for(lambda: node.view()["errors"] == {"router:RuntimeError": 50}, 10,
                     message="50 failures counted")
            assert node.failure() is None and leading(node) is not None
        finally:
            ctx.destroy(linger=0)


def test_a_dead_node_loop_stops_the_worker_at_once_with_exit_70(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()

    @app.task("slow")
    def slow(job: Job) -> None:
        started.set()
        release.wait(30)  # far longer than the test waits: the stop must not wait for it

    app.configure(shutdown_grace=30.0)
    worker = Worker(app, cluster_node(app, process=False))
    node = worker.coordinator
    assert isinstance(node, Node)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run(install_signals=False)),
                              daemon=True)
    thread.start()
    try:
        assert worker.wait_ready(30)
        wait_for(lambda: leading(node), 15, message="the node leads")
        app.enqueue("slow", key="k")
        assert started.wait(15)

        def broken() -> None:
            raise RuntimeError("simulated bug in the node loop")

        monkeypatch.setattr(node, "_drain_inbox", broken)
        node.revoke_done(frozenset())  # wake the loop
        failed_at = time.monotonic()
        thread.join(10)
        assert not thread.is_alive(), "worker lingered after its node loop died"
        assert time.monotonic() - failed_at < 5  # not the 30 s grace, not the 30 s job
        assert result == [NODE_FAILED_EXIT]
        failure = node.failure()
        assert failure is not None and "simulated bug" in failure
        assert worker.failure == failure
    finally:
        release.set()
        if thread.is_alive():
            worker.request_stop()
            thread.join(60)
