"""A real worker's stderr: ``--log-format json`` makes every line (the node process's too) one
JSON object, a failed attempt a WARNING and the last one an ERROR, each with its traceback;
logfmt keeps one line per event and no traceback (in logfmt, a ``Traceback`` is a crash).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ringwork import App
from tests.support import wait_for

APP_TEXT = """
from ringwork import App
app = App(cluster="logs", partitions=4)

@app.task("boom", max_attempts=2)
def boom(job):
    raise RuntimeError(f"broken on attempt {job.attempt}")
"""


#: An app with a thread of its own at import: the worker spawns its node process, not forks.
THREADED = """
import threading, time
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
"""


def run_worker(tmp_path: Path, *flags: str, before: tuple[str, ...] = (),
               variables: dict[str, str] | None = None, threaded: bool = False) -> str:
    """Start a worker with ``flags`` (``before``: ahead of the command; ``variables`` in its
    environment), fail one job to death, stop it; its stderr."""
    (tmp_path / "logs_app.py").write_text(APP_TEXT + (THREADED if threaded else ""))
    url = f"sqlite:///{tmp_path / 'l.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGWORK_")}
    env.update(RINGWORK_DATABASE_URL=url, PYTHONPATH=str(tmp_path), **(variables or {}))
    made = subprocess.run([sys.executable, "-m", "ringwork.cli", "enqueue", "logs_app:app",
                           "boom", "--key", "k", "--json"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    (job_id,) = json.loads(made.stdout)
    app = App(cluster="logs", partitions=4, database_url=url)
    with (tmp_path / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringwork.cli", *before, "worker", "logs_app:app",
             "--retry-base",
             "0.05", "--retry-max", "0.1", *flags], env=env, cwd=tmp_path, stderr=err,
            stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: (j := app.get_job(job_id)) is not None and j.state == "dead", 60,
                     0.05, "the job dead")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            app.close()
    return (tmp_path / "stderr").read_text()


@pytest.mark.parametrize("where", ["after", "before", "variable", "spawned"])
def test_json_logs_of_a_real_worker(tmp_path: Path, where: str) -> None:
    flags = ("--log-format", "json")
    if where == "variable":  # what a container would set
        text = run_worker(tmp_path, variables={"RINGWORK_LOG_FORMAT": "json"})
    elif where == "before":
        text = run_worker(tmp_path, before=flags)
    else:  # spawned: the node process inherits no handler; it is told the format
        text = run_worker(tmp_path, *flags, threaded=where == "spawned")
    docs = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line
    assert all({"ts", "level", "event"} <= d.keys() for d in docs)
    failed = [d for d in docs if d["event"] == "job_failed"]
    assert [d["level"] for d in failed] == ["WARNING", "ERROR"], failed
    assert [d["attempt"] for d in failed] == [1, 2]  # fields as JSON values
    for d, n in zip(failed, (1, 2), strict=True):
        assert f"RuntimeError: broken on attempt {n}" in d["traceback"]
    # The node process's events (the partitions it was given) are JSON too.
    assert any(d["event"] == "partition_assigned" for d in docs), docs


def test_logfmt_logs_of_a_real_worker(tmp_path: Path) -> None:
    text = run_worker(tmp_path)
    failed = [line for line in text.splitlines() if "event=job_failed" in line]
    assert len(failed) == 2 and " WARNING " in failed[0] and " ERROR " in failed[1], text
    assert "Traceback" not in text and "event=partition_assigned" in text
