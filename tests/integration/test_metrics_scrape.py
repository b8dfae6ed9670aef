"""A real worker's ``/metrics`` after it ran jobs: histograms, outcomes and gauges by task, the
owned partitions' backlog, and every name docs/metrics.md lists (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ringwork import App, Job
from tests.metrics_support import documented, family_name, scrape, value
from tests.support import running_worker, wait_for


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    app = App(database_url=db_url, partitions=4, cluster=cluster_name)
    app.configure(concurrency=4, poll_interval=5.0, retry_base=0.01, retry_max=0.05,
                  metrics_port=0)
    yield app
    app.close()


def test_scrape_after_jobs_ran(app: App) -> None:
    release = threading.Event()

    @app.task("ok")
    def ok(job: Job) -> None: ...

    @app.task("flaky", max_attempts=3)
    def flaky(job: Job) -> None:
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")

    @app.task("bad", max_attempts=1)
    def bad(job: Job) -> None:
        raise ValueError("always")

    @app.task("slow", concurrency=1)
    def slow(job: Job) -> None:
        release.wait(30)

    ids = [app.enqueue("ok", f"k{i}") for i in range(3)]
    ids += [app.enqueue("flaky", "f"), app.enqueue("bad", "b")]
    with running_worker(app) as worker:
        port = worker.metrics_port
        assert port is not None
        try:
            wait_for(lambda: all(app.get_job(i).finished for i in ids), 30,  # type: ignore[union-attr]
                     message="the jobs finished")
            slow_id = app.enqueue("slow", "s")

            def running_slow() -> dict | None:
                got = scrape(port)
                return got if value(got["ringwork_handlers_running"], "ringwork_handlers_running",
                                    task="slow") == 1 else None

            m = wait_for(running_slow, 30, message="the slow job running")
            outcomes = m["ringwork_job_outcomes"]
            expected = {("ok", "succeeded"): 3, ("flaky", "retried"): 1,
                        ("flaky", "succeeded"): 1, ("bad", "dead"): 1}
            for (task, outcome), n in expected.items():
                assert value(outcomes, "ringwork_job_outcomes_total", task=task,
                             outcome=outcome) == n, (task, outcome)
            runs = m["ringwork_job_run_seconds"]
            # One observation per attempt: ok 3, flaky 2, bad 1.
            for task, n in {"ok": 3, "flaky": 2, "bad": 1}.items():
                assert value(runs, "ringwork_job_run_seconds_count", task=task) == n, task
                assert value(runs, "ringwork_job_run_seconds_bucket", task=task, le="+Inf") == n
            waits = m["ringwork_job_queue_wait_seconds"]
            for task, n in {"ok": 3, "flaky": 2, "bad": 1, "slow": 1}.items():
                assert value(waits, "ringwork_job_queue_wait_seconds_count", task=task) == n, task
            db = m["ringwork_db_round_trip_seconds"]
            assert value(db, "ringwork_db_round_trip_seconds_count", call="fail") == 2
            claims = sum(value(db, "ringwork_db_round_trip_seconds_count", call=c) or 0
                         for c in ("claim", "complete_and_claim"))
            assert claims >= 1
            assert value(m["ringwork_jobs_in_flight"], "ringwork_jobs_in_flight") == 1
            assert value(m["ringwork_concurrency"], "ringwork_concurrency") == 4
            assert value(m["ringwork_task_concurrency"], "ringwork_task_concurrency",
                         task="slow") == 1
            assert value(m["ringwork_partitions_owned"], "ringwork_partitions_owned") == 4
            assert value(m["ringwork_rebalances"], "ringwork_rebalances_total",
                         kind="assigned") is not None
            moved = m["ringwork_rebalanced_partitions"]
            assert value(moved, "ringwork_rebalanced_partitions_total", kind="assigned") == 4
            backlog = m["ringwork_partition_backlog"]
            assert sorted(s.labels["partition"] for s in backlog) == ["0", "1", "2", "3"]
            # Nothing due once the slow job runs (a reading is cached for a second).
            wait_for(lambda: sum(s.value for s in scrape(port)["ringwork_partition_backlog"]) == 0,
                     30, interval=0.2, message="an empty backlog")

            # Every documented name is on the live scrape.
            missing = [n for n, kind in documented().items() if family_name(n, kind) not in m]
            assert not missing, f"documented but not exported: {missing}"
        finally:
            release.set()
        wait_for(lambda: app.get_job(slow_id).finished, 30,  # type: ignore[union-attr]
                 message="the slow job finished")


def test_backlog_of_owned_partitions_counts_due_jobs(app: App) -> None:
    gate = threading.Event()

    @app.task("block", concurrency=1)
    def block(job: Job) -> None:
        gate.wait(30)

    with running_worker(app) as worker:
        port = worker.metrics_port
        assert port is not None
        try:
            for i in range(5):
                app.enqueue("block", f"k{i}")

            def four_waiting() -> dict | None:
                got = scrape(port)
                due = sum(s.value for s in got["ringwork_partition_backlog"])
                return got if due == 4 else None

            m = wait_for(four_waiting, 30, interval=0.2, message="4 due jobs in the backlog")
            ages = [s.value for s in m["ringwork_partition_oldest_queued_seconds"]]
            assert max(ages) > 0
        finally:
            gate.set()
        wait_for(lambda: sum(s.value for s in scrape(port)["ringwork_partition_backlog"]) == 0,
                 30, interval=0.2, message="the backlog drained")
