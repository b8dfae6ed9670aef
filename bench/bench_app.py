"""The app the benchmark workers run: a no-op task, as in workload W1."""

from ringwork import App, Job

app = App(cluster="bench", partitions=64)


@app.task("noop")
def noop(job: Job) -> None:
    """Does nothing: W1 measures per-job overhead (claim, dispatch, completion)."""
