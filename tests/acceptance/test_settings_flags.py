"""The settings flags in real ``ringwork`` processes: a worker runs with them; bad values are one
line and a non-zero exit (issue 11, item 7)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_cli import (
    APP,
    assert_one_line_error,
    kill_group,
    ringwork,
    worker_process,
)
from tests.support import wait_for


@pytest.mark.parametrize(("args", "fragments"), [
    (("worker", APP, "--revoke-timeout", "-1"), ("--revoke-timeout", "must be a positive")),
    (("worker", APP, "--session-timeout", "nan"), ("--session-timeout", "finite")),
    (("worker", APP, "--session-timeout", "1"), ("session_timeout (1 s) must be at least",)),
    (("run", APP, "--processes", "2", "--retry-base", "x"), ("--retry-base", "not a valid")),
])
def test_bad_setting_flags_are_one_line(args: tuple[str, ...], fragments: tuple[str, ...],
                                        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert_one_line_error(ringwork(*args, db_url=url), *fragments)


def test_bad_setting_variable_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "RINGWORK_LOG_LEVEL": "WARNING", "RINGWORK_REVOKE_TIMEOUT": "-5",
           "RINGWORK_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = subprocess.run([sys.executable, "-m", "ringwork.cli", "worker", APP],
                            capture_output=True, text=True, env=env, timeout=60)
    assert_one_line_error(result, "RINGWORK_REVOKE_TIMEOUT", "must be a positive")


def test_a_worker_runs_with_the_new_flags(db_url: str, tmp_path: Path) -> None:
    from workers.example import app

    app.close()
    app.configure(database_url=db_url)
    ids = app.enqueue_many([{"task": "greet", "key": f"k{i}"} for i in range(5)])
    log = tmp_path / "worker.log"
    proc = worker_process(db_url, log, "--heartbeat-interval", "0.4", "--session-timeout", "2",
                          "--revoke-timeout", "20", "--retry-base", "0.1", "--retry-max", "1",
                          "--poll-interval", "0.5", "--db-backoff-max", "2")
    try:
        wait_for(lambda: all(app.get_job(i).state == "succeeded" for i in ids), 30,  # type: ignore[union-attr]
                 message="jobs done")
        proc.send_signal(signal.SIGTERM)
        # A stop may take up to revoke_timeout + leave_timeout when the node has lost touch
        # with a leader just then (a loaded CI machine, with a 2 s session): 20 s + 10 s here.
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        kill_group(proc)
        app.close()
