"""``ringwork dashboard`` as a real process for acceptance tests: started on a free port
(``--port 0``; the URL comes from its ``event=dashboard_serving`` log line), waited for on
``/healthz``, killed by PID at the end."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Dashboard:
    popen: subprocess.Popen[bytes]
    log: Path
    url: str

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


@contextlib.contextmanager
def running_dashboard(app_spec: str, workdir: Path, *args: str,
                      env: dict[str, str] | None = None) -> Iterator[Dashboard]:
    log = workdir / f"dashboard-{len(list(workdir.glob('dashboard-*.log')))}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "ringwork.cli", "dashboard", app_spec, "--port", "0", *args],
            cwd=ROOT, env={**os.environ, "RINGWORK_LOG_LEVEL": "INFO", **(env or {})},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def serving() -> str | None:
            if popen.poll() is not None:
                raise AssertionError(f"dashboard exited {popen.returncode}:\n{log.read_text()}")
            found = re.search(r"event=dashboard_serving url=(\S+)", log.read_text())
            return found.group(1) if found else None

        url = wait_for(serving, 30, 0.05, "the dashboard to listen").rstrip("/")
        yield Dashboard(popen, log, url)
    finally:
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)
