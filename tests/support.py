"""Helpers shared by test tiers: waiting for conditions, running workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from ringwork import App
from ringwork.store import Store
from ringwork.worker import Worker

T = TypeVar("T")


def own_all(store: Store, node: str = "node-a") -> dict[int, int]:
    """Make ``node`` leader and owner of every partition; its {partition: epoch}."""
    term = store.claim_leadership(node, store.read_term().term)
    assert term is not None
    epochs = store.assign(node, term, dict.fromkeys(range(store.partitions), node))
    assert epochs is not None
    return epochs


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@contextmanager
def running_worker(app: App, **kwargs: object) -> Iterator[Worker]:
    """A worker on a thread (no signal handlers), stopped gracefully and joined on exit."""
    worker = Worker(app, **kwargs)  # type: ignore[arg-type]
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run(install_signals=False)),
                              name="test-worker", daemon=True)
    thread.start()
    try:
        assert worker.wait_ready(30), "worker did not start"
        yield worker
    finally:
        worker.request_stop()
        thread.join(60)
        assert not thread.is_alive(), "worker did not stop"
    assert result == [0]
