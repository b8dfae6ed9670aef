"""The app of the dashboard's browser test: the cluster tests' tasks, and two that fail while
a marker file exists (``payload["marker"]``), once (``max_attempts=1``: the first failure makes
the job dead), so the test can make dead jobs, remove the marker, and retry them to success.
``ledger`` is ordered and keeps its key blocked while dead (the ordered keys screen)."""

from __future__ import annotations

import os

from ringwork import App, Job
from tests.acceptance.cluster_app import build as build_cluster_app


def build(app: App) -> App:
    build_cluster_app(app)

    @app.task("flaky", max_attempts=1)
    def flaky(job: Job) -> None:
        if os.path.exists(job.payload["marker"]):
            raise RuntimeError(f"marker {job.payload['marker']} is still there")

    @app.task("ledger", ordered=True, block_key_on_dead=True, max_attempts=1)
    def ledger(job: Job) -> None:
        flaky(job)

    return app


app = build(App(cluster="acceptance", partitions=64))
