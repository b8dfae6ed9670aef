"""Tracing off costs nothing: with OpenTelemetry installed but not set up by the application,
neither importing ringwork, nor enqueueing, nor a worker running a job imports it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys
    import ringwork, ringwork.app
    from ringwork import App, Job
    assert not [m for m in sys.modules if m.startswith("opentelemetry")], "on import"
    from tests.support import running_worker, wait_for

    app = App(database_url="sqlite:///{db}", partitions=2, cluster="off")
    app.configure(poll_interval=5.0)

    @app.task("t")
    def t(job: Job) -> None: ...

    with running_worker(app):
        job_id = app.enqueue("t", "k")
        wait_for(lambda: app.get_job(job_id).state == "succeeded", 30)
    with app.testing() as inline:
        app.enqueue("t", "k")
        inline.run_pending()
    app.close()
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
""")


def test_a_worker_and_an_enqueue_do_not_import_opentelemetry(tmp_path: Path) -> None:
    import importlib.util

    assert importlib.util.find_spec("opentelemetry") is not None  # installed: the real case
    script = SCRIPT.format(db=tmp_path / "off.db")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
