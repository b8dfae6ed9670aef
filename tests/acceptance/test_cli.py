"""The CLI as users run it: real ``ringwork`` subprocesses, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import wait_for

APP = "workers.example:app"
ROOT = Path(__file__).resolve().parents[2]


def ringwork(*args: str, db_url: str | None = None, timeout: float = 60,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RINGWORK_LOG_LEVEL": "WARNING"}
    env.pop("RINGWORK_DATABASE_URL", None)
    if db_url:
        env["RINGWORK_DATABASE_URL"] = db_url
    return subprocess.run([sys.executable, "-m", "ringwork.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_commands() -> None:
    result = ringwork("--help")
    assert result.returncode == 0
    for command in ("worker", "enqueue", "jobs", "db", "demo"):
        assert command in result.stdout


def test_unimportable_app(tmp_path: Path) -> None:
    assert_one_line_error(ringwork("worker", "no_such_module:app", cwd=tmp_path),
                          "cannot import 'no_such_module'")
    assert_one_line_error(ringwork("worker", "ringwork.demo_app:nothing", cwd=tmp_path),
                          "is not a ringwork App")
    assert_one_line_error(ringwork("enqueue", "justamodule", "t", "--key", "k", cwd=tmp_path),
                          "MODULE:APP")


def test_unknown_task_and_bad_payload(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert_one_line_error(ringwork("enqueue", APP, "nope", "--key", "k", db_url=url),
                          "unknown task 'nope'")
    assert_one_line_error(ringwork("enqueue", APP, "greet", "--key", "k", "--payload", "{bad",
                                   db_url=url), "not valid JSON")


@pytest.mark.parametrize("url", [
    "notaurl",
    "mysql+nosuchdriver://x/y",
    "postgresql+psycopg://postgres@127.0.0.1:1/nothing",
    "sqlite:////nonexistent-dir/sub/x.db",
])
def test_bad_database_urls(url: str) -> None:
    assert_one_line_error(ringwork("enqueue", APP, "greet", "--key", "k", "--database-url", url))


def test_partition_count_mismatch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    (tmp_path / "other.py").write_text(
        "from ringwork import App\n"
        "app = App(cluster='example', partitions=32)\n"
        "@app.task('greet')\n"
        "def greet(job):\n    pass\n"
    )
    assert ringwork("enqueue", APP, "greet", "--key", "k", db_url=url).returncode == 0
    assert_one_line_error(ringwork("enqueue", "other:app", "greet", "--key", "k", db_url=url,
                                   cwd=tmp_path), "64", "32")


def test_enqueue_list_show_cancel_retry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = ringwork("enqueue", APP, "greet", "--key", "user-{i}", "--payload", '{"n": 1}',
                      "--count", "3", "--delay", "3600", db_url=url)
    assert result.returncode == 0, result.stderr
    ids = [int(x) for x in result.stdout.split()]
    assert len(ids) == 3
    listed = ringwork("jobs", APP, "list", "--json", db_url=url)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {r["id"] for r in rows} == set(ids)
    assert {r["key"] for r in rows} == {"user-0", "user-1", "user-2"}
    assert ringwork("jobs", APP, "cancel", str(ids[0]), db_url=url).returncode == 0
    shown = json.loads(ringwork("jobs", APP, "show", str(ids[0]), "--json", db_url=url).stdout)
    assert shown["state"] == "cancelled" and shown["payload"] == {"n": 1}
    assert_one_line_error(ringwork("jobs", APP, "cancel", str(ids[0]), db_url=url))
    assert ringwork("jobs", APP, "retry", str(ids[0]), db_url=url).returncode == 0
    shown = json.loads(ringwork("jobs", APP, "show", str(ids[0]), "--json", db_url=url).stdout)
    assert shown["state"] == "queued"
    assert_one_line_error(ringwork("jobs", APP, "show", "999999", db_url=url), "no job 999999")
    table = ringwork("jobs", APP, "list", db_url=url)
    assert table.returncode == 0 and "greet" in table.stdout


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert ringwork("db", "current", "--database-url", url).stdout.startswith("none")
    upgraded = ringwork("db", "upgrade", APP, "--database-url", url)
    assert upgraded.returncode == 0, upgraded.stderr
    head = ringwork("db", "current", "--database-url", url).stdout.strip()
    assert head and head in upgraded.stdout


def test_no_migrate_refuses_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert_one_line_error(ringwork("enqueue", APP, "greet", "--key", "k", "--no-migrate",
                                   db_url=url))


def worker_process(db_url: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RINGWORK_DATABASE_URL": db_url, "RINGWORK_EXAMPLE_LOG": str(log.parent)}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ringwork.cli", "worker", APP, *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_sigterm_finishes_in_flight_jobs_and_exits_zero(db_url: str, tmp_path: Path) -> None:
    from workers.example import app

    app.close()
    app.configure(database_url=db_url)
    ids = app.enqueue_many([{"task": "greet", "key": f"k{i}", "payload": {"sleep": 1.0}}
                            for i in range(4)])
    log = tmp_path / "worker.log"
    proc = worker_process(db_url, log, "--concurrency", "4")
    try:
        wait_for(lambda: all(app.get_job(i).state == "running" for i in ids), 30,  # type: ignore[union-attr]
                 message="jobs running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        assert all(app.get_job(i).state == "succeeded" for i in ids)  # type: ignore[union-attr]
        assert "event=worker_stopped" in log.read_text()
    finally:
        kill_group(proc)
        app.close()


def test_second_signal_exits_at_once_and_jobs_are_requeued(db_url: str, tmp_path: Path) -> None:
    from workers.example import app

    app.close()
    app.configure(database_url=db_url)
    job_id = app.enqueue("greet", "k", {"sleep": 60})
    log = tmp_path / "worker.log"
    proc = worker_process(db_url, log, "--grace", "60")
    try:
        wait_for(lambda: app.get_job(job_id).state == "running", 30)  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "event=worker_stopping" in log.read_text(), 10,
                 message="first signal handled")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) != 0
        assert time.monotonic() - started < 5
    finally:
        kill_group(proc)
    # The next owner re-queues the abandoned job through the epoch rule and runs it again.
    next_proc = worker_process(db_url, tmp_path / "next.log")
    try:
        wait_for(lambda: (r := app.get_job(job_id)) is not None and r.attempts == 2, 30,
                 message="job re-claimed by the next owner")
    finally:
        kill_group(next_proc)
        app.close()


def ringwork_into_closed_pipe(*args: str, db_url: str,
                              tmpdir: Path) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader is already gone, as ``ringwork ... | head -1`` is
    once head has exited: the first write fails with EPIPE (deterministic, no race with head)."""
    env = {**os.environ, "RINGWORK_LOG_LEVEL": "WARNING", "RINGWORK_DATABASE_URL": db_url,
           "TMPDIR": str(tmpdir)}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "ringwork.cli", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    finally:
        os.close(write_end)


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """Issue 10, bug 6: ``ringwork jobs APP list --json | head -1`` printed ``Error: internal
    error: BrokenPipeError``. Every printing command now ends as Unix tools do: no traceback, no
    error line, exit 141 (128 + SIGPIPE)."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    done = ringwork("enqueue", APP, "greet", "--key", "k{i}", "--count", "3", "--delay", "3600",
                    db_url=url)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[0]
    commands = [
        ("jobs", APP, "list", "--json"), ("jobs", APP, "list"), ("jobs", APP, "show", job_id),
        ("jobs", APP, "show", job_id, "--json"), ("jobs", APP, "cancel", job_id),
        ("jobs", APP, "retry", job_id), ("enqueue", APP, "greet", "--key", "k"),
        ("status", APP), ("status", APP, "--json"), ("status", APP, "--json", "--watch"),
        ("db", "current"), ("db", "upgrade", APP), ("keys", "-o", str(tmp_path / "k.key")),
        ("--help",), ("jobs", APP, "list", "--help"), ("--version",),
        ("demo", "--jobs", "10", "--processes", "1"),
    ]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    for command in commands:
        result = ringwork_into_closed_pipe(*command, db_url=url, tmpdir=tmpdir)
        assert result.stderr == "" and result.returncode == 141, (command, result)
    assert not list(tmpdir.iterdir())  # the demo cleaned up after itself


@pytest.mark.parametrize("command", [
    ("jobs", "x:y", "list"), ("jobs", "x:y", "show"), ("jobs", "x:y", "retry"),
    ("jobs", "x:y", "cancel"), ("jobs", "x:y"), ("worker", "x:y"), ("enqueue", "x:y", "t"),
    ("status", "x:y"), ("run", "x:y"), ("db", "upgrade", "x:y"), ("db", "current", "x:y"),
])
def test_help_never_imports_the_app(command: tuple[str, ...], tmp_path: Path) -> None:
    """Issue 10, bug 7: ``ringwork jobs x:y list --help`` failed with ``cannot import 'x'``."""
    (tmp_path / "x.py").write_text("raise SystemExit('x was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's ringwork, from tmp_path
    result = subprocess.run([sys.executable, "-m", "ringwork.cli", *command, "--help"],
                            capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result
    assert result.stdout.startswith("Usage: ") and "--help" in result.stdout, result.stdout
