"""``ringwork dashboard`` as users run it: it serves, and its bad input is one line."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.acceptance.dashboard_proc import running_dashboard
from tests.acceptance.test_cli import assert_one_line_error, ringwork

APP = "workers.example:app"
pytestmark = pytest.mark.slow


def test_serves_screens_and_healthz(tmp_path: Path) -> None:
    env = {"RINGWORK_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}
    with running_dashboard(APP, tmp_path, "--prefix", "/ops", env=env) as dash:
        assert dash.url.endswith("/ops")
        status, body = dash.get("/partitions")
        assert status == 200 and "Partition map" in body
        root = dash.url.removesuffix("/ops")
        dash.url = root
        assert dash.get("/healthz")[0] == 200
        assert dash.get("/ops/healthz")[0] == 200
        status, body = dash.get("/ops/jobs/424242")
        assert status == 404 and "no job 424242" in body
    log = dash.log.read_text()
    assert "Traceback" not in log


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ringwork("dashboard", APP, "--port", str(port),
                          db_url=f"sqlite:///{tmp_path / 'd.db'}", timeout=30)
    assert_one_line_error(result, f"port {port} is already in use")


def test_half_configured_auth_and_bad_prefix_are_one_line(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    assert_one_line_error(ringwork("dashboard", APP, "--prefix", "/a b", db_url=url),
                          "--prefix")
    monkeypatch.setenv("RINGWORK_DASHBOARD_USER", "ops")
    monkeypatch.delenv("RINGWORK_DASHBOARD_PASSWORD", raising=False)
    assert_one_line_error(ringwork("dashboard", APP, db_url=url),
                          "RINGWORK_DASHBOARD_PASSWORD is not set")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_it_with_exit_0(tmp_path: Path, sig: signal.Signals) -> None:
    env = {"RINGWORK_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"}
    with running_dashboard(APP, tmp_path, env=env) as dash:
        assert dash.get("/healthz")[0] == 200
        dash.popen.send_signal(sig)
        assert dash.popen.wait(15) == 0
    log = dash.log.read_text()
    assert "Traceback" not in log and "Aborted" not in log, log
