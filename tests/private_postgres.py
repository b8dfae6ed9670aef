"""A private PostgreSQL server for tests that must restart or stop the database.

The shared server (127.0.0.1:5432) is used by everyone on the machine and must never be
restarted, so a test that needs a real server restart gets its own: ``initdb`` into a fresh
temporary directory, a free port on 127.0.0.1, its Unix socket in that directory (never the
system's ``/var/run/postgresql``), ``fsync=off`` (nothing here must survive a power cut; a
server crash or ``pg_ctl stop -m immediate`` still loses nothing, since the kernel keeps the
written pages). ``synchronous_commit`` stays on: with it off, an immediate stop forgets the last
commits the server acknowledged -- measured here: an acknowledged enqueue of 4 jobs was gone
after ``restart -m immediate``.
PostgreSQL refuses to run as root, so every server command runs as the ``postgres`` user
(``runuser``) when the test runs as root. :func:`private_postgres` always stops the server and
removes its directory, even when the test fails.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import wait_for


def _bindir() -> Path | None:
    """The newest installed server's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """One throw-away server; ``start``/``stop``/``restart`` drive ``pg_ctl``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ringwork-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}\n"
                f"{self.log()}"
            )

    def log(self) -> str:
        try:
            return self.logfile.read_text()[-4000:]
        except OSError:
            return ""

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        options = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "shared_buffers": "32MB",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in options.items())

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                  "start")
        wait_for(self.accepting, 30, 0.05, "the private PostgreSQL to accept connections")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-m", mode,
                  "-w", "-t", "60", "restart")
        wait_for(self.accepting, 30, 0.05, "the private PostgreSQL to accept connections")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def accepting(self) -> bool:
        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                 dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def refusing(self) -> bool:
        return not self.accepting()

    def remove(self) -> None:
        if self.running():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop("immediate")
        # A postmaster that would not stop is killed by the PID it wrote, nothing broader.
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().split()[0]), 9)
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private server; stopped and deleted on exit whatever happened."""
    bindir = _bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (/usr/lib/postgresql/N/bin) are not installed"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = PrivatePostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()
