"""The cluster node in an OS process of its own, so no handler can starve the protocol.

Why a process: a handler thread that holds the GIL (a pure-Python busy loop, or a C extension
that never releases it) decides how often every other thread of the worker runs. With 32 such
threads the node thread got the interpreter so rarely that the leader could not renew its
authority in time, stepped down and was re-elected every few seconds. A thread cannot be given
priority over the GIL; a process can be scheduled by the kernel on its own. So the worker
(parent) keeps the claim loop, the handlers and the outcomes; the child runs the
:class:`~ringwork.node.Node` -- zmq sockets, protocol core, referee calls on its own database
connection -- and nothing else, and stays responsive however busy the parent is.

The two talk over one :func:`multiprocessing.Pipe`:

* parent -> child: ``start``, ``revoke_done``, ``leave``, ``stop``;
* parent -> child: the worker's job writes (``exchange``, ``fail``, ``release_unknown``), run
  by the child on its own connection and answered by id;
* child -> parent: the reply to ``start``, partition events, the claimable snapshot
  ``(partition -> epoch, deadline)`` (pushed before every event and whenever it changes), the
  node's view for metrics (once a second), and ``failed`` when the node can no longer work.

Why the job writes cross too: a transaction run by a thread that waits for the GIL behind 32
busy handlers holds its locks for seconds (each step of it waits for the interpreter again). On
SQLite that lock is the whole database's, so the node's own registry touch waited behind it and
the leader's authority lapsed all the same. Run by the child, a transaction takes as long as the
database needs; the parent's part is one message each way.

``claimable()`` in the parent answers from the last snapshot: the deadline is the lease (or the
leader's authority) on ``CLOCK_MONOTONIC``, which every process of the machine shares, so a
parent that reads a stale snapshot stops claiming no later than the child would have. The
database fences every claim anyway.

The child follows its parent's fate:

* parent stopped (SIGSTOP, a debugger): the child freezes its node too (it watches the
  parent's state in ``/proc``), so a paused worker is a paused member, as it was when the node
  was a thread: the leader moves its partitions and a resumed zombie is fenced;
* parent gone (kill -9, a crash): the child sees the pipe close (or, when a process the
  parent forked still holds the pipe, that it has been reparented), gives every partition back at
  once (a dead process has nothing in flight: its database connections closed with it) and
  exits -- the survivors take over without waiting out the session timeout;
* child gone (its loop died, the OOM killer): the parent's :meth:`NodeProcess.failure` says so,
  and the worker exits non-zero so that its supervisor restarts it.

Threads: in the parent, one reader thread (``ringwork-nodeproc``) consumes the pipe; the
snapshot it stores is read by the event loop (one attribute, replaced whole). In the child, the
main thread serves the pipe and watches the parent; the node has its own threads.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ringwork import errors
from ringwork.addresses import NEXT_PORT
from ringwork.coordinator import PartitionListener, new_node_id
from ringwork.errors import DatabaseUnavailable, RingworkError
from ringwork.log import log_event
from ringwork.protocol.config import ProtocolConfig

if TYPE_CHECKING:
    from ringwork.store import Store

#: How often the child checks on its parent and on the node's snapshot.
WATCH_INTERVAL = 0.02
#: How often the child sends the node's view (metrics) to the parent.
VIEW_INTERVAL = 1.0
#: Exit code of a child whose node loop died (and of a worker that loses its node).
EXIT_NODE_FAILED = 70
#: The store methods the worker may run in the child (its job writes).
REMOTE_CALLS = frozenset({"exchange", "fail", "release_unknown"})


@dataclass(frozen=True)
class NodeSpec:
    """Everything the child needs to build the node (picklable: it crosses a spawn too)."""

    database_url: str
    cluster: str
    partitions: int
    config: ProtocolConfig
    bind: str
    advertise: str | None
    curve_key_file: str | None
    pub_port: int
    node_id: str
    log_level: int


class NodeProcess:
    """A :class:`~ringwork.coordinator.Coordinator` whose node runs in a child process."""

    def __init__(
        self,
        store: Store,
        config: ProtocolConfig,
        *,
        bind: str = "tcp://127.0.0.1:*",
        advertise: str | None = None,
        curve_key_file: str | None = None,
        pub_port: int = NEXT_PORT,
        node_id: str | None = None,
    ) -> None:
        self.node_id = node_id or new_node_id()
        self.store = store
        self.config = config
        self.endpoint = ""
        self.pub_endpoint = ""
        self._spec = NodeSpec(
            database_url=store.url,
            cluster=store.cluster,
            partitions=store.partitions,
            config=config,
            bind=bind,
            advertise=advertise,
            curve_key_file=curve_key_file,
            pub_port=pub_port,
            node_id=self.node_id,
            log_level=logging.getLogger("ringwork").getEffectiveLevel(),
        )
        self._conn: Connection | None = None
        self._child: _Process | None = None
        self._send_lock = threading.Lock()
        self._replies: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._listener: PartitionListener | None = None
        self._snapshot: tuple[dict[int, int], float] = ({}, -1.0)
        self._view: dict[str, object] = {}
        self._failure: str | None = None
        self._stopping = False
        self._gone = False  # the reader has stopped: nothing more will be answered
        self._reader: threading.Thread | None = None
        self._calls: dict[int, Future[Any]] = {}
        self._call_ids = itertools.count()
        self.store_proxy = RemoteStore(self)
        if _may_fork():
            self._spawn()  # now, while the worker runs no thread of its own yet

    # -- Coordinator interface -----------------------------------------------------------------

    def start(self, listener: PartitionListener, wake_endpoint: str | None) -> None:
        """Start the child (once), then ask it to bind, register and join.

        Retried by the runtime while the database is down: the child stays up between tries,
        and re-raises the node's own error class here so the runtime's retry policy applies.
        """
        self._listener = listener
        if self._failure is not None:  # its one "gone" may have been taken by an earlier try
            raise RingworkError(f"cluster node could not start: {self._failure}")
        self.store.open()  # connect and migrate here: the child only checks the schema
        if self._child is None:
            self._spawn()
        self._send("start", wake_endpoint)
        reply = self._replies.get()
        if reply[0] == "started":
            self.endpoint, self.pub_endpoint = reply[1], reply[2]
            return
        if reply[0] == "start_failed":
            raise _error(reply[1], reply[2])
        raise RingworkError(f"cluster node could not start: {self._failure or reply}")

    def claimable(self) -> Mapping[int, int]:
        held, deadline = self._snapshot
        if self._failure is not None or time.monotonic() >= deadline:
            return {}
        return held

    def revoke_done(self, partitions: frozenset[int]) -> None:
        self._send("revoke_done", partitions)

    def begin_leave(self) -> None:
        self._send("leave")

    def stop(self) -> None:
        """Leave cleanly (the child bounds it), then make sure the child is gone."""
        self._stopping = True
        child = self._child
        if child is None:
            return
        self._send("stop", force=True)  # after a failure too: the child may still be alive
        budget = self.config.revoke_timeout + self.config.leave_timeout + 10.0
        if child.wait(budget) is None:
            log_event("node_process_killed", logging.WARNING, node=self.node_id)
            child.kill()
            child.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if self._conn is not None:
            self._conn.close()

    def failure(self) -> str | None:
        """Why this node can no longer work (its process died), or None."""
        return self._failure

    def view(self) -> dict[str, object]:
        """The node's last reported view (role, term, drop counters) for status and metrics."""
        return dict(self._view)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``store.name(*args, **kwargs)`` in the child; blocks (call it off the loop)."""
        future: Future[Any] = Future()
        call_id = next(self._call_ids)
        self._calls[call_id] = future
        if self._failure is not None or self._gone:
            self._calls.pop(call_id, None)
            raise DatabaseUnavailable(f"cluster node process is gone: {self._failure or 'stopped'}")
        self._send("call", call_id, name, args, kwargs)
        return future.result()

    # -- the parent's side of the pipe ---------------------------------------------------------

    def _spawn(self) -> None:
        """Start the child: a fork while we run one thread, else a fresh interpreter.

        A fork is cheap: no second import of zmq, SQLAlchemy and psycopg (~0.35 s of CPU and
        ~45 MB here). It is only safe while this process runs one thread (a fork copies locks
        other threads hold), so the runtime builds us before it starts any; a worker started
        inside a program that already runs threads (a test, an embedding application) gets a
        ``python -m ringwork.node_process`` instead. Not multiprocessing's spawn: it re-runs
        the caller's ``__main__``, which a library must never do to its user's program.
        """
        ours, theirs = socket.socketpair()
        if _may_fork():
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = EXIT_NODE_FAILED
                try:
                    ours.close()
                    _child_main(Connection(theirs.detach()), self._spec)
                finally:
                    os._exit(code)
            self._child = _Forked(pid)
            method = "fork"
        else:
            self._child = _Spawned(
                subprocess.Popen(
                    [sys.executable, "-m", "ringwork.node_process", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    start_new_session=False,
                    # The same import path as ours: ringwork (and the app) may be importable
                    # only through a sys.path entry this program added at run time.
                    env={**os.environ, "PYTHONPATH": os.pathsep.join(
                        p or os.getcwd() for p in sys.path)},
                )
            )
            method = "spawn"
        theirs.close()
        self._conn = Connection(ours.detach())
        if method == "spawn":
            self._send("spec", self._spec)
        self._reader = threading.Thread(target=self._read, name="ringwork-nodeproc", daemon=True)
        self._reader.start()
        log_event("node_process_started", node=self.node_id, pid=self._child.pid, method=method)

    def _send(self, *message: Any, force: bool = False) -> None:
        conn = self._conn
        if conn is None or (self._failure is not None and not force):
            return
        try:
            with self._send_lock:
                conn.send(message)
        except (OSError, ValueError):
            pass  # the reader sees the child's end and reports it

    def _read(self) -> None:
        """On the reader thread: apply what the child reports, until its end closes.

        Whatever ends it (the child's end closing, or a bug in applying a message), every
        caller waiting on it is answered: no job write and no ``start`` waits forever.
        """
        try:
            self._apply_messages()
        except Exception as exc:  # we can no longer hear the node: as good as gone
            logging.getLogger("ringwork").exception("reading from the node process failed")
            self._fail(f"reading from the node process failed: {type(exc).__name__}: {exc}")
        code = self._child.wait(5) if self._child is not None else None
        if not self._stopping or self._failure is not None:
            self._fail(self._failure or f"cluster node process exited (code {code})")
        self._gone = True  # before answering the callers: call() checks it after registering
        self._fail_calls(self._failure or "it exited while stopping")
        self._replies.put(("gone",))

    def _apply_messages(self) -> None:
        assert self._conn is not None
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "claimable":
                self._snapshot = (message[1], message[2])
            elif kind == "event":
                self._snapshot = (message[3], message[4])
                if self._listener is not None:
                    self._listener(message[1], message[2])
            elif kind == "result":
                future = self._calls.pop(message[1], None)
                if future is not None:
                    future.set_result(message[2])
            elif kind == "error":
                future = self._calls.pop(message[1], None)
                if future is not None:
                    future.set_exception(_error(message[2], message[3]))
            elif kind == "view":
                self._view = message[1]
            elif kind == "failed":
                self._fail(message[1])
            else:  # replies to start
                self._replies.put(message)

    def _fail(self, reason: str) -> None:
        if self._failure is not None:
            return
        self._failure = reason
        self._snapshot = ({}, -1.0)
        self._fail_calls(reason)
        log_event("node_failed", logging.ERROR, node=self.node_id, reason=reason)
        if self._listener is not None:
            try:
                self._listener("lost", frozenset(range(self._spec.partitions)))
            except Exception:  # the runtime checks failure() all the same
                logging.getLogger("ringwork").exception("reporting the lost partitions failed")

    def _fail_calls(self, reason: str) -> None:
        for call_id in list(self._calls):
            future = self._calls.pop(call_id, None)
            if future is not None:
                future.set_exception(DatabaseUnavailable(f"cluster node process is gone: {reason}"))


class RemoteStore:
    """The worker's job writes, run by the node process (see the module docstring for why)."""

    def __init__(self, node: NodeProcess) -> None:
        self._node = node

    def exchange(self, *args: Any, **kwargs: Any) -> Any:
        return self._node.call("exchange", *args, **kwargs)

    def fail(self, *args: Any, **kwargs: Any) -> Any:
        return self._node.call("fail", *args, **kwargs)

    def release_unknown(self, *args: Any, **kwargs: Any) -> Any:
        return self._node.call("release_unknown", *args, **kwargs)


def _may_fork() -> bool:
    """One thread only, counting threads started outside Python too (a BLAS pool, grpc, a zmq
    context an app made at import): a fork copies the locks of every other thread."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return True  # no /proc: Python's own count is all there is


class _Process:
    """The child, however it was started."""

    pid: int

    def wait(self, timeout: float) -> int | None:
        """The exit code once the child has exited (within ``timeout``), else None."""
        raise NotImplementedError

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class _Forked(_Process):
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


class _Spawned(_Process):
    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self._popen = popen

    def wait(self, timeout: float) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def _error(name: str, message: str) -> RingworkError:
    """The node's exception, re-made in the parent (only ringwork's own classes cross)."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, RingworkError):
        return cls(message)
    return RingworkError(message)


# -- the child ---------------------------------------------------------------------------------


def _child_main(conn: Connection, spec: NodeSpec) -> None:
    """The child process: build the node, serve the pipe, follow the parent's fate."""
    # Signals are the parent's business: it stops us through the pipe (a terminal's Ctrl-C
    # reaches the whole process group, and the parent wants a clean leave, not a dead node).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ringwork.log import configure

    if not logging.getLogger("ringwork").handlers:
        configure(spec.log_level)  # spawned: nothing configured yet
    try:
        child = _Child(conn, spec)
    except Exception as exc:
        logging.getLogger("ringwork").exception("node process could not start")
        with contextlib.suppress(OSError, ValueError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        os._exit(EXIT_NODE_FAILED)
    code = child.serve()
    logging.shutdown()
    os._exit(code)


class _Child:
    """The node's side: one thread serves the pipe, watches the parent and pushes snapshots."""

    def __init__(self, conn: Connection, spec: NodeSpec) -> None:
        from ringwork.node import CurveKeys, Node
        from ringwork.store import Store

        self.conn = conn
        self.spec = spec
        self.parent = os.getppid()
        self._lock = threading.RLock()  # one message at a time; a snapshot with its send
        store = Store(spec.database_url, cluster=spec.cluster, partitions=spec.partitions,
                      migrate=False)  # the parent migrated before it asked us to start
        curve = CurveKeys.load(spec.curve_key_file) if spec.curve_key_file else None
        self.node = Node(store, spec.config, bind=spec.bind, advertise=spec.advertise,
                         curve=curve, pub_port=spec.pub_port, node_id=spec.node_id)
        self.store = store
        self.started = False
        self.orphaned = False
        self.revoking: set[int] = set()
        self._last_snapshot: tuple[dict[int, int], float] | None = None
        self._stopper: threading.Thread | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringwork-store")

    def serve(self) -> int:
        next_view = 0.0
        try:
            while True:
                if self._stopper is not None and not self._stopper.is_alive():
                    return 0
                if self.conn.poll(WATCH_INTERVAL):
                    try:
                        message = self.conn.recv()
                    except (EOFError, OSError):
                        return self._orphaned()
                    self._handle(message)
                if os.getppid() != self.parent:
                    # Gone although the pipe is open: a process the worker forked (a handler's
                    # multiprocessing pool) holds its end, so no EOF will come. Reparented
                    # means dead.
                    return self._orphaned()
                if _stopped(self.parent):
                    self._wait_while_parent_stopped()
                if not self.started:
                    continue
                failure = self.node.failure()
                if failure is not None:
                    self._push("failed", failure)
                    return EXIT_NODE_FAILED
                self._push_snapshot()
                now = time.monotonic()
                if now >= next_view:
                    next_view = now + VIEW_INTERVAL
                    self._push("view", self.node.view())
        except Exception as exc:  # never linger: say why, and let the parent exit too
            logging.getLogger("ringwork").exception("node process crashed")
            self._push("failed", f"{type(exc).__name__}: {exc}")
            return EXIT_NODE_FAILED
        finally:
            self._writer.shutdown(wait=True)
            self.store.close()

    def _handle(self, message: tuple[Any, ...]) -> None:
        """Act on one command from the parent."""
        kind = message[0]
        if kind == "start":
            try:
                self.node.start(self._on_partitions, message[1])
            except RingworkError as exc:
                self._push("start_failed", type(exc).__name__, str(exc))
            else:
                self.started = True
                self._push("started", self.node.endpoint, self.node.pub_endpoint)
        elif kind == "call":
            self._writer.submit(self._call, *message[1:])
        elif kind == "revoke_done":
            self.revoking -= message[1]
            self.node.revoke_done(message[1])
        elif kind == "leave":
            self.node.begin_leave()
        elif kind == "stop" and self._stopper is None:
            # On a thread: the leave needs revoke confirmations that arrive on this pipe.
            self._stopper = threading.Thread(target=self.node.stop, name="ringwork-node-stop")
            self._stopper.start()

    def _call(self, call_id: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """On the store thread: one job write for the parent, answered by ``call_id``."""
        if name not in REMOTE_CALLS:
            self._push("error", call_id, "RingworkError", f"not a remote store call: {name}")
            return
        try:
            result = getattr(self.store, name)(*args, **kwargs)
        except RingworkError as exc:
            self._push("error", call_id, type(exc).__name__, str(exc))
        except Exception as exc:  # a bug: the parent must hear of it rather than wait forever
            logging.getLogger("ringwork").exception("store call %s failed", name)
            self._push("error", call_id, "RingworkError", f"{type(exc).__name__}: {exc}")
        else:
            try:
                self._push("result", call_id, result, deep=True)
            except Exception as exc:  # it could not be pickled: an answer all the same
                logging.getLogger("ringwork").exception("store call %s: result not sent", name)
                self._push("error", call_id, "RingworkError",
                           f"the result of {name} could not be sent: {type(exc).__name__}: {exc}")

    def _on_partitions(self, kind: str, partitions: frozenset[int]) -> None:
        """The node's listener (on its thread): forward, with the snapshot the event implies."""
        if kind == "revoked":
            if self.orphaned:  # nothing is in flight in a dead parent: hand over at once
                self.node.revoke_done(partitions)
                return
            self.revoking |= partitions
        with self._lock:  # taken and sent in one step: see _push_snapshot
            held, deadline = self._snapshot()
            self._push("event", kind, partitions, held, deadline)

    def _snapshot(self) -> tuple[dict[int, int], float]:
        return self.node.claimable_snapshot()

    def _push_snapshot(self) -> None:
        """Send the snapshot if it changed. Taken and sent under the send lock, as the node
        thread's events are: otherwise one taken before a revocation could be sent after the
        event that carried the newer one, and the parent, which keeps the last it got, would
        claim the revoked partition again after confirming it (a duplicate run on the next
        owner)."""
        with self._lock:
            snapshot = self._snapshot()
            if snapshot != self._last_snapshot:
                self._last_snapshot = snapshot
                self._push("claimable", *snapshot)

    def _push(self, *message: Any, deep: bool = False) -> None:
        """Send one message; ``deep``: it may nest as deep as a JSON payload can (the decoder
        takes up to the recursion limit, the pickler needs about twice as many frames)."""
        try:
            with self._lock:
                if not deep:
                    self.conn.send(message)
                    return
                limit = sys.getrecursionlimit()
                sys.setrecursionlimit(4 * limit)
                try:
                    self.conn.send(message)
                finally:
                    sys.setrecursionlimit(limit)
        except (OSError, ValueError):
            pass  # the parent is gone; serve() notices on its next read

    def _orphaned(self) -> int:
        """The parent died: give every partition back now, then leave."""
        self.orphaned = True
        if not self.started:
            return 0  # it never asked us to join (it failed before that): nothing to hand over
        log_event("worker_process_gone", logging.WARNING, node=self.spec.node_id,
                  parent=self.parent)
        if self.revoking:
            self.node.revoke_done(frozenset(self.revoking))
        self.node.stop()
        return 0

    def _wait_while_parent_stopped(self) -> None:
        """Freeze the node while the parent is stopped: a paused worker is a paused member."""
        self.node.freeze()
        log_event("node_frozen", logging.WARNING, node=self.spec.node_id, parent=self.parent)
        try:
            while _stopped(self.parent) and os.getppid() == self.parent:
                time.sleep(WATCH_INTERVAL)
        finally:
            self.node.thaw()
            log_event("node_thawed", node=self.spec.node_id)


def _spawned_main(fd: int) -> None:
    """``python -m ringwork.node_process FD``: the first message on FD is the spec."""
    conn = Connection(fd)
    message = conn.recv()
    if message[0] != "spec":
        os._exit(EXIT_NODE_FAILED)
    _child_main(conn, message[1])


def _stopped(pid: int) -> bool:
    """Is ``pid`` stopped (SIGSTOP, ptrace)? Linux only; elsewhere a pause goes unnoticed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # The command name (field 2) is in parentheses and may hold spaces: the state follows it.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state in (b"T", b"t")


if __name__ == "__main__":
    _spawned_main(int(sys.argv[1]))
