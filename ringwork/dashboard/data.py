"""What each screen shows, as plain values: the store's reads put together for the templates.

No web framework here (these are tested and reused without one). The cluster's shape comes
from :func:`ringwork.status.collect` -- the same document ``ringwork status --json`` prints --
and the rest from :mod:`ringwork.store.panels`, in one read transaction per screen.

Threads: Starlette's thread pool (the page endpoints are plain functions); the SSE stream
calls :func:`snapshot` through ``anyio.to_thread``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ringwork.job import AttemptRecord, JobRecord
from ringwork.status import collect
from ringwork.store import panels
from ringwork.store.engine import transaction
from ringwork.store.panels import BlockedKey, JobFilter, RecentAttempt

if TYPE_CHECKING:
    from ringwork.settings import Settings
    from ringwork.store import Store
    from ringwork.tasks import Task


class App(Protocol):
    """What the dashboard uses of :class:`ringwork.App` (named, not imported: the App imports
    the dashboard in :meth:`~ringwork.App.dashboard`)."""

    tasks: dict[str, Task]

    @property
    def store(self) -> Store: ...

    @property
    def settings(self) -> Settings: ...

    def get_job(self, job_id: int) -> JobRecord | None: ...

    def get_attempts(self, job_id: int) -> list[AttemptRecord]: ...

    def retry(self, job_id: int) -> None: ...

    def retry_all(self, state: str = "dead", task: str | None = None) -> tuple[int, int]: ...

    def cancel(self, job_id: int) -> str: ...


#: Minutes of history the throughput and sparklines cover.
WINDOW_MINUTES = 15

#: Finished jobs per state the live snapshot counts at most.
SNAPSHOT_CAP = 1000

#: Colours of partition owners on the map, in the owners' priority order.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")


def overview(app: App) -> dict[str, Any]:
    doc = collect(app)
    with transaction(app.store.engine) as conn:
        load = panels.partition_load(conn, app.store.dialect, app.settings.cluster)
        recent = panels.recent_attempts(conn, app.store.dialect, app.settings.cluster)
    ages = [v.oldest_age for v in load.values() if v.oldest_age is not None]
    per_minute = minutes(recent)
    window = [r for r in recent if r.ago < WINDOW_MINUTES * 60]
    failed = sum(1 for r in window if r.outcome != "succeeded")
    return {
        "status": doc,
        "oldest_queued_age": max(ages) if ages else None,
        "throughput": per_minute,
        "finished_in_window": len(window),
        "failure_rate": failed / len(window) if window else None,
        "spark_done": sparkline([m["succeeded"] for m in per_minute]),
        "spark_failed": sparkline([m["failed"] for m in per_minute], "#e15759"),
    }


def nodes(app: App) -> dict[str, Any]:
    doc = collect(app)
    with transaction(app.store.engine) as conn:
        flying = panels.in_flight_by_node(conn, app.settings.cluster)
    for n in doc["nodes"]:
        n["in_flight"] = flying.get(n["id"], 0)
    return {"status": doc}


@dataclass
class Cell:
    """One partition on the map."""

    partition: int
    owner: str | None
    epoch: int
    colour: str
    backlog: int = 0
    oldest_age: float | None = None


def partition_map(app: App) -> dict[str, Any]:
    store = app.store
    owners = store.read_partitions()
    doc = collect(app)
    with transaction(store.engine) as conn:
        load = panels.partition_load(conn, store.dialect, app.settings.cluster)
    colours = owner_colours([n["id"] for n in doc["nodes"]], [o.owner for o in owners.values()])
    cells = []
    for p, row in sorted(owners.items()):
        here = load.get(p)
        cells.append(Cell(p, row.owner, row.epoch, colours.get(row.owner or "", "#dddddd"),
                          here.backlog if here else 0, here.oldest_age if here else None))
    legend = [(owner, colour, sum(1 for c in cells if c.owner == owner))
              for owner, colour in colours.items()]
    return {"status": doc, "cells": cells, "legend": legend}


def owner_colours(nodes_in_order: Sequence[str], owners: Sequence[str | None]) -> dict[str, str]:
    """A colour per owner, by registry order (stale nodes keep their place, so a survivor
    keeps its colour when another node dies); owners not in the registry after them. Only
    owners are named in the result."""
    ordered = list(dict.fromkeys([*nodes_in_order, *[o for o in owners if o is not None]]))
    owning = set(owners)
    return {owner: PALETTE[i % len(PALETTE)] for i, owner in enumerate(ordered)
            if owner in owning}


@dataclass
class TaskRow:
    name: str
    backlog: int = 0
    finished: int = 0
    failed: int = 0
    times: list[float] = field(default_factory=list)
    per_minute: list[int] = field(default_factory=lambda: [0] * WINDOW_MINUTES)

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.finished if self.finished else None

    def percentile(self, q: float) -> float | None:
        return percentile(self.times, q)

    @property
    def spark(self) -> str:
        return sparkline(self.per_minute)


def tasks(app: App) -> dict[str, Any]:
    store = app.store
    with transaction(store.engine) as conn:
        backlog = panels.backlog_by_task(conn, app.settings.cluster)
        recent = panels.recent_attempts(conn, store.dialect, app.settings.cluster)
    rows = {name: TaskRow(name) for name in sorted({*app.tasks, *backlog})}
    for name, n in backlog.items():
        rows[name].backlog = n
    for r in recent:
        row = rows.setdefault(r.task, TaskRow(r.task))
        row.finished += 1
        row.failed += r.outcome != "succeeded"
        if r.seconds is not None and r.outcome == "succeeded":
            row.times.append(r.seconds)
        minute = int(r.ago // 60)
        if minute < WINDOW_MINUTES:
            row.per_minute[WINDOW_MINUTES - 1 - minute] += 1
    return {"tasks": list(rows.values()), "sample": len(recent),
            "sample_cap": panels.RECENT_ATTEMPTS}


def find_jobs(app: App, f: JobFilter) -> list[JobRecord]:
    with transaction(app.store.engine) as conn:
        return panels.find_jobs(conn, app.store.dialect, app.settings.cluster, f)


def job(app: App, job_id: int) -> tuple[JobRecord, list[AttemptRecord]] | None:
    record = app.get_job(job_id)
    if record is None:
        return None
    return record, app.get_attempts(job_id)


def blocked(app: App) -> list[BlockedKey]:
    with transaction(app.store.engine) as conn:
        return panels.blocked_key_heads(conn, app.settings.cluster)


def snapshot(app: App) -> dict[str, Any]:
    """What the live stream sends each second: enough to tell that something changed."""
    store = app.store
    # A lower cap than status's: this runs every second per open page, and a change of a
    # finished count past it still shows in the queued and running counts.
    counts, _ = store.status_counts(SNAPSHOT_CAP)
    term = store.read_term()
    owners = store.read_partitions()
    nodes_ = store.list_nodes()
    live = sorted(n.node_id for n in nodes_ if n.age < app.settings.session_timeout)
    return {"jobs": counts, "term": term.term, "leader": term.leader, "nodes": live,
            "owners": {str(p): [o.owner, o.epoch] for p, o in sorted(owners.items())}}


def health(app: App) -> str:
    """``"ok"``, or the one-line reason the database does not answer."""
    with transaction(app.store.engine) as conn:
        panels.ping(conn)
    return "ok"


# -- numbers into shapes ---------------------------------------------------------------------


def minutes(recent: Sequence[RecentAttempt]) -> list[dict[str, int]]:
    """Attempts per minute over the window, oldest minute first."""
    counts: dict[int, dict[str, int]] = defaultdict(lambda: {"succeeded": 0, "failed": 0})
    for r in recent:
        minute = int(r.ago // 60)
        if minute < WINDOW_MINUTES:
            counts[minute]["succeeded" if r.outcome == "succeeded" else "failed"] += 1
    return [counts.get(m, {"succeeded": 0, "failed": 0}) for m in reversed(range(WINDOW_MINUTES))]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of ``values``; ``None`` for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def sparkline(values: Sequence[int], colour: str = "#4e79a7", width: int = 120,
              height: int = 24) -> str:
    """An inline SVG polyline of ``values`` (no script, no library)."""
    top = max(values, default=0) or 1
    step = width / max(1, len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} '
            f'{height}" role="img" aria-label="per minute: {", ".join(map(str, values))}">'
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'
            "</svg>")


def has_dead(app: App) -> bool:
    with transaction(app.store.engine) as conn:
        return panels.has_dead(conn, app.settings.cluster)
