"""The node process's own side: build the cluster node, serve the worker's pipe, follow it.

Runs only in the child that :class:`ringwork.node.process.NodeProcess` starts (forked, or as
``python -m ringwork.node.child FD``: see :mod:`ringwork.node.spawn`); see
:mod:`ringwork.node.process` for why the node has a process of its own and what crosses the pipe.

Threads: the main thread serves the pipe, watches the parent and pushes snapshots; one
``ringwork-store`` thread runs the worker's job writes; the node's listener is called on its
protocol thread and pushes events; the node has its own threads besides (its protocol loop and
its referee calls). Sends on the pipe are serialized by ``_Child._lock``. Read across threads:
``revoking``, changed in place by the main thread and the protocol thread (one set operation
each, atomic under the GIL), and ``orphaned``, set by the main thread and read by the other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from ringwork.coordinator import NODE_FAILED_EXIT
from ringwork.errors import RingworkError
from ringwork.log import configure, has_output, log_event
from ringwork.node.curve import CurveKeys
from ringwork.node.driver import Node
from ringwork.node.spec import NodeSpec
from ringwork.store import Store
from ringwork.store.jobs import WORKER_GONE

#: How often the child checks on its parent and on the node's snapshot.
WATCH_INTERVAL = 0.02
#: How often the child sends the node's view (metrics) to the parent.
VIEW_INTERVAL = 1.0
#: The store methods the worker may run in the child (its job writes).
REMOTE_CALLS = frozenset({"exchange", "fail", "release_unknown", "abandon"})


def child_main(conn: Connection, spec: NodeSpec) -> None:
    """The child process: build the node, serve the pipe, follow the parent's fate."""
    # Signals are the parent's business: it stops us through the pipe (a terminal's Ctrl-C
    # reaches the whole process group, and the parent wants a clean leave, not a dead node).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not has_output():
        configure(spec.log_level, spec.log_format)  # spawned: nothing configured yet
    try:
        child = _Child(conn, spec)
    except Exception as exc:
        logging.getLogger("ringwork").exception("node process could not start")
        with contextlib.suppress(OSError, ValueError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        os._exit(NODE_FAILED_EXIT)
    code = child.serve()
    logging.shutdown()
    os._exit(code)


class _Child:
    """The node's side: one thread serves the pipe, watches the parent and pushes snapshots."""

    def __init__(self, conn: Connection, spec: NodeSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.parent = os.getppid()
        self._lock = threading.RLock()  # one message at a time; a snapshot with its send
        store = Store(spec.database_url, cluster=spec.cluster, partitions=spec.partitions,
                      migrate=False)  # the parent migrated before it asked us to start
        curve = CurveKeys.load(spec.curve_key_file) if spec.curve_key_file else None
        self.node = Node(store, spec.config, bind=spec.bind, advertise=spec.advertise,
                         curve=curve, pub_port=spec.pub_port, node_id=spec.node_id,
                         name=spec.node_id if spec.named else None,
                         retention=spec.retention, periodic=spec.periodic)
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
                    return NODE_FAILED_EXIT
                self._push_snapshot()
                now = time.monotonic()
                if now >= next_view:
                    next_view = now + VIEW_INTERVAL
                    self._push("view", self.node.view())
        except Exception as exc:  # never linger: say why, and let the parent exit too
            logging.getLogger("ringwork").exception("node process crashed")
            self._push("failed", f"{type(exc).__name__}: {exc}")
            return NODE_FAILED_EXIT
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
        # Its jobs keep their claims while our row is fresh (fenced by job): hand them back
        # now rather than leave them to the leader's sweep once the row is gone.
        try:
            back = self.store.abandon(self.spec.node_id, None, WORKER_GONE)
        except RingworkError as exc:
            log_event("hand_back_failed", logging.WARNING, node=self.spec.node_id, error=exc)
        else:
            log_event("jobs_handed_back", node=self.spec.node_id, jobs=len(back))
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
    """``python -m ringwork.node.child FD``: the first message on FD is the spec."""
    conn = Connection(fd)
    message = conn.recv()
    if message[0] != "spec":
        os._exit(NODE_FAILED_EXIT)
    child_main(conn, message[1])


def _stopped(pid: int) -> bool:
    """Is ``pid`` stopped (SIGSTOP, ptrace)? Linux only; elsewhere a pause goes unnoticed."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # The command name (field 2) is in parentheses and may hold spaces: the state follows it.
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3] in (b"T", b"t")


if __name__ == "__main__":
    _spawned_main(int(sys.argv[1]))
