"""The app a scale run's workers serve (``python -m bench.scale``): one no-op task, and the
partition count from ``SCALE_PARTITIONS`` (default 256) so one module serves every size.
The database comes from ``RINGWORK_DATABASE_URL``, set by the harness."""

from __future__ import annotations

import os

from ringwork import App, Job

app = App(cluster="rwscale", partitions=int(os.environ.get("SCALE_PARTITIONS", "256")))


@app.task("noop")
def noop(job: Job) -> None:
    """Nothing: a scale run measures the cluster, not the jobs."""
