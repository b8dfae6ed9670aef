"""Partition callbacks and the daemon pools, without a worker around them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

from ringwork import App
from ringwork.worker.executor import Callbacks
from ringwork.worker.threads import DaemonPool


def test_callbacks_run_in_order_plain_ones_on_their_thread_async_ones_awaited() -> None:
    app = App(database_url="sqlite:///never-opened.db", partitions=4)
    seen: list[tuple[str, set[int], str]] = []

    @app.on_assigned
    def plain(partitions: set[int]) -> None:
        time.sleep(0.02)  # slower than the async one: order is kept all the same
        seen.append(("plain", partitions, threading.current_thread().name))

    @app.on_assigned
    async def coro(partitions: set[int]) -> None:
        await asyncio.sleep(0)
        seen.append(("coro", partitions, threading.current_thread().name))

    @app.on_lost
    def broken(partitions: set[int]) -> None:
        raise SystemExit("a callback cannot end the worker")

    @app.on_revoked
    async def after(partitions: set[int]) -> None:
        seen.append(("after", partitions, threading.current_thread().name))

    async def main() -> None:
        callbacks = Callbacks(app, "node-a")
        callbacks.fire("assigned", frozenset({1}))
        callbacks.fire("lost", frozenset({2}))
        callbacks.fire("revoked", frozenset({3}))
        await callbacks.drain(5)

    asyncio.run(main())
    main_thread = threading.current_thread().name
    assert [(k, p) for k, p, _ in seen] == [("plain", {1}), ("coro", {1}), ("after", {3})]
    assert seen[0][2].startswith("ringwork-callback") and seen[1][2] == main_thread


def test_daemon_pool_runs_work_and_its_threads_never_hold_up_the_exit() -> None:
    pool = DaemonPool(2, "test-pool")
    try:
        assert pool.submit(lambda x: x * 2, 21).result(5) == 42
        names = {pool.submit(lambda: threading.current_thread()).result(5) for _ in range(4)}
        assert all(t.daemon for t in names) and len(names) <= 2
    finally:
        pool.shutdown()
    # An interpreter whose pool thread is stuck exits at once (a ThreadPoolExecutor's would not).
    code = ("import time; from ringwork.worker.threads import DaemonPool; "
            "DaemonPool(1, 'x').submit(time.sleep, 60); print('bye')")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "bye" and time.monotonic() - started < 10
