"""OpenTelemetry spans for enqueues and attempts (``pip install ringwork[otel]``).

A job's run joins the trace of the code that enqueued it: the enqueue is a PRODUCER span whose
W3C ``traceparent`` is written into the job's row; each attempt is a CONSUMER span, child of
that context, so one trace shows the web request, its enqueue and the job's run (and every
retry, each its own attempt span). docs/tracing.md has the names and attributes.

Zero cost when tracing is off. ringwork never imports OpenTelemetry itself: tracing is on when
the application has imported ``opentelemetry.trace`` and installed a real tracer provider
(``trace.set_tracer_provider(...)``, or an auto-instrumentation agent). Otherwise
:func:`tracer` is a ``sys.modules`` lookup that returns ``None``, and nothing else here runs.

Threads: :func:`traced_enqueue` runs on the enqueuing thread (or loop). :class:`AttemptSpans`
is the worker's loop's; the span a handler runs under is made current on its own thread (or in
its task) by :meth:`AttemptSpans.bind`.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from ringwork.job import Job, NewJob

T = TypeVar("T")

#: ``messaging.system`` of every span.
SYSTEM = "ringwork"
#: Attempt outcomes that mark the span as an error.
FAILED_OUTCOMES = frozenset({"retried", "dead"})

_cached: tuple[Any, Any] | None = None  # (provider, its ringwork tracer)
_provider: Any | None = None  # use_tracer_provider's


def use_tracer_provider(provider: Any | None) -> None:
    """Trace with ``provider`` rather than OpenTelemetry's global one (``None``: the global
    one again). For tests, and for an application that keeps a provider of its own."""
    global _provider
    _provider = provider


def tracer() -> Any | None:
    """The ringwork tracer if the application set up OpenTelemetry, else ``None`` (cheap)."""
    global _cached
    provider = _provider
    if provider is None:
        trace = sys.modules.get("opentelemetry.trace")
        if trace is None:
            return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    made = provider.get_tracer("ringwork", _version())
    _cached = (provider, made)
    return made


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ringwork")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return None


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (``None``: no valid span)."""
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> Any | None:
    """The OpenTelemetry context a job's ``traceparent`` names (``None``: none, or invalid)."""
    if not traceparent:
        return None
    return _propagator().extract({"traceparent": traceparent})


def _with_traceparent(job: NewJob, traceparent: str) -> NewJob:
    if job.traceparent is not None:
        return job  # the caller carried a context of its own
    if "_payload_json" in job.__dict__:  # built by the App for this call: ours to set
        object.__setattr__(job, "traceparent", traceparent)
        return job
    return dataclasses.replace(job, traceparent=traceparent)


@contextmanager
def _enqueue_span(trace_: Any, jobs: Sequence[NewJob]) -> Iterator[tuple[Any, list[NewJob]]]:
    from opentelemetry.trace import SpanKind

    tasks = sorted({j.task for j in jobs})
    name = f"enqueue {tasks[0]}" if len(tasks) == 1 else "enqueue"
    attributes: dict[str, Any] = {"messaging.system": SYSTEM,
                                  "messaging.operation.type": "send",
                                  "messaging.batch.message_count": len(jobs)}
    if len(tasks) == 1:
        attributes["messaging.destination.name"] = attributes["ringwork.task"] = tasks[0]
    if len(jobs) == 1:
        attributes.update({"ringwork.key": jobs[0].key, "ringwork.partition": jobs[0].partition})
    with trace_.start_as_current_span(name, kind=SpanKind.PRODUCER,
                                      attributes=attributes) as span:
        traceparent = current_traceparent()
        carried = list(jobs) if traceparent is None else [
            _with_traceparent(j, traceparent) for j in jobs]
        yield span, carried


def _ids_attribute(span: Any, ids: list[int]) -> None:
    if len(ids) == 1:
        span.set_attribute("ringwork.job.id", ids[0])
        span.set_attribute("messaging.message.id", str(ids[0]))


def traced_enqueue(jobs: list[NewJob], insert: Callable[[list[NewJob]], list[int]]) -> list[int]:
    """``insert(jobs)`` inside a PRODUCER span whose context each job carries (if tracing)."""
    trace_ = tracer()
    if trace_ is None or not jobs:
        return insert(jobs)
    with _enqueue_span(trace_, jobs) as (span, carried):
        ids = insert(carried)
        _ids_attribute(span, ids)
        return ids


async def traced_enqueue_async(
    jobs: list[NewJob], insert: Callable[[list[NewJob]], Awaitable[list[int]]]
) -> list[int]:
    """:func:`traced_enqueue` for ``enqueue_many_async``."""
    trace_ = tracer()
    if trace_ is None or not jobs:
        return await insert(jobs)
    with _enqueue_span(trace_, jobs) as (span, carried):
        ids = await insert(carried)
        _ids_attribute(span, ids)
        return ids


class AttemptSpans:
    """The worker's open attempt spans, by job id: started with the attempt, ended when its
    outcome is written (so the span says what the store made of it: succeeded, retried, dead,
    cancelled, fenced, abandoned)."""

    def __init__(self, trace_: Any, node_id: str) -> None:
        self._tracer = trace_
        self.node_id = node_id
        self._open: dict[int, Any] = {}

    @classmethod
    def if_enabled(cls, node_id: str) -> AttemptSpans | None:
        trace_ = tracer()
        return None if trace_ is None else cls(trace_, node_id)

    def start(self, job: Job) -> None:
        from opentelemetry.trace import SpanKind

        previous = self._open.pop(job.id, None)
        if previous is not None:  # an attempt whose outcome never came: close it
            previous.end()
        self._open[job.id] = self._tracer.start_span(
            f"run {job.task}", context=context_of(job.traceparent), kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM, "messaging.operation.type": "process",
                "messaging.destination.name": job.task, "messaging.message.id": str(job.id),
                "ringwork.job.id": job.id, "ringwork.task": job.task,
                "ringwork.key": job.key, "ringwork.partition": job.partition,
                "ringwork.attempt": job.attempt, "ringwork.node": self.node_id,
            })

    def bind(self, job: Job, handler: Callable[[Job], T], is_async: bool) -> Callable[[Job], T]:
        """``handler`` running under the attempt's span (the current span in its thread or
        task), so the spans a handler makes are children of its attempt."""
        span = self._open.get(job.id)
        if span is None:
            return handler
        from opentelemetry import trace

        if is_async:
            async def run_async(job: Job) -> Any:
                with trace.use_span(span, end_on_exit=False, record_exception=False):
                    return await handler(job)  # type: ignore[misc]

            return run_async  # type: ignore[return-value]

        @functools.wraps(handler)
        def run(job: Job) -> T:
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                return handler(job)

        return run

    def failed(self, job: Job, exc: BaseException | None, error: str | None = None) -> None:
        """The attempt failed with ``exc`` (or ``error``: a timeout, with no exception)."""
        span = self._open.get(job.id)
        if span is None:
            return
        if exc is not None:
            span.record_exception(exc)
        elif error is not None:
            span.add_event("exception", {"exception.message": error})

    def end(self, job: Job, outcome: str) -> None:
        span = self._open.pop(job.id, None)
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("ringwork.outcome", outcome)
        if outcome in FAILED_OUTCOMES:
            span.set_status(Status(StatusCode.ERROR, f"attempt {outcome}"))
        span.end()

    def close(self) -> None:
        for span in self._open.values():
            span.end()
        self._open.clear()
