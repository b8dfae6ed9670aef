"""OpenTelemetry: a trace of web request -> enqueue -> each attempt's run, through a real worker
(in-process, its node in its own process), the inline runner and ``enqueue_async``; exported to
an in-memory span exporter (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ringwork import App, Job, tracing
from tests.support import running_worker, wait_for


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_tracer_provider(provider)
    try:
        yield spans
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=4, cluster=cluster_name)
    app.configure(concurrency=2, poll_interval=5.0, retry_base=0.01, retry_max=0.05)
    yield app
    app.close()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _request_and_enqueue(app: App, task: str, key: str) -> int:
    """``app.enqueue`` inside a span standing for the web request that did it."""
    web = tracing.tracer()
    assert web is not None
    with web.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
        return app.enqueue(task, key, {"n": 1})


def _check_family(exporter: InMemorySpanExporter, task: str, job_id: int, key: str,
                  partition: int, runs: int) -> list[ReadableSpan]:
    [request] = _named(exporter, "POST /orders")
    [enqueue] = _named(exporter, f"enqueue {task}")
    attempts = sorted(_named(exporter, f"run {task}"),
                      key=lambda s: s.attributes["ringwork.attempt"])  # type: ignore[index]
    assert len(attempts) == runs
    trace_id = request.context.trace_id
    assert enqueue.context.trace_id == trace_id
    assert enqueue.parent is not None and enqueue.parent.span_id == request.context.span_id
    assert enqueue.kind is SpanKind.PRODUCER
    assert enqueue.attributes["ringwork.job.id"] == job_id  # type: ignore[index]
    assert enqueue.attributes["ringwork.task"] == task  # type: ignore[index]
    for n, run in enumerate(attempts, 1):
        assert run.kind is SpanKind.CONSUMER
        assert run.context.trace_id == trace_id  # one trace: request, enqueue, every run
        assert run.parent is not None and run.parent.span_id == enqueue.context.span_id
        attrs = run.attributes
        assert attrs is not None
        assert (attrs["ringwork.job.id"], attrs["ringwork.task"], attrs["ringwork.key"],
                attrs["ringwork.partition"], attrs["ringwork.attempt"]) == (
                    job_id, task, key, partition, n)
    return attempts


def test_a_worker_runs_the_job_in_its_enqueuers_trace(
    app: App, exporter: InMemorySpanExporter
) -> None:
    @app.task("ship", max_attempts=3)
    def ship(job: Job) -> None:
        inner = tracing.tracer()
        assert inner is not None
        with inner.start_as_current_span("inside the handler"):
            if job.attempt == 1:
                raise RuntimeError("carrier unreachable")

    with running_worker(app):
        job_id = _request_and_enqueue(app, "ship", "order-7")
        record = app.get_job(job_id)
        assert record is not None and record.traceparent is not None
        wait_for(lambda: len(_named(exporter, "run ship")) == 2, 30,
                 message="two attempt spans ended")
    first, second = _check_family(exporter, "ship", job_id, "order-7",
                                  app.partition_for("order-7"), runs=2)
    assert first.attributes["ringwork.outcome"] == "retried"  # type: ignore[index]
    assert first.status.status_code is StatusCode.ERROR
    [event] = [e for e in first.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError"  # type: ignore[index]
    assert "carrier unreachable" in event.attributes["exception.message"]  # type: ignore
    assert second.attributes["ringwork.outcome"] == "succeeded"  # type: ignore[index]
    assert second.status.status_code is not StatusCode.ERROR
    # The handler's own spans are children of its attempt's.
    inner = _named(exporter, "inside the handler")
    assert {s.parent.span_id for s in inner if s.parent} == {
        first.context.span_id, second.context.span_id}


def test_an_async_handler_and_a_dead_job(app: App, exporter: InMemorySpanExporter) -> None:
    @app.task("notify", max_attempts=1)
    async def notify(job: Job) -> None:
        await asyncio.sleep(0)
        raise ValueError("no such user")

    with running_worker(app):
        job_id = _request_and_enqueue(app, "notify", "u1")
        wait_for(lambda: _named(exporter, "run notify"), 30, message="the attempt span")
    [run] = _check_family(exporter, "notify", job_id, "u1", app.partition_for("u1"), runs=1)
    assert run.attributes["ringwork.outcome"] == "dead"  # type: ignore[index]
    assert run.status.status_code is StatusCode.ERROR


def test_the_inline_runner_traces_attempts_too(
    cluster_name: str, exporter: InMemorySpanExporter
) -> None:
    app = App(partitions=4, cluster=cluster_name)

    @app.task("mail")
    def mail(job: Job) -> None: ...

    try:
        with app.testing() as t:
            job_id = _request_and_enqueue(app, "mail", "m")
            assert t.run_pending() == 1
        [run] = _check_family(exporter, "mail", job_id, "m", app.partition_for("m"), runs=1)
        assert run.attributes["ringwork.outcome"] == "succeeded"  # type: ignore[index]
    finally:
        app.close()


def test_enqueue_async_carries_the_context(app: App, exporter: InMemorySpanExporter) -> None:
    @app.task("a")
    def a(job: Job) -> None: ...

    web = tracing.tracer()
    assert web is not None

    async def request() -> list[int]:
        with web.start_as_current_span("POST /orders"):
            return await app.enqueue_many_async([{"task": "a", "key": "x"},
                                                 {"task": "a", "key": "y"}])

    ids = asyncio.run(request())
    [enqueue] = _named(exporter, "enqueue a")
    assert enqueue.attributes["messaging.batch.message_count"] == 2  # type: ignore[index]
    [request_span] = _named(exporter, "POST /orders")
    assert enqueue.parent is not None and enqueue.parent.span_id == request_span.context.span_id
    for job_id in ids:
        record = app.get_job(job_id)
        assert record is not None and record.traceparent is not None
        assert f"{enqueue.context.trace_id:032x}" in record.traceparent
        assert f"{enqueue.context.span_id:016x}" in record.traceparent


def test_no_provider_no_spans_no_traceparent(app: App) -> None:
    @app.task("plain")
    def plain(job: Job) -> None: ...

    assert tracing.tracer() is None  # the global provider was never set in this process
    record = app.get_job(app.enqueue("plain", "k"))
    assert record is not None and record.traceparent is None


def test_enqueue_in_the_callers_transaction_and_built_jobs_carry_it(
    app: App, exporter: InMemorySpanExporter
) -> None:
    @app.task("b")
    def b(job: Job) -> None: ...

    web = tracing.tracer()
    assert web is not None
    built = app.build_job("b", "own")  # a NewJob the caller built: copied, not changed
    with web.start_as_current_span("POST /batch"), app.store.engine.begin() as conn:
        [in_tx] = app.enqueue_many([{"task": "b", "key": "tx"}], connection=conn)
    with web.start_as_current_span("POST /built"):
        [from_built] = app.enqueue_many([built])
    assert built.traceparent is None
    enqueues = {s.parent.span_id: s for s in _named(exporter, "enqueue b") if s.parent}
    parents = {s.name: s.context.span_id for s in exporter.get_finished_spans()}
    for job_id, request in ((in_tx, "POST /batch"), (from_built, "POST /built")):
        record = app.get_job(job_id)
        assert record is not None and record.traceparent is not None
        enqueue = enqueues[parents[request]]
        assert record.traceparent.startswith(
            f"00-{enqueue.context.trace_id:032x}-{enqueue.context.span_id:016x}-")
