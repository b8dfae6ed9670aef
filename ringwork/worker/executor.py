"""Running jobs and partition callbacks, with one exception policy for both kinds of handler.

* Plain handlers run on a pool of ``concurrency`` daemon threads (see :mod:`.threads`), ``async
  def`` handlers as tasks on the event loop; both report to the same ``on_outcome`` on the loop.
  Thread outcomes cross over through a deque, the loop woken once per batch of them.
* The policy, the same for both: a handler that returns succeeded; one that raises *anything* --
  ``Exception`` or a ``BaseException`` such as ``SystemExit``, ``KeyboardInterrupt`` or an
  ``asyncio.CancelledError`` it raised itself -- failed that attempt, which the task's policy
  retries with backoff until ``max_attempts``, then dead. Nothing a handler raises can end the
  process or strand its job in flight. The one exception is a cancellation *we* asked for:
  when the shutdown grace runs out the worker cancels the async handlers still running; their
  ``CancelledError`` is no outcome (the job is abandoned, and its partition's next owner runs it
  again), told apart because we note which tasks we cancel.
* Partition callbacks (``on_assigned`` / ``on_revoked`` / ``on_lost``) run in order, one at a
  time, apart from handlers: plain ones on a one-thread pool of their own (so they never wait
  behind busy handlers), ``async def`` ones awaited on the loop. A failing callback is logged.

Threads: the loop runs everything here except the plain handlers (handler threads) and the
plain callbacks (the callback thread). Cross-thread fields: ``_outbox`` (appended by handler
threads, drained by the loop: deque operations are atomic) and ``_collect_scheduled`` (a flag
set by handler threads, cleared by the loop; a lost race only costs one extra wake-up).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import random
import traceback
from collections.abc import Callable
from typing import Any

from ringwork.app import App, PartitionCallback
from ringwork.job import Job
from ringwork.log import log_event
from ringwork.settings import Settings
from ringwork.worker.threads import DaemonPool

ERROR_LIMIT = 4000  # characters of "Type: message + traceback tail" kept in last_error

#: What ``on_outcome`` gets: ``None`` (succeeded) or ``(error text, retry delay or None)``.
Verdict = tuple[str, float | None] | None


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` plus the innermost traceback lines, bounded in size."""
    head = f"{type(exc).__name__}: {exc}"
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    text = f"{head}\n{tail}"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 3] + "..."


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)`` times [0.5, 1.5), capped."""
    return min(cap, base * (2 ** max(0, attempt - 1))) * (0.5 + rng.random())


class Executor:
    """Starts claimed jobs and hands their outcomes to ``on_outcome(job, verdict)``."""

    def __init__(self, app: App, settings: Settings, node_id: str,
                 on_outcome: Callable[[Job, Verdict], None]) -> None:
        self.app = app
        self.settings = settings
        self.node_id = node_id
        self.on_outcome = on_outcome
        self._rng = random.Random()
        self._threads = DaemonPool(settings.concurrency, "ringwork-job")
        self._tasks: dict[int, asyncio.Task[None]] = {}  # async handlers running, by job id
        self._cancelled: set[int] = set()  # job ids whose handler task we cancelled
        self._outbox: collections.deque[tuple[Job, BaseException | None]] = collections.deque()
        self._collect_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, job: Job) -> None:
        """On the loop: run one claimed job."""
        self._loop = self._loop or asyncio.get_running_loop()
        task = self.app.tasks.get(job.task)
        if task is None:
            error = f"UnknownTaskError: task {job.task!r} is not registered in this worker's app"
            self.on_outcome(job, (error, None))
        elif task.is_async:
            running = asyncio.create_task(self._run_async(job, task.handler))
            self._tasks[job.id] = running
        else:
            self._threads.submit(self._run_sync, job, task.handler)

    def verdict(self, job: Job, exc: BaseException | None) -> Verdict:
        """The policy: what an attempt that ended with ``exc`` means for the job."""
        if exc is None:
            return None
        log_event("job_failed", node=self.node_id, job=job.id, task=job.task,
                  attempt=job.attempt, error=f"{type(exc).__name__}: {exc}")
        s = self.settings
        return describe_exception(exc), retry_delay(job.attempt, s.retry_base, s.retry_max,
                                                    self._rng)

    async def _run_async(self, job: Job, handler: Callable[[Job], Any]) -> None:
        try:
            await handler(job)
        except asyncio.CancelledError as exc:
            if job.id in self._cancelled:
                raise  # we cancelled it (the grace ran out): abandoned, no outcome
            self._done(job, exc)
        except BaseException as exc:  # the policy: any exception fails the attempt
            self._done(job, exc)
        else:
            self._done(job, None)

    def _done(self, job: Job, exc: BaseException | None) -> None:
        self._tasks.pop(job.id, None)
        self.on_outcome(job, self.verdict(job, exc))

    def _run_sync(self, job: Job, handler: Callable[[Job], Any]) -> None:
        """On a handler thread. Outcomes go through a deque; the loop is woken once per batch
        of them, not once per job (a wake-up crosses threads through a pipe: it is not free)."""
        try:
            handler(job)
        except BaseException as exc:  # the policy: even SystemExit fails only the attempt
            self._outbox.append((job, exc))
        else:
            self._outbox.append((job, None))
        if not self._collect_scheduled:
            self._collect_scheduled = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._collect)

    def _collect(self) -> None:
        self._collect_scheduled = False  # before draining: a later append schedules again
        while self._outbox:
            job, exc = self._outbox.popleft()
            self.on_outcome(job, self.verdict(job, exc))

    async def cancel_async(self, timeout: float) -> int:
        """The grace ran out: cancel the async handlers still running and give them up to
        ``timeout`` s to unwind (their ``finally`` blocks run before the partition is handed
        over). Returns how many there were."""
        running, self._tasks = self._tasks, {}
        for job_id, task in running.items():
            self._cancelled.add(job_id)
            task.cancel()
        if running:
            await asyncio.wait(running.values(), timeout=timeout)
        return len(running)

    def close(self) -> None:
        """Queued work is dropped; running handler threads are left to the process's exit."""
        self._threads.shutdown()


class Callbacks:
    """The app's partition callbacks, run in order on their own thread or on the loop."""

    def __init__(self, app: App, node_id: str) -> None:
        self.node_id = node_id
        self._by_kind = {"assigned": app.assigned_callbacks, "revoked": app.revoked_callbacks,
                         "lost": app.lost_callbacks}
        self._thread = DaemonPool(1, "ringwork-callback")
        self._queue: asyncio.Queue[tuple[PartitionCallback, set[int], str]] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False  # drain() cancels the runner: that cancellation is ours

    def fire(self, kind: str, partitions: frozenset[int]) -> None:
        """On the loop: queue every callback registered for ``kind``."""
        callbacks = self._by_kind[kind]
        if not callbacks:
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._runner = asyncio.create_task(self._run())
        for callback in callbacks:
            self._queue.put_nowait((callback, set(partitions), kind))

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            callback, partitions, kind = await self._queue.get()
            try:
                if _is_async(callback):
                    await callback(partitions)
                else:
                    result = await asyncio.wrap_future(
                        self._thread.submit(callback, partitions), loop=loop)
                    if inspect.isawaitable(result):
                        await result
            except asyncio.CancelledError:
                if self._closing:
                    raise  # the worker is done with callbacks
                log_event("callback_failed", node=self.node_id, kind=kind,
                          error="CancelledError()")
            except BaseException as exc:  # a user callback must never take the worker down
                log_event("callback_failed", node=self.node_id, kind=kind, error=repr(exc))
            finally:
                self._queue.task_done()

    async def drain(self, timeout: float) -> None:
        """Let queued callbacks run (the revocations of a leave), for at most ``timeout`` s."""
        if self._queue is not None:
            try:
                await asyncio.wait_for(self._queue.join(), max(0.0, timeout))
            except TimeoutError:
                log_event("callbacks_abandoned", node=self.node_id,
                          pending=self._queue.qsize())
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
        self._thread.shutdown()


def _is_async(callback: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None))  # noqa: B004 (a callable object's method)
