"""The cluster node in an OS process of its own, so no handler can starve the protocol.

Why a process: a handler thread that holds the GIL (a pure-Python busy loop, or a C extension
that never releases it) decides how often every other thread of the worker runs. With 32 such
threads the node thread got the interpreter so rarely that the leader could not renew its
authority in time, stepped down and was re-elected every few seconds. A thread cannot be given
priority over the GIL; a process can be scheduled by the kernel on its own. So the worker
(parent) keeps the claim loop, the handlers and the outcomes; the child runs the
:class:`~ringwork.node.driver.Node` -- zmq sockets, protocol core, referee calls on its own
database connection -- and nothing else, and stays responsive however busy the parent is.

The two talk over a socket pair (:class:`multiprocessing.connection.Connection` messages); the
child's side is :mod:`ringwork.node.child`, and :mod:`ringwork.node.spawn` starts it:

* parent -> child: ``start``, ``revoke_done``, ``leave``, ``stop``;
* parent -> child: the worker's job writes (``exchange``, ``fail``, ``release_unknown``,
  ``abandon``), run by the child on its own connection and answered by id;
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

Threads (in the worker): the child is started by the thread that builds the node process (or
starts it); one reader thread (``ringwork-nodeproc``) consumes the pipe; the snapshot, the view
and the failure it stores are read by any thread (each one attribute, replaced whole); commands
go out under a send lock from any thread; job writes are called from the worker's database
threads and answered through futures.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ringwork import errors
from ringwork.addresses import NEXT_PORT
from ringwork.coordinator import PartitionListener, new_node_id
from ringwork.errors import DatabaseUnavailable, RingworkError
from ringwork.log import current_format, log_event
from ringwork.node.spawn import ChildProcess, may_fork, start_child
from ringwork.node.spec import NodeSpec
from ringwork.periodic import Schedule
from ringwork.protocol.config import ProtocolConfig
from ringwork.store.retention import RetentionPolicy

if TYPE_CHECKING:
    from ringwork.store import Store


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
        name: str | None = None,
        retention: RetentionPolicy | None = None,
        periodic: Sequence[Schedule] = (),
    ) -> None:
        self.node_id = name or node_id or new_node_id()
        #: A named (static) member: see :class:`ringwork.node.driver.Node`.
        self.named = bool(name)
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
            named=self.named,
            log_level=logging.getLogger("ringwork").getEffectiveLevel(),
            log_format=current_format() or "logfmt",
            retention=retention,
            periodic=tuple(periodic),
        )
        self._conn: Connection | None = None
        self._child: ChildProcess | None = None
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
        if may_fork():
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
        """Start the child (forked while we run one thread, else spawned: see
        :mod:`ringwork.node.spawn`) and the thread that reads what it reports."""
        self._child, self._conn = start_child(self._spec)
        self._reader = threading.Thread(target=self._read, name="ringwork-nodeproc", daemon=True)
        self._reader.start()
        log_event("node_process_started", node=self.node_id, pid=self._child.pid,
                  method=self._child.method)

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
        # No log line here: the worker logs node_failed with this reason when it notices.
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

    def abandon(self, *args: Any, **kwargs: Any) -> Any:
        return self._node.call("abandon", *args, **kwargs)


def _error(name: str, message: str) -> RingworkError:
    """The node's exception, re-made in the parent (only ringwork's own classes cross)."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, RingworkError):
        return cls(message)
    return RingworkError(message)
