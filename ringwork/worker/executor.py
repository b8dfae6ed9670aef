"""Running jobs and partition callbacks, with one exception policy for both kinds of handler.

* Plain handlers run on a pool of ``concurrency`` daemon threads (see :mod:`.threads`), ``async
  def`` handlers as tasks on the event loop; both report to the same ``on_outcome`` on the loop.
  Thread outcomes cross over through a deque, the loop woken once per batch of them.
* The policy, the same for both: a handler that returns succeeded; one that raises *anything* --
  ``Exception`` or a ``BaseException`` such as ``SystemExit``, ``KeyboardInterrupt`` or an
  ``asyncio.CancelledError`` it raised itself -- failed that attempt, which the task's
  :class:`ringwork.Retry` policy retries with backoff until ``max_attempts``, then dead (or
  dead at once, for an exception its ``dead_on``/``retry_on`` say not to retry). Nothing a
  handler raises can end the process or strand its job in flight.
* An attempt's outcome can be decided before its handler returns -- an :class:`Attempt` is
  *decided* then, and whatever its handler does afterwards is no outcome:

  - the task's ``timeout`` passed: a timed-out failure (retried or dead by the policy), at the
    deadline; an async handler is cancelled, a plain one's thread cannot be and runs on;
  - a cancel request reached us (:meth:`Executor.request_cancel`): an async handler is
    cancelled and the attempt ends ``cancelled`` at once; a plain one sees
    ``job.cancel_requested`` and ends ``cancelled`` when it returns, however it returns (or at
    its timeout, if it has one and ignores the request);
  - the shutdown grace ran out: async handlers are cancelled and no outcome at all is given
    (the job is abandoned; its partition's next owner runs it again).

  A decided attempt whose handler still runs keeps its slot (:attr:`Executor.overrunning`):
  the pump claims only for free threads, so a claimed job never waits behind a stuck one, and
  the worker never runs more than ``concurrency`` handlers at once. Its end gives the slot back
  (``on_freed``). The cost, documented in docs/guarantees.md: plain handlers that ignore their
  timeout and never return use the worker's slots up.
* Partition callbacks (``on_assigned`` / ``on_revoked`` / ``on_lost``) run in order, one at a
  time, apart from handlers: plain ones on a one-thread pool of their own (so they never wait
  behind busy handlers), ``async def`` ones awaited on the loop. A failing callback is logged.

Threads: the loop runs everything here except the plain handlers (handler threads) and the
plain callbacks (the callback thread). Cross-thread fields: ``_outbox`` (appended by handler
threads, drained by the loop: deque operations are atomic), ``_collect_scheduled`` (a flag
set by handler threads, cleared by the loop; a lost race only costs one extra wake-up) and each
job's cancel flag (set on the loop, read by its handler; see :class:`ringwork.job.CancelFlag`).
The :class:`Attempt` records themselves are the loop's alone.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ringwork.app import App, PartitionCallback
from ringwork.job import Job, encode_result
from ringwork.log import log_event
from ringwork.retry import DEFAULT as DEFAULT_RETRY
from ringwork.retry import Retry
from ringwork.settings import Settings
from ringwork.tracing import AttemptSpans
from ringwork.worker.failures import describe_exception
from ringwork.worker.ledger import CANCELLED, Stored, Written
from ringwork.worker.measures import Measures
from ringwork.worker.threads import DaemonPool
from ringwork.worker.transactional import Transactions

#: What ``on_outcome`` gets: ``None`` (succeeded), ``(error text, retry delay, or None for
#: "no retry", or CANCELLED)``, or -- a transactional handler's end, written already in its own
#: transaction -- ``WRITTEN`` (committed) or ``FENCED`` (rolled back: the claim was gone).
Verdict = tuple[str, float | Literal["cancelled"] | None] | Written | Stored | None


def timed_out_text(timeout: float, sync: bool) -> str:
    """The ``last_error`` of an attempt ended by its task's timeout."""
    text = f"TimeoutError: timed out after {timeout:g} s (the task's timeout)"
    if sync:
        text += "; the handler's thread was still running: a late result is discarded"
    return text


@dataclass(eq=False)
class Attempt:
    """One start of one job, from :meth:`Executor.start` until its handler has returned."""

    job: Job
    sync: bool
    task: asyncio.Task[None] | None = None  # an async handler's task
    timer: asyncio.TimerHandle | None = None  # the task's timeout, if it has one
    decided: bool = False  # the outcome was given before the handler's end (see module doc)
    cancel_asked: bool = False  # a cancel request reached us
    store_result: bool = False  # the task keeps its handler's return value
    started: float = 0.0  # time.monotonic() at the start
    ended: float | None = None  # at a plain handler's end, on its thread (its run time)


class Executor:
    """Starts claimed jobs and hands their outcomes to ``on_outcome(job, verdict)``."""

    def __init__(self, app: App, settings: Settings, node_id: str,
                 on_outcome: Callable[[Job, Verdict], None],
                 on_freed: Callable[[], None] | None = None,
                 transactions: Transactions | None = None,
                 measures: Measures | None = None, spans: AttemptSpans | None = None) -> None:
        self.app = app
        #: Run and queue-wait histograms by task (read by the metrics thread).
        self.measures = measures or Measures()
        #: The attempts' OpenTelemetry spans (``None``: tracing off, nothing to do).
        self.spans = spans
        #: Where transactional handlers get their connection (None: the app has none).
        self.transactions = transactions
        self.settings = settings
        self.node_id = node_id
        self.on_outcome = on_outcome
        #: Called when a decided attempt's handler finally ends (its slot is free again).
        self.on_freed = on_freed or (lambda: None)
        self._rng = random.Random()
        self._threads = DaemonPool(settings.concurrency, "ringwork-job")
        self._current: dict[int, Attempt] = {}  # undecided attempts, by job id
        self._overrun: set[Attempt] = set()  # decided, handler still running: slots held
        #: Handlers running (decided or not) by task name: what ``concurrency=`` limits.
        self._running: collections.Counter[str] = collections.Counter()
        self._outbox: collections.deque[
            tuple[Attempt, BaseException | None, Written | Stored | None]] = collections.deque()
        self._collect_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def overrunning(self) -> int:
        """Handlers still running after their attempt's outcome was decided (slots held)."""
        return len(self._overrun)

    def running_of(self, task: str) -> int:
        """Handlers of ``task`` still running here, an overrunning one included."""
        return self._running[task]

    def running_by_task(self) -> dict[str, int]:
        """Any thread (the metrics server's): handlers running, by task (a copy)."""
        return dict(self._running)

    def running_ids(self) -> list[int]:
        """Jobs whose attempt is undecided here: those a cancel request can still change."""
        return list(self._current)

    def start(self, job: Job) -> None:
        """On the loop: run one claimed job."""
        loop = self._loop = self._loop or asyncio.get_running_loop()
        task = self.app.tasks.get(job.task)
        if task is None:
            error = f"UnknownTaskError: task {job.task!r} is not registered in this worker's app"
            self.on_outcome(job, (error, None))
            return
        attempt = Attempt(job, sync=not task.is_async, store_result=task.store_result,
                          started=time.monotonic())
        self._current[job.id] = attempt
        if job.waited is not None:
            self.measures.wait.observe(job.task, max(0.0, job.waited))
        handler: Callable[[Job], Any] = task.handler
        if task.transactional:
            assert self.transactions is not None, "a transactional task with no Transactions"
            run = self.transactions.run_sync if attempt.sync else self.transactions.run_async
            handler = functools.partial(_in_transaction, run, task.handler, task.timeout,
                                        task.store_result)
        if self.spans is not None:
            self.spans.start(job)
            handler = self.spans.bind(job, handler, not attempt.sync)
        self._running[job.task] += 1
        if attempt.sync:
            self._threads.submit(self._run_sync, attempt, handler)
        else:
            attempt.task = asyncio.create_task(self._run_async(attempt, handler))
        if task.timeout is not None:
            attempt.timer = loop.call_later(task.timeout, self._expire, attempt, task.timeout)

    def verdict(self, job: Job, exc: BaseException | None) -> Verdict:
        """The policy: what an attempt that ended with ``exc`` means for the job."""
        if exc is None:
            return None
        error, summary = describe_exception(exc), f"{type(exc).__name__}: {exc}"
        if not self._policy(job).retries(exc):
            # Dead-lettered at once, whatever attempts remain (the store writes ``dead``).
            log_event("job_failed", logging.ERROR, exc_info=exc, node=self.node_id, job=job.id,
                      task=job.task, partition=job.partition, attempt=job.attempt,
                      error=summary, retry="no (the task's policy)")
            return error, None
        return self._failed(job, error, summary, exc)

    def _policy(self, job: Job) -> Retry:
        task = self.app.tasks.get(job.task)
        return DEFAULT_RETRY if task is None else task.retry

    def _failed(self, job: Job, error: str, summary: str,
                exc: BaseException | None = None) -> Verdict:
        """A failure worth another attempt (if any remain): the delay by the task's policy,
        the worker's settings filling in what it leaves out.

        Logged at WARNING while attempts remain, at ERROR for the last one (the store writes
        the job dead), with the handler's traceback: what error trackers report."""
        last = job.attempt >= job.max_attempts
        log_event("job_failed", logging.ERROR if last else logging.WARNING, exc_info=exc,
                  node=self.node_id, job=job.id, task=job.task, partition=job.partition,
                  attempt=job.attempt, error=summary,
                  retry="no (attempts used up)" if last else "yes")
        s = self.settings
        return error, self._policy(job).delay(job.attempt, s.retry_base, s.retry_max,
                                              self._rng)

    def _cancelled(self, job: Job) -> Verdict:
        log_event("job_cancelled", node=self.node_id, job=job.id, task=job.task,
                  attempt=job.attempt)
        return f"cancelled on request while running on {self.node_id}", CANCELLED

    # -- outcomes decided before the handler's end -------------------------------------------

    def request_cancel(self, job_id: int) -> bool:
        """On the loop: a cancel of ``job_id`` was requested. False if it is not running here
        undecided (finished meanwhile, or already cancelled)."""
        attempt = self._current.get(job_id)
        if attempt is None or attempt.cancel_asked:
            return False
        attempt.cancel_asked = True
        attempt.job.cancel_flag.set()
        if not attempt.sync:
            self._decide(attempt, self._cancelled(attempt.job))
        return True

    def _expire(self, attempt: Attempt, timeout: float) -> None:
        if attempt.decided:
            return
        job = attempt.job
        if attempt.cancel_asked:  # a plain handler that ignored the request: end it now
            verdict = self._cancelled(job)
        else:
            log_event("job_timed_out", node=self.node_id, job=job.id, task=job.task,
                      attempt=job.attempt, timeout=f"{timeout:g}")
            text = timed_out_text(timeout, attempt.sync)
            if self.spans is not None:
                self.spans.failed(job, None, text)
            verdict = self._failed(job, text, text.split(";")[0])
        self._decide(attempt, verdict)

    def _decide(self, attempt: Attempt, verdict: Verdict) -> None:
        attempt.decided = True
        self.measures.run.observe(attempt.job.task, time.monotonic() - attempt.started)
        if self._current.get(attempt.job.id) is attempt:
            del self._current[attempt.job.id]
        attempt.job.cancel_flag.set()  # a plain handler that polls it may stop early
        self._overrun.add(attempt)
        if attempt.task is not None:
            attempt.task.cancel()
        self.on_outcome(attempt.job, verdict)

    # -- handlers ------------------------------------------------------------------------------

    async def _run_async(self, attempt: Attempt, handler: Callable[[Job], Any]) -> None:
        error: BaseException | None = None
        result = None
        try:
            result = await handler(attempt.job)
            outcome = _written(result) or _stored(attempt, result)
        except BaseException as exc:  # the policy: any exception fails the attempt
            error = exc  # (a cancellation we asked for finds the attempt decided: no outcome)
            outcome = None
        self._end(attempt, error, outcome)

    def _run_sync(self, attempt: Attempt, handler: Callable[[Job], Any]) -> None:
        """On a handler thread. Outcomes go through a deque; the loop is woken once per batch
        of them, not once per job (a wake-up crosses threads through a pipe: it is not free)."""
        try:
            result = handler(attempt.job)
            outcome = _written(result) or _stored(attempt, result)  # encoded on this thread
        except BaseException as exc:  # the policy: even SystemExit fails only the attempt
            attempt.ended = time.monotonic()
            self._outbox.append((attempt, exc, None))
        else:
            attempt.ended = time.monotonic()
            self._outbox.append((attempt, None, outcome))
        if not self._collect_scheduled:
            self._collect_scheduled = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._collect)

    def _collect(self) -> None:
        self._collect_scheduled = False  # before draining: a later append schedules again
        while self._outbox:
            self._end(*self._outbox.popleft())

    def _end(self, attempt: Attempt, exc: BaseException | None,
             written: Written | Stored | None = None) -> None:
        """On the loop: a handler returned or raised (``written``: a transactional one, whose
        outcome its own transaction wrote or refused)."""
        if attempt.timer is not None:
            attempt.timer.cancel()
        job = attempt.job
        self._running[job.task] -= 1
        if self._running[job.task] <= 0:
            del self._running[job.task]
        if attempt.decided:  # too late: its outcome was given already (or it was abandoned)
            if attempt in self._overrun:
                self._overrun.discard(attempt)
                if attempt.sync or not isinstance(exc, asyncio.CancelledError):
                    log_event("late_result_discarded", node=self.node_id, job=job.id,
                              task=job.task, attempt=job.attempt,
                              result="returned" if exc is None else type(exc).__name__)
                self.on_freed()
            return
        if self._current.get(job.id) is attempt:
            del self._current[job.id]
        ended = attempt.ended if attempt.ended is not None else time.monotonic()
        self.measures.run.observe(job.task, ended - attempt.started)
        if exc is not None and self.spans is not None and not attempt.cancel_asked:
            self.spans.failed(job, exc)
        verdict: Verdict
        if isinstance(written, Written):
            verdict = written  # committed (a cancel asked meanwhile lost the race) or refused
        elif attempt.cancel_asked:
            verdict = self._cancelled(job)
        else:
            verdict = self.verdict(job, exc) if exc is not None else written
        self.on_outcome(job, verdict)

    async def cancel_async(self, timeout: float) -> int:
        """The grace ran out: cancel the async handlers still running and give them up to
        ``timeout`` s to unwind (their ``finally`` blocks run before the partition is handed
        over); no outcome is given for them. Returns how many were undecided."""
        undecided = [a for a in self._current.values() if not a.sync]
        for attempt in undecided:
            del self._current[attempt.job.id]
            attempt.decided = True
        tasks = [a.task for a in (*undecided, *self._overrun)
                 if a.task is not None and not a.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return len(undecided)

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


def _in_transaction(run: Callable[..., Any], handler: Callable[..., Any], timeout: float | None,
                    store_result: bool, job: Job) -> Any:
    """A transactional task's handler as the executor calls it: ``handler(job, conn)`` inside
    :class:`~ringwork.worker.transactional.Transactions` (a coroutine for an async one)."""
    return run(handler, job, timeout, store_result)


def _stored(attempt: Attempt, result: object) -> Stored | None:
    """A ``store_result`` task's return value, encoded (raises ResultError: the attempt fails);
    ``None`` for any other task, or a ``None`` result."""
    if not attempt.store_result:
        return None
    text = encode_result(attempt.job.task, result)
    return None if text is None else Stored(text)


def _written(result: object) -> Written | None:
    """A transactional run's report; ``None`` for a plain handler's return value."""
    return result if isinstance(result, Written) else None
