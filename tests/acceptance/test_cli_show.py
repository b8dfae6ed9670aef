"""``ringwork jobs APP show ID``: the job, its result and its attempts (text within 80
columns, and ``--json``), from a real ``ringwork`` process."""

from __future__ import annotations

import json
from pathlib import Path

from ringwork.store import Store
from tests.acceptance.test_cli import APP, ringwork
from tests.support import own_all

NODE = "a-node-with-a-rather-long-name"


def test_show_prints_the_result_and_every_attempt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    job_id = int(ringwork("enqueue", APP, "greet", "--key", "k", db_url=url).stdout)
    with Store(url, cluster="example", partitions=64) as store:
        epochs = own_all(store, NODE)
        [job] = store.claim(NODE, epochs, 1)
        store.fail(NODE, job.id, job.token, "ValueError: " + "x" * 200 + "\nline two",
                   retry_delay=0.0)
        [job] = store.claim(NODE, epochs, 1)
        shown = ringwork("jobs", APP, "show", str(job_id), db_url=url)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[-1].split()[:2] == ["2", NODE[:13] + "…"]
        assert "running" in shown.stdout.splitlines()[-1]
        store.complete(NODE, [(job.id, job.token)], {job.id: '{"greeting": "hello"}'})

    shown = ringwork("jobs", APP, "show", str(job_id), db_url=url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert 'result: {"greeting": "hello"}' in lines
    table = lines[lines.index("history:") + 1:]
    assert [line.split()[0] for line in table] == ["#", "1", "2"]
    assert "failed" in table[1] and "ValueError: xxx" in table[1] and "line two" not in table[1]
    assert "succeeded" in table[2]
    assert all(len(line) <= 80 for line in table), table

    data = json.loads(ringwork("jobs", APP, "show", str(job_id), "--json", db_url=url).stdout)
    assert data["state"] == "succeeded" and data["result"] == {"greeting": "hello"}
    assert data["attempts"] == 2
    assert [(a["attempt"], a["node"], a["outcome"]) for a in data["history"]] == [
        (1, NODE, "failed"), (2, NODE, "succeeded")]
    assert data["history"][0]["error"].endswith("line two")
    assert data["history"][1]["finished_at"] >= data["history"][1]["started_at"]


def test_show_a_job_never_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    job_id = ringwork("enqueue", APP, "greet", "--key", "k", db_url=url).stdout.strip()
    shown = ringwork("jobs", APP, "show", job_id, db_url=url)
    assert shown.returncode == 0, shown.stderr
    assert "history: no attempt recorded" in shown.stdout and "result: None" in shown.stdout
    data = json.loads(ringwork("jobs", APP, "show", job_id, "--json", db_url=url).stdout)
    assert data["history"] == [] and data["result"] is None
