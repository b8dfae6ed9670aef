"""What the commands print, from real ``ringwork`` processes: tables that fit 80 columns (cut
with an ellipsis, never one word a line) and ``--json`` wherever a table is printed.

Issue 13, item 5. The database holds a job with a long key and a long error, claimed by a node
with a long name, and the app a periodic task with a long name and timezone: what made the old
tables wrap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringwork.store import Store
from tests.support import own_all

NODE = "node-with-a-name-long-enough-to-push-every-column-around-" + "n" * 30
LONG_KEY = "customer/" + "k" * 120
LONG_TASK = "nightly_" + "t" * 60
APP_TEXT = f"""
from ringwork import App
app = App(cluster="output", partitions=8)

@app.task("greet")
def greet(job):
    pass

@app.periodic("{LONG_TASK}", cron="*/5 * * * *", timezone="America/Argentina/ComodRivadavia")
def nightly(job):
    pass
"""


def ringwork(cwd: Path, url: str, *args: str, columns: int = 80
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGWORK_")}
    env.update(RINGWORK_LOG_LEVEL="WARNING", RINGWORK_DATABASE_URL=url, COLUMNS=str(columns),
               RINGWORK_APP="output_app:app")
    env.pop("LINES", None)
    return subprocess.run([sys.executable, "-m", "ringwork.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=cwd)


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    """A working directory with the app, a database with one failed job; the job's id."""
    cwd = tmp_path_factory.mktemp("output")
    (cwd / "output_app.py").write_text(APP_TEXT)
    url = f"sqlite:///{cwd / 'x.db'}"
    enqueued = ringwork(cwd, url, "enqueue", "greet", "--key", LONG_KEY, "--json")
    assert enqueued.returncode == 0, enqueued.stderr
    (job_id,) = json.loads(enqueued.stdout)
    with Store(url, cluster="output", partitions=8) as store:
        epochs = own_all(store, NODE)
        store.register_node(NODE, "tcp://127.0.0.1:5999", pub_endpoint="tcp://127.0.0.1:6000")
        [job] = store.claim(NODE, epochs, 1)
        store.fail(NODE, job.id, job.token, "ValueError: " + "an error that goes on " * 20
                   + "\nsecond line", retry_delay=0.0)
    return cwd, url, job_id


TABLES = [("jobs", "list"), ("status",), ("cron",)]


@pytest.mark.parametrize("args", TABLES, ids=" ".join)
def test_tables_fit_80_columns_and_cut_long_values_with_an_ellipsis(
        place: tuple[Path, str, int], args: tuple[str, ...]) -> None:
    cwd, url, _ = place
    result = ringwork(cwd, url, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert "…" in result.stdout, result.stdout  # something long was cut, not wrapped
    # No line holding a lone fragment of a wrapped cell.
    assert not any(line.strip() in {"kkkkk", "tttt", "an", "error"} for line in lines)


def test_jobs_show_history_fits_80_columns(place: tuple[Path, str, int]) -> None:
    cwd, url, job_id = place
    result = ringwork(cwd, url, "jobs", "show", str(job_id))
    assert result.returncode == 0, result.stderr
    history = result.stdout.split("history:\n", 1)[1].splitlines()
    assert history and all(len(line) <= 80 for line in history)


def test_status_json(place: tuple[Path, str, int]) -> None:
    cwd, url, _ = place
    doc = json.loads(ringwork(cwd, url, "status", "--json").stdout)
    assert doc["cluster"] == "output" and any(n["id"] == NODE for n in doc["nodes"])


def test_jobs_list_json_lines(place: tuple[Path, str, int]) -> None:
    cwd, url, job_id = place
    rows = [json.loads(line) for line in ringwork(cwd, url, "jobs", "list", "--json")
            .stdout.splitlines()]
    assert [r["id"] for r in rows] == [job_id] and rows[0]["key"] == LONG_KEY


def test_jobs_show_json(place: tuple[Path, str, int]) -> None:
    cwd, url, job_id = place
    doc = json.loads(ringwork(cwd, url, "jobs", "show", str(job_id), "--json").stdout)
    assert doc["id"] == job_id and doc["history"][0]["outcome"] == "failed"


def test_cron_json(place: tuple[Path, str, int]) -> None:
    cwd, url, _ = place
    (row,) = json.loads(ringwork(cwd, url, "cron", "--json").stdout)
    assert row["task"] == LONG_TASK and row["next_run"]


def test_keys_json(place: tuple[Path, str, int], tmp_path: Path) -> None:
    cwd, url, _ = place
    result = ringwork(cwd, url, "keys", "-o", str(tmp_path / "k"), "--json")
    doc = json.loads(result.stdout)
    assert doc["path"] == str(tmp_path / "k") and len(doc["public_key"]) == 40


def test_json_from_the_variable(place: tuple[Path, str, int]) -> None:
    cwd, url, _ = place
    env_json = ringwork(cwd, url, "cron", "--json").stdout
    os.environ["RINGWORK_JSON"] = "1"
    try:
        env = {**os.environ, "RINGWORK_DATABASE_URL": url, "RINGWORK_APP": "output_app:app"}
        out = subprocess.run([sys.executable, "-m", "ringwork.cli", "cron"], env=env, cwd=cwd,
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        del os.environ["RINGWORK_JSON"]
    assert json.loads(out)[0]["task"] == json.loads(env_json)[0]["task"]
