"""The dashboard's screens, auth, read-only mode, prefix and bad input, through Starlette's
TestClient, on SQLite and PostgreSQL. A cluster is staged in the store by hand (a leader owning
every partition, a registered node, jobs in each state), so no worker runs here."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from ringwork import App, Job
from ringwork.store import Store
from tests.support import own_all

NODE = "node-a"


@pytest.fixture
def app(db_url: str, cluster_name: str) -> Iterator[App]:
    a = App(database_url=db_url, cluster=cluster_name, partitions=8)

    @a.task("resize")
    def resize(job: Job) -> None: ...

    @a.task("ledger", ordered=True, block_key_on_dead=True, max_attempts=1)
    def ledger(job: Job) -> None: ...

    yield a
    a.close()


def _claim_one(store: Store, epochs: dict[int, int], task: str) -> Job:
    for job in store.claim(NODE, epochs, 50):
        if job.task == task:
            return job
    raise AssertionError(f"no {task} job to claim")


@pytest.fixture
def staged(app: App) -> dict[str, int]:
    """Jobs in every state a screen shows; their ids by name."""
    store = app.store
    store.register_node(NODE, "tcp://127.0.0.1:5000", concurrency=4, version="9.9.9")
    epochs = own_all(store, NODE)
    ids = {"dead": app.enqueue("ledger", key="acct-7", payload={"amount": 5})}
    ids["behind"] = app.enqueue("ledger", key="acct-7", payload={"amount": 6})
    dead = _claim_one(store, epochs, "ledger")
    assert dead.id == ids["dead"]
    store.fail(NODE, dead.id, dead.token, "Traceback (most recent call last):\nValueError: boom",
               retry_delay=None)
    ids["done"] = app.enqueue("resize", key="img-2", payload={})
    done = next(j for j in store.claim(NODE, epochs, 50) if j.id == ids["done"])
    store.complete(NODE, [(done.id, done.token)])
    ids["queued"] = app.enqueue("resize", key="img-1", payload={"secret": "s3cr3t-payload"})
    return ids


def client(app: App, **options: object) -> TestClient:
    return TestClient(app.dashboard(**options), raise_server_exceptions=False)


def test_overview_counts_leader_and_nodes(app: App, staged: dict[str, int]) -> None:
    page = client(app).get("/")
    assert page.status_code == 200
    assert 'data-count-dead="1"' in page.text
    assert 'data-count-succeeded="1"' in page.text
    assert NODE in page.text
    assert "leader" in page.text


def test_nodes_screen(app: App, staged: dict[str, int]) -> None:
    page = client(app).get("/nodes")
    assert page.status_code == 200
    assert NODE in page.text
    assert 'data-owned="8"' in page.text
    assert 'data-concurrency="4"' in page.text and "9.9.9" in page.text


def test_status_names_each_nodes_concurrency_and_version(app: App,
                                                         staged: dict[str, int]) -> None:
    from ringwork.status import collect

    (node,) = collect(app)["nodes"]
    assert (node["concurrency"], node["version"]) == (4, "9.9.9")


def test_partition_map_has_every_partition_and_owner(app: App, staged: dict[str, int]) -> None:
    page = client(app).get("/partitions")
    assert page.status_code == 200
    assert page.text.count('class="cell') == 8
    assert page.text.count(f'data-owner="{NODE}"') == 8


def test_tasks_screen(app: App, staged: dict[str, int]) -> None:
    page = client(app).get("/tasks")
    assert page.status_code == 200
    assert "resize" in page.text and "ledger" in page.text
    assert "<svg" in page.text


def test_jobs_filters(app: App, staged: dict[str, int]) -> None:
    c = client(app)
    dead = c.get("/jobs", params={"state": "dead"})
    assert f'data-job="{staged["dead"]}"' in dead.text
    assert f'data-job="{staged["queued"]}"' not in dead.text
    by_key = c.get("/jobs", params={"key": "img-1"})
    assert f'data-job="{staged["queued"]}"' in by_key.text
    assert f'data-job="{staged["done"]}"' not in by_key.text
    part = app.partition_for("img-2")
    by_partition = c.get("/jobs", params={"partition": str(part), "task": "resize"})
    assert f'data-job="{staged["done"]}"' in by_partition.text
    recent = c.get("/jobs", params={"since": "1h"})
    assert f'data-job="{staged["done"]}"' in recent.text
    bad = c.get("/jobs", params={"state": "sleeping"})
    assert bad.status_code == 400
    assert "Traceback" not in bad.text


def test_job_page_shows_attempts_and_traceback(app: App, staged: dict[str, int]) -> None:
    page = client(app).get(f"/jobs/{staged['dead']}")
    assert page.status_code == 200
    assert "ValueError: boom" in page.text
    assert NODE in page.text
    assert "&#34;amount&#34;: 5" in page.text or '"amount": 5' in page.text
    assert 'action="/jobs/' in page.text  # retry / cancel buttons


def test_blocked_keys_name_the_head_and_what_waits(app: App, staged: dict[str, int]) -> None:
    page = client(app).get("/keys")
    assert page.status_code == 200
    assert "acct-7" in page.text
    assert f'data-head="{staged["dead"]}"' in page.text


def test_retry_button_queues_a_dead_job(app: App, staged: dict[str, int]) -> None:
    c = client(app)
    answer = c.post(f"/jobs/{staged['dead']}/retry", follow_redirects=False)
    assert answer.status_code == 303
    record = app.get_job(staged["dead"])
    assert record is not None and record.state == "queued"
    # Once the retry succeeds, the old error is said to be an earlier attempt's.
    epochs = {p: o.epoch for p, o in app.store.read_partitions().items()}
    again = _claim_one(app.store, epochs, "ledger")
    app.store.complete(NODE, [(again.id, again.token)])
    page = c.get(f"/jobs/{staged['dead']}")
    assert "Last error (of an earlier attempt)" in page.text and "ValueError: boom" in page.text


def test_retry_of_a_job_that_is_not_dead_is_a_clear_409(app: App, staged: dict[str, int],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    answer = client(app).post(f"/jobs/{staged['queued']}/retry")
    assert answer.status_code == 409
    assert "only a dead or cancelled job can be retried" in answer.text
    assert "Traceback" not in answer.text
    assert "Traceback" not in caplog.text


def test_cancel_button(app: App, staged: dict[str, int]) -> None:
    answer = client(app).post(f"/jobs/{staged['queued']}/cancel", follow_redirects=False)
    assert answer.status_code == 303
    record = app.get_job(staged["queued"])
    assert record is not None and record.state == "cancelled"


def test_bulk_retry_of_dead_jobs(app: App, staged: dict[str, int]) -> None:
    answer = client(app).post("/jobs/retry-dead", data={"task": "ledger"},
                              follow_redirects=False)
    assert answer.status_code == 303  # a reload of the page that follows retries nothing
    page = client(app).get(answer.headers["location"])
    assert "queued 1 dead job again (task ledger)" in page.text
    assert app.store.counts_by_state()["dead"] == 0


def test_unknown_job_is_a_404_page(app: App, staged: dict[str, int]) -> None:
    page = client(app).get("/jobs/987654321")
    assert page.status_code == 404
    assert "no job 987654321" in page.text
    assert client(app).post("/jobs/987654321/retry").status_code == 404


def test_ids_and_partitions_out_of_range_are_clear(app: App, staged: dict[str, int]) -> None:
    c = client(app)
    for huge in ("9223372036854775808", "99999999999999999999999"):
        page = c.get(f"/jobs/{huge}")
        assert page.status_code == 404 and f"no job {huge}" in page.text
        assert c.post(f"/jobs/{huge}/retry").status_code == 404
    for bad in ("8", "99999999999999"):
        page = c.get("/jobs", params={"partition": bad})
        assert page.status_code == 400 and "partition must be 0-7" in page.text


def test_read_only_shows_no_buttons_and_refuses_posts(app: App, staged: dict[str, int]) -> None:
    c = client(app, read_only=True)
    page = c.get(f"/jobs/{staged['dead']}")
    assert page.status_code == 200
    assert "<button" not in page.text
    assert c.post(f"/jobs/{staged['dead']}/retry").status_code == 403
    assert c.post("/jobs/retry-dead").status_code == 403
    record = app.get_job(staged["dead"])
    assert record is not None and record.state == "dead"


def test_hide_payloads(app: App, staged: dict[str, int]) -> None:
    c = client(app, hide_payloads=True)
    for path in (f"/jobs/{staged['queued']}", "/jobs", "/"):
        assert "s3cr3t-payload" not in c.get(path).text
    assert "s3cr3t-payload" in client(app).get(f"/jobs/{staged['queued']}").text


def test_prefix_for_links_and_static_files(app: App, staged: dict[str, int]) -> None:
    c = client(app, prefix="/ops/rw")
    page = c.get("/ops/rw/partitions")
    assert page.status_code == 200
    assert 'href="/ops/rw/jobs"' in page.text
    assert '/ops/rw/static/dashboard.css' in page.text
    assert c.get("/ops/rw/static/dashboard.css").status_code == 200
    assert c.get("/ops/rw/static/dashboard.js").status_code == 200
    assert c.get("/healthz").status_code == 200


def test_mounted_in_a_users_starlette_app(app: App, staged: dict[str, int]) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/admin/jobs", app=app.dashboard())])
    page = TestClient(outer).get("/admin/jobs/nodes")
    assert page.status_code == 200
    assert 'href="/admin/jobs/partitions"' in page.text
    assert '/admin/jobs/static/dashboard.js' in page.text


def test_basic_auth(app: App, staged: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGWORK_DASHBOARD_USER", "ops")
    monkeypatch.setenv("RINGWORK_DASHBOARD_PASSWORD", "hunter2")
    c = client(app)
    missing = c.get("/")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic")
    wrong = c.get("/", auth=("ops", "wrong"))
    assert wrong.status_code == 401
    assert "wrong user name or password" in wrong.text
    garbled = c.get("/", headers={"Authorization": "Basic !!!"})
    assert garbled.status_code == 401
    assert c.get("/", auth=("ops", "hunter2")).status_code == 200
    token = base64.b64encode(b"ops:hunter2").decode()
    assert c.post(f"/jobs/{staged['dead']}/retry",
                  headers={"Authorization": f"Basic {token}"},
                  follow_redirects=False).status_code == 303
    assert c.get("/healthz").status_code == 200  # probes need no password


def test_healthz_checks_the_database(app: App, staged: dict[str, int]) -> None:
    answer = client(app).get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["database"] == "ok"


def test_healthz_on_an_unreachable_database() -> None:
    broken = App(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none", cluster="x")
    answer = TestClient(broken.dashboard(), raise_server_exceptions=False).get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["database"] != "ok"
    assert "Traceback" not in answer.text


def test_a_page_with_the_database_away_is_a_503_page(caplog: pytest.LogCaptureFixture) -> None:
    broken = App(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none", cluster="x")
    page = TestClient(broken.dashboard(), raise_server_exceptions=False).get("/partitions")
    assert page.status_code == 503
    assert "Database unavailable" in page.text
    assert "Traceback" not in page.text and "Traceback" not in caplog.text
    assert "event=dashboard_error" in caplog.text


def test_events_stream_sends_a_snapshot(app: App, staged: dict[str, int]) -> None:
    answer = client(app).get("/events", params={"limit": "1"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    data = [line[5:] for line in answer.text.splitlines() if line.startswith("data:")]
    snapshot = json.loads(data[0])
    assert snapshot["jobs"]["dead"] == 1
    assert len(snapshot["owners"]) == 8


def test_the_app_module_does_not_import_the_web_stack() -> None:
    code = ("import sys, ringwork.app, ringwork.worker, ringwork.cli; "
            "print(sorted(m for m in ('starlette', 'jinja2', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lag_counts_due_jobs_only(app: App) -> None:
    from ringwork.store import panels
    from ringwork.store.engine import transaction

    later = app.enqueue("resize", key="img-9", delay=3600)
    part = app.partition_for("img-9")
    with transaction(app.store.engine) as conn:
        load = panels.partition_load(conn, app.store.dialect, app.settings.cluster)
    assert load[part].backlog == 1 and load[part].oldest_age is None, later
    app.enqueue("resize", key="img-9")
    with transaction(app.store.engine) as conn:
        load = panels.partition_load(conn, app.store.dialect, app.settings.cluster)
    assert load[part].backlog == 2
    age = load[part].oldest_age
    assert age is not None and 0 <= age < 60
