"""Starting the node's child process, and waiting for it: the worker's side.

Runs in the worker (the parent), on the thread that builds or starts a
:class:`~ringwork.node.process.NodeProcess` and, for :meth:`ChildProcess.wait`, on whichever
thread waits (the pipe's reader and the stopping thread may both; only one reaps).

A fork is cheap: no second import of zmq, SQLAlchemy and psycopg (~0.35 s of CPU and ~45 MB
here). It is only safe while this process runs one thread (a fork copies locks other threads
hold), so the runtime builds the node process before it starts any; a worker started inside a
program that already runs threads (a test, an embedding application) gets a fresh interpreter,
``python -m ringwork.node.child FD``, instead. Not multiprocessing's spawn: it re-runs the
caller's ``__main__``, which a library must never do to its user's program.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

from ringwork.coordinator import NODE_FAILED_EXIT
from ringwork.node.spec import NodeSpec

#: The module a spawned child runs (``python -m CHILD_MODULE FD``).
CHILD_MODULE = "ringwork.node.child"


class ChildProcess:
    """The child, however it was started."""

    pid: int
    method: str

    def wait(self, timeout: float) -> int | None:
        """The exit code once the child has exited (within ``timeout``), else None."""
        raise NotImplementedError

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class _Forked(ChildProcess):
    method = "fork"

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._code: int | None = None
        self._lock = threading.Lock()

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:  # two threads may wait; only one may reap
                if self._code is None:
                    try:
                        pid, status = os.waitpid(self.pid, os.WNOHANG)
                    except ChildProcessError:
                        pid, status = self.pid, 0
                    if pid:
                        self._code = os.waitstatus_to_exitcode(status)
                if self._code is not None:
                    return self._code
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)


class _Spawned(ChildProcess):
    method = "spawn"

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self._popen = popen

    def wait(self, timeout: float) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def may_fork() -> bool:
    """One thread only, counting threads started outside Python too (a BLAS pool, grpc, a zmq
    context an app made at import): a fork copies the locks of every other thread."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return True  # no /proc: Python's own count is all there is


def start_child(spec: NodeSpec) -> tuple[ChildProcess, Connection]:
    """Start the child for ``spec``; it and our end of the pipe to it (the spec already sent)."""
    # Imported here, not at the top: a spawned child runs ringwork.node.child as __main__,
    # so importing the package must not import that module too (runpy would run a copy).
    from ringwork.node.child import child_main

    ours, theirs = socket.socketpair()
    child: ChildProcess
    if may_fork():
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = NODE_FAILED_EXIT
            try:
                ours.close()
                child_main(Connection(theirs.detach()), spec)
            finally:
                os._exit(code)
        child = _Forked(pid)
    else:
        child = _Spawned(
            subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=False,
                # The same import path as ours: ringwork (and the app) may be importable
                # only through a sys.path entry this program added at run time.
                env={**os.environ, "PYTHONPATH": os.pathsep.join(
                    p or os.getcwd() for p in sys.path)},
            )
        )
    theirs.close()
    conn = Connection(ours.detach())
    if child.method == "spawn":
        with contextlib.suppress(OSError, ValueError):  # gone already: the reader sees its end
            conn.send(("spec", spec))
    return child, conn
