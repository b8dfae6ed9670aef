"""``ringwork status --watch``: a live view that refreshes and ends cleanly on Ctrl-C (exit 0).

Run for real: on a pseudo-terminal (full screen: the alternate screen is entered and left), piped
(a frame per refresh), and with ``--json`` (a document per refresh). Each waits for two
refreshes, with a deadline, then sends SIGINT.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

APP_TEXT = """
from ringwork import App
app = App(cluster="watch", partitions=16)

@app.task("greet")
def greet(job):
    pass
"""
ENTER, LEAVE = "\x1b[?1049h", "\x1b[?1049l"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "watch_app.py").write_text(APP_TEXT)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RINGWORK_")}
    environ.update(RINGWORK_APP="watch_app:app", RINGWORK_LOG_LEVEL="WARNING",
                   RINGWORK_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}", COLUMNS="80",
                   LINES="40", TERM="xterm-256color", PYTHONPATH=str(tmp_path))
    made = subprocess.run([sys.executable, "-m", "ringwork.cli", "enqueue", "greet", "--key",
                           "k{i}", "--count", "5"], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return environ


def read_until(fd: int, done: Callable[[str], bool], timeout: float = 30.0) -> str:
    """Read ``fd`` until ``done(text so far)``; fail after ``timeout`` seconds."""
    text = ""
    deadline = time.monotonic() + timeout
    while not done(text):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; read so far:\n{text}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a pty's other end closed
                chunk = b""
            if not chunk:
                raise AssertionError(f"output ended; read so far:\n{text}")
            text += chunk.decode("utf-8", "replace")
    return text


def interrupt(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(env: dict[str, str], *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ringwork.cli", "status", "--watch",
                             "--interval", "0.2", *args], env=env, **kwargs)  # type: ignore


def test_on_a_terminal_it_is_full_screen_and_ctrl_c_leaves_it_with_exit_0(
        env: dict[str, str]) -> None:
    master, slave = pty.openpty()
    proc = start(env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        text = read_until(master, lambda t: ENTER in t and t.count("updated") >= 2)
        assert "partition map" in text and "throughput" in text
        assert "jobs/s finished" in text  # the second frame has a rate
        code = interrupt(proc)
        with contextlib.suppress(AssertionError):  # it may all have been read already
            text += read_until(master, lambda t: LEAVE in t, timeout=10)
    finally:
        os.close(master)
    assert code == 0
    assert LEAVE in text and "Traceback" not in text and "Aborted" not in text


def test_piped_it_prints_a_frame_per_refresh(env: dict[str, str]) -> None:
    proc = start(env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    text = read_until(proc.stdout.fileno(), lambda t: t.count("updated") >= 2)
    assert ENTER not in text and "partition map" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    code = interrupt(proc)
    errors = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert code == 0 and b"Traceback" not in errors, errors


def test_json_watch_prints_a_document_per_refresh(env: dict[str, str]) -> None:
    proc = start(env, "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    text = read_until(proc.stdout.fileno(), lambda t: t.count("\n") >= 2)
    docs = [json.loads(line) for line in text.splitlines()[:2]]
    assert all(d["cluster"] == "watch" and d["jobs"]["queued"] == 5 for d in docs)
    code = interrupt(proc)
    errors = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert code == 0 and b"Traceback" not in errors, errors
