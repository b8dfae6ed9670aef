"""Prometheus metrics for a worker process (``--metrics-port``), read from live objects.

A custom collector reads the runtime's counters and the node's protocol counters at scrape time,
so the hot paths only bump plain integers and never touch the metrics library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from ringwork.addresses import bind_error


class WorkerCollector(Collector):
    def __init__(
        self, stats: Callable[[], Mapping[str, int]], node_view: Callable[[], Mapping[str, Any]]
    ) -> None:
        self._stats = stats
        self._node_view = node_view

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        jobs = CounterMetricFamily(
            "ringwork_jobs", "Job outcomes written by this worker", labels=["outcome"]
        )
        for outcome, value in self._stats().items():
            jobs.add_metric([outcome], value)
        yield jobs
        view = self._node_view()
        dropped = CounterMetricFamily(
            "ringwork_protocol_dropped_messages",
            "Protocol input dropped: malformed, oversized, foreign cluster, wrong version...",
            labels=["reason"],
        )
        for reason, value in dict(view.get("dropped") or {}).items():
            dropped.add_metric([reason], value)
        yield dropped
        errors = CounterMetricFamily(
            "ringwork_protocol_input_errors",
            "Failures while handling one peer's input, survived (where:exception type)",
            labels=["reason"],
        )
        for reason, value in dict(view.get("errors") or {}).items():
            errors.add_metric([reason], value)
        yield errors
        held = view.get("held") or {}
        owned = GaugeMetricFamily("ringwork_partitions_owned", "Partitions this node may claim")
        owned.add_metric([], len(held))
        yield owned
        term = GaugeMetricFamily("ringwork_term", "Cluster term as this node knows it")
        term.add_metric([], float(view.get("term") or 0))
        yield term
        leader = GaugeMetricFamily("ringwork_is_leader", "1 while this node leads its term")
        leader.add_metric([], 1.0 if view.get("role") == "leader" else 0.0)
        yield leader


def serve(port: int, host: str, collector: Collector) -> int:
    """Serve ``/metrics`` on ``host:port`` (0 = any free port); returns the bound port."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise bind_error("--metrics-port", host, port, exc) from None
    return int(server.server_address[1])
