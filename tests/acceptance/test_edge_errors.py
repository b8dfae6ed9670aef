"""Mistakes a user makes at the edge (addresses, ports, key files) end in one sentence that says
what to change: a one-line ``Error:``, a non-zero exit, never a traceback or ``internal error``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_cli import APP, assert_one_line_error, ringwork


@pytest.fixture
def held_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def worker(tmp_path: Path, *args: str) -> list[str]:
    return ["worker", APP, "--database-url", f"sqlite:///{tmp_path / 'x.db'}", *args]


@pytest.mark.parametrize(
    ("bind", "fragments"),
    [
        ("tcp://192.0.2.1:5999", ("192.0.2.1", "this host has no address", "--advertise")),
        ("foo", ("--bind must look like tcp://HOST:PORT",)),
        ("tcp://127.0.0.1:abc", ("the port must be 1-65535",)),
        ("tcp://127.0.0.1:70000", ("the port must be 1-65535",)),
        ("udp://127.0.0.1:7000", ("--bind must look like tcp://HOST:PORT",)),
        ("tcp://no-such-host.invalid:7000", ("cannot resolve host",)),
        ("tcp://127.0.0.1:65535", ("--pub-port",)),
    ],
)
def test_bad_bind_addresses(tmp_path: Path, bind: str, fragments: tuple[str, ...]) -> None:
    result = ringwork(*worker(tmp_path, "--bind", bind))
    assert_one_line_error(result, *fragments)
    assert "internal error" not in result.stderr


def test_bind_port_in_use(tmp_path: Path, held_port: int) -> None:
    result = ringwork(*worker(tmp_path, "--bind", f"tcp://127.0.0.1:{held_port}"))
    assert_one_line_error(result, f"port {held_port} is already in use", "choose another")


def test_pub_port_in_use(tmp_path: Path, held_port: int) -> None:
    result = ringwork(*worker(tmp_path, "--bind", "tcp://127.0.0.1:*", "--pub-port",
                              str(held_port)))
    assert_one_line_error(result, f"port {held_port} is already in use", "--pub-port")


def test_metrics_port_in_use(tmp_path: Path, held_port: int) -> None:
    result = ringwork(*worker(tmp_path, "--metrics-port", str(held_port)))
    assert_one_line_error(result, f"port {held_port} is already in use", "--metrics-port")


def test_curve_key_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    assert_one_line_error(ringwork(*worker(tmp_path, "--curve-key-file", str(missing))),
                          "does not exist", "ringwork keys -o FILE")
    assert_one_line_error(ringwork(*worker(tmp_path, "--curve-key-file", str(tmp_path))),
                          "is a directory")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("hello\n")
    assert_one_line_error(ringwork(*worker(tmp_path, "--curve-key-file", str(garbage))),
                          "is not a CURVE key file")


def test_keys_output_problems(tmp_path: Path) -> None:
    assert_one_line_error(ringwork("keys", "-o", str(tmp_path / "missing" / "dir" / "key")),
                          "does not exist (create it first)")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(ringwork("keys", "-o", str(a_file / "key")), "is a file")
    key = tmp_path / "cluster.key"
    assert ringwork("keys", "-o", str(key)).returncode == 0
    first = key.read_text()
    assert_one_line_error(ringwork("keys", "-o", str(key)), "already exists", "--force")
    assert key.read_text() == first  # an existing cluster key is never replaced by accident
    assert ringwork("keys", "-o", str(key), "--force").returncode == 0
    assert key.read_text() != first
    assert key.stat().st_mode & 0o777 == 0o600


def test_low_port_without_the_privilege(tmp_path: Path) -> None:
    """Ports below 1024 need CAP_NET_BIND_SERVICE; the tests run as root, so drop it."""
    import os
    import shutil
    import subprocess
    import sys

    setpriv = shutil.which("setpriv")  # util-linux, on every Debian
    assert setpriv, "setpriv (util-linux) is missing"
    argv = [sys.executable, "-m", "ringwork.cli", *worker(tmp_path, "--bind", "tcp://127.0.0.1:1")]
    if os.geteuid() == 0:
        argv = [setpriv, "--bounding-set", "-net_bind_service", *argv]
    env = {**os.environ, "RINGWORK_LOG_LEVEL": "WARNING"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert_one_line_error(result, "permission denied for port 1", "1024 or above")
