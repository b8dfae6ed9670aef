"""The app of the dashboard's browser test: the cluster tests' tasks, and one that fails while
a marker file exists (``payload["marker"]``), once (``max_attempts=1``: its first failure makes
it dead), so the test can make a dead job, remove the marker, and retry it to success."""

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

    return app


app = build(App(cluster="acceptance", partitions=64))
