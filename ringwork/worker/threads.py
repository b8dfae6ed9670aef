"""Daemon thread pools: the threads that run handlers, callbacks and blocking database calls.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined when the
interpreter exits, so a handler still running after the shutdown grace kept the process alive
until it returned (``--grace 30`` with minute-long handlers took a minute to exit). A job
still running at the end of the grace is handed back to the queue and runs again elsewhere;
nothing here may outlive the process, so these threads are daemons and the exit never waits
for them.

Threads: ``submit`` may be called from any thread; the pool's own threads run the work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class DaemonPool:
    """Up to ``size`` daemon threads, started on demand, fed from one queue."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # released by a thread waiting for work
        self._lock = threading.Lock()  # guards _threads and _closed
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} pool is closed")
            self._queue.put((future, fn, args))
            if not self._idle.acquire(timeout=0) and len(self._threads) < self._size:
                thread = threading.Thread(target=self._serve, daemon=True,
                                          name=f"{self._name}-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        return future

    def _serve(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            future, fn, args = work
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del work, future, fn, args
            self._idle.release()

    def shutdown(self) -> None:
        """Cancel queued work and let idle threads end; running work is not waited for."""
        with self._lock:
            self._closed = True
            threads = len(self._threads)
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                work[0].cancel()
        for _ in range(threads):
            self._queue.put(None)
