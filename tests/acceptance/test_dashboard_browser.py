"""The dashboard in a real browser: Playwright driving Debian's chromium against a 3-node
cluster of real ``ringwork worker`` processes and a ``ringwork dashboard`` process.

It checks that the partition map shows three owners, that it changes by itself (server-sent
events) when a node is killed with SIGKILL, and that a dead job retried with its button runs
again and succeeds. Screenshots of every screen go to ``$RINGWORK_TEST_ARTIFACTS/dashboard/``
(default: ``test-artifacts/`` at the top of the checkout, which git ignores).

Chromium comes from Debian (``.ci/run`` installs it); ``playwright install`` is never used.
Missing chromium skips this test on a developer's machine and fails it under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.cluster import ROOT, Cluster
from tests.acceptance.dashboard_app import build
from tests.acceptance.dashboard_proc import running_dashboard
from tests.support import wait_for

pytestmark = pytest.mark.slow

SPEC = "tests.acceptance.dashboard_app:app"
CHROMIUM = os.environ.get("RINGWORK_TEST_CHROMIUM", "/usr/bin/chromium")
USER, PASSWORD = "ops", "correct horse"
PARTITIONS = 12


def artifacts(dialect: str) -> Path:
    root = Path(os.environ.get("RINGWORK_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder = root / "dashboard" / dialect
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failure.png").unlink(missing_ok=True)  # an earlier run's
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        message = f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(message + " (CI=true: the browser test must run)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, cluster_name, tmp_path, partitions=PARTITIONS, app_spec=SPEC,
                app_build=build)
    yield c
    c.close()


def states(cluster: Cluster, *ids: int) -> list[str | None]:
    return [r.state if (r := cluster.app.get_job(i)) else None for i in ids]


def owners_shown(page: Any) -> int:
    return int(page.eval_on_selector_all("[data-legend-owner]", "els => els.length"))


def test_dashboard_in_a_browser(cluster: Cluster, browser: Any, db_url: str,
                                tmp_path: Path) -> None:
    shots = artifacts("postgresql" if db_url.startswith("postgresql") else "sqlite")
    procs = cluster.start(3)
    before = cluster.wait_balanced(procs)
    # Some history for the tasks screen's percentiles and sparklines.
    cluster.wait_done(cluster.enqueue(60, keys=12, ms=5))
    env = {"RINGWORK_DATABASE_URL": cluster.db_url, "RINGWORK_CLUSTER": cluster.name,
           "RINGWORK_PARTITIONS": str(PARTITIONS), "RINGWORK_DASHBOARD_USER": USER,
           "RINGWORK_DASHBOARD_PASSWORD": PASSWORD}
    with running_dashboard(SPEC, tmp_path, env=env) as dash:
        context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                                      viewport={"width": 1280, "height": 900})
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))

        try:
            # The partition map: three owners, every partition coloured by one.
            page.goto(dash.url + "/partitions")
            assert owners_shown(page) == 3
            assert page.locator(".cell[data-owner='']").count() == 0
            assert page.locator(".cell").count() == PARTITIONS
            page.screenshot(path=str(shots / "01-partitions-3-nodes.png"), full_page=True)
            page.goto(dash.url + "/nodes")
            # Each worker recorded its concurrency (the default) and its version at registration.
            assert page.eval_on_selector_all(
                "[data-concurrency]", "els => els.map(e => e.dataset.concurrency)") == ["32"] * 3
            assert page.locator("[data-version='']").count() == 0
            for n, screen in enumerate(["", "/nodes", "/tasks", "/jobs", "/keys"], start=2):
                page.goto(dash.url + screen)
                name = screen.strip("/") or "overview"
                page.screenshot(path=str(shots / f"0{n}-{name}.png"), full_page=True)

            # Kill a follower: the map, left open, changes by itself to two owners.
            page.goto(dash.url + "/partitions")
            page.wait_for_selector("#live-state.on", timeout=15_000)
            victim = next(p for p in procs if f"-{p.pid}-" not in before["leader"])
            cluster.kill9(victim)
            page.wait_for_function(  # two owners, and every partition owned by one of them
                "() => document.querySelectorAll('[data-legend-owner]').length === 2"
                " && document.querySelectorAll(\".cell[data-owner='']\").length === 0",
                timeout=60_000)
            assert "moved" in page.inner_text(".feed")
            page.screenshot(path=str(shots / "07-partitions-after-kill9.png"), full_page=True)
            survivors = [p for p in procs if p is not victim]
            cluster.wait_balanced(survivors)

            # A dead job, retried with its button once its handler can succeed.
            marker = tmp_path / "fail-while-this-exists"
            marker.write_text("x")
            job_id = cluster.app.enqueue("flaky", key="f-1", payload={"marker": str(marker)})
            # An ordered key held by its dead head, a job waiting behind it.
            head, behind = (cluster.app.enqueue("ledger", key="acct-1",
                                                payload={"marker": str(marker), "n": n})
                            for n in (1, 2))
            wait_for(lambda: states(cluster, job_id, head) == ["dead", "dead"], 60, 0.1,
                     "the flaky jobs to die")
            page.goto(dash.url + "/keys")
            assert page.get_attribute("[data-head]", "data-head") == str(head)
            page.screenshot(path=str(shots / "11-keys-blocked.png"), full_page=True)
            page.goto(f"{dash.url}/jobs/{job_id}")
            assert page.get_attribute("#job-state", "data-state") == "dead"
            assert "is still there" in page.inner_text("main")
            page.screenshot(path=str(shots / "08-job-dead.png"), full_page=True)
            page.goto(dash.url + "/jobs?state=dead")
            page.screenshot(path=str(shots / "09-jobs-dead.png"), full_page=True)
            page.goto(f"{dash.url}/jobs/{job_id}")
            marker.unlink()
            page.click("#retry")
            page.wait_for_selector("text=Queued again.", timeout=15_000)
            wait_for(lambda: (r := cluster.app.get_job(job_id)) is not None
                     and r.state == "succeeded", 60, 0.1, f"job {job_id} to succeed")
            # The page, left open, shows it by itself.
            page.wait_for_selector("#job-state[data-state='succeeded']", timeout=30_000)
            page.screenshot(path=str(shots / "10-job-retried-succeeded.png"), full_page=True)

            # The bulk button retries the dead ledger job; the key moves on.
            page.goto(dash.url + "/jobs?state=dead")
            page.once("dialog", lambda dialog: dialog.accept())
            page.click("form.bulk button")
            page.wait_for_selector("text=queued 1 dead job again", timeout=15_000)
            wait_for(lambda: states(cluster, head, behind) == ["succeeded", "succeeded"], 60, 0.1,
                     "the ordered key's jobs to succeed")
        except Exception as exc:
            # What the browser saw, and every process's log, for whoever reads the failure.
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise AssertionError(f"{exc}\n--- page\n{page.inner_text('body')[-3000:]}\n"
                                 f"--- dashboard\n{dash.log.read_text()[-4000:]}\n"
                                 f"{cluster.logs()}") from exc

        # A wrong password is a 401 page, not the dashboard.
        intruder = browser.new_context(http_credentials={"username": USER, "password": "no"})
        answer = intruder.new_page().goto(dash.url + "/")
        assert answer is not None and answer.status == 401
        intruder.close()
        context.close()
        assert not problems, problems
    assert "Traceback" not in dash.log.read_text()
