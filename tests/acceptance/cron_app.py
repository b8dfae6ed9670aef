"""The app of the periodic-task acceptance test: the cluster app plus a schedule every second."""

from __future__ import annotations

from ringwork import App, Job
from tests.acceptance.cluster_app import build as build_cluster_app
from tests.acceptance.cluster_app import record


def build(app: App) -> App:
    build_cluster_app(app)

    @app.periodic("beat", cron="* * * * * *", timezone="Europe/Berlin")
    def beat(job: Job) -> None:
        record("S", job)
        record("E", job)

    return app


app = build(App(cluster="acceptance", partitions=64))
