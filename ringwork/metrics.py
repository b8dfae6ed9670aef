"""Prometheus metrics for a worker process (``--metrics-port``), read from live objects.

A custom collector reads the runtime's counters and histograms (:mod:`ringwork.worker.measures`,
``Stats``), the node's protocol counters and the owned partitions' backlog at scrape time, so the
hot paths only bump plain integers and never touch the metrics library. docs/metrics.md lists
every family; ``tests/integration/test_metrics_scrape.py`` checks that list against a live
scrape.

The backlog is the one metric that costs a query: one bounded statement for the partitions this
node owns (so every partition is exported by its owner alone and nothing is counted twice
across the cluster), cached for :data:`BACKLOG_TTL` so that frequent scrapes do not add load.

Threads: the metrics server's (``prometheus_client``'s HTTP threads; one scrape at a time may
read the backlog, under the cache's lock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ringwork.addresses import bind_error
from ringwork.errors import RingworkError

#: Seconds a backlog reading is served again before the next scrape reads the store.
BACKLOG_TTL = 1.0

Backlog = Mapping[int, tuple[int, "float | None"]]


class BacklogCache:
    """The owned partitions' backlog, read at most once per ``ttl`` (and again at once when the
    owned set changes). ``None`` while the store cannot be read."""

    def __init__(self, read: Callable[[list[int]], Backlog], ttl: float = BACKLOG_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._parts: list[int] | None = None
        self._value: Backlog | None = None

    def get(self, partitions: Iterable[int]) -> Backlog | None:
        parts = sorted(partitions)
        with self._lock:
            now = self._clock()
            if parts == self._parts and now - self._at < self._ttl:
                return self._value
            try:
                self._value = self._read(parts) if parts else {}
            except RingworkError:
                self._value = None  # the database is away: no gauge rather than a failed scrape
            self._parts, self._at = parts, now
            return self._value


@dataclass(frozen=True)
class Sources:
    """Where a scrape reads from; every callable runs on the metrics thread."""

    stats: Any  # ringwork.worker.Stats (its ints and its ``measures``)
    node_view: Callable[[], Mapping[str, Any]]
    inflight: Callable[[], int]
    running: Callable[[], Mapping[str, int]]  # handlers running, by task
    concurrency: int
    task_limits: Mapping[str, int]
    owned: Callable[[], Iterable[int]]
    backlog: BacklogCache | None


def _counter(name: str, doc: str, labels: list[str],
             values: Iterable[tuple[Iterable[str], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _histogram(name: str, doc: str, label: str, histograms: Any) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for value, snap in sorted(histograms.snapshot().items()):
        family.add_metric([value], snap.buckets, snap.sum)
    return family


class WorkerCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self._s = sources

    def collect(self) -> Iterator[Metric]:
        s = self._s
        yield from self._jobs(s)
        yield from self._node(s)
        yield from self._partitions(s)

    def _jobs(self, s: Sources) -> Iterator[Metric]:
        st, m = s.stats, s.stats.measures
        totals = {"succeeded": st.succeeded, "retried": st.retried, "dead": st.dead,
                  "fenced": st.fenced, "claimed": st.claimed, "abandoned": st.abandoned,
                  "cancelled": st.cancelled}
        yield _counter("ringwork_jobs", "Job outcomes written by this worker (all tasks)",
                       ["outcome"], (([k], v) for k, v in totals.items()))
        yield _counter("ringwork_job_outcomes",
                       "Attempts ended by this worker, by task and outcome (succeeded, retried, "
                       "dead, cancelled, fenced, abandoned)", ["task", "outcome"],
                       sorted(dict(m.outcomes).items()))
        yield _counter("ringwork_fenced_writes",
                       "Outcome writes the store refused: the job's claim was no longer ours",
                       [], [([], st.fenced)])
        yield _histogram("ringwork_job_run_seconds",
                         "Handler run time of each attempt, by task", "task", m.run)
        yield _histogram("ringwork_job_queue_wait_seconds",
                         "From when an attempt became runnable (enqueue, run_at, retry backoff) "
                         "to its claim, by the database's clock, by task", "task", m.wait)
        yield _histogram("ringwork_db_round_trip_seconds",
                         "Store calls of the worker (claim, complete, fail...), as it waited "
                         "for them", "call", m.db)
        yield _gauge("ringwork_jobs_in_flight", "Jobs claimed by this worker and running",
                     s.inflight())
        running = GaugeMetricFamily("ringwork_handlers_running",
                                    "Handlers running now, by task (overrunning ones included)",
                                    labels=["task"])
        for task, n in sorted(dict(s.running()).items()):
            running.add_metric([task], n)
        yield running
        yield _gauge("ringwork_concurrency", "Jobs this worker runs at once at most",
                     s.concurrency)
        limits = GaugeMetricFamily("ringwork_task_concurrency",
                                   "A task's concurrency= limit in this worker", labels=["task"])
        for task, n in sorted(s.task_limits.items()):
            limits.add_metric([task], n)
        yield limits

    def _node(self, s: Sources) -> Iterator[Metric]:
        m, view = s.stats.measures, s.node_view()
        yield _counter("ringwork_rebalances", "Partition events this worker got (assigned, "
                       "revoked, lost)", ["kind"], sorted(([k], v) for k, v in
                                                         dict(m.rebalances).items()))
        yield _counter("ringwork_rebalanced_partitions", "Partitions named by those events",
                       ["kind"], sorted(([k], v) for k, v in
                                        dict(m.rebalanced_partitions).items()))
        yield _counter("ringwork_term_changes", "New cluster terms this node has seen",
                       [], [([], float(view.get("term_changes") or 0))])
        yield _counter("ringwork_protocol_dropped_messages",
                       "Protocol input dropped: malformed, oversized, foreign cluster, wrong "
                       "version...", ["reason"],
                       sorted(([k], v) for k, v in dict(view.get("dropped") or {}).items()))
        yield _counter("ringwork_protocol_input_errors",
                       "Failures while handling one peer's input, survived (where:exception "
                       "type)", ["reason"],
                       sorted(([k], v) for k, v in dict(view.get("errors") or {}).items()))
        frames = {"inbound": view.get("dropped_frames"), "send": view.get("send_dropped"),
                  "publish": view.get("publish_dropped")}
        yield _counter("ringwork_frames_dropped", "Frames dropped by the node: inbound "
                       "(undecodable), send (no peer), publish (high-water mark)", ["where"],
                       (([k], float(v or 0)) for k, v in frames.items()))
        yield _gauge("ringwork_term", "Cluster term as this node knows it",
                     float(view.get("term") or 0))
        yield _gauge("ringwork_is_leader", "1 while this node leads its term",
                     1.0 if view.get("role") == "leader" else 0.0)

    def _partitions(self, s: Sources) -> Iterator[Metric]:
        owned = sorted(s.owned())
        yield _gauge("ringwork_partitions_owned", "Partitions this node may claim", len(owned))
        backlog = s.backlog.get(owned) if s.backlog is not None else None
        if backlog is None:
            return
        due = GaugeMetricFamily("ringwork_partition_backlog",
                                "Due queued jobs of a partition this node owns (counted up to "
                                "10000)", labels=["partition"])
        oldest = GaugeMetricFamily("ringwork_partition_oldest_queued_seconds",
                                   "How long the oldest due job of an owned partition has "
                                   "waited (0: none)", labels=["partition"])
        for p in sorted(backlog):
            n, age = backlog[p]
            due.add_metric([str(p)], n)
            oldest.add_metric([str(p)], age or 0.0)
        yield due
        yield oldest


def serve(port: int, host: str, collector: Collector) -> int:
    """Serve ``/metrics`` on ``host:port`` (0 = any free port); returns the bound port."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise bind_error("--metrics-port", host, port, exc) from None
    return int(server.server_address[1])
