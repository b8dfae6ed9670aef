"""The node's calls to the referee (the database), made off the protocol thread.

A slow or unreachable database must never stall heartbeats, so every referee operation the core
asks for runs on one pool thread (``ringwork-ref``) through :func:`ringwork.protocol.operations
.perform`, the one place that knows their order; its answer is fed back to the core as an event.
One thread keeps them in the order the core issued them. Each finished call wakes the protocol
thread at once (:class:`~ringwork.node.wake.Wake`), so the core acts on an answer when it
arrives, not when the poll times out.

Threads: :meth:`RefereeCalls.perform`, :meth:`refresh`, :meth:`record_joined`, :meth:`touch` and
:meth:`answers` are called by the protocol thread (and once by :meth:`Node.start
<ringwork.node.driver.Node.start>` before it exists); the calls run on the pool thread;
:meth:`shutdown` comes from whoever stops the node, after the protocol thread has ended.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ringwork.errors import RingworkError
from ringwork.faults import FaultLog, reason_of
from ringwork.node.registry import SqlRegistry
from ringwork.node.wake import Wake
from ringwork.protocol import events as ev
from ringwork.protocol.operations import perform

if TYPE_CHECKING:
    from ringwork.store import Store


class RefereeCalls:
    """Referee operations on a pool thread; their answers, as events, for the protocol thread."""

    def __init__(
        self, node_id: str, store: Store, registry: SqlRegistry, wake: Wake, faults: FaultLog
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.registry = registry
        self._wake = wake
        self._faults = faults  # failures of a call, or of its handling: counted, survived
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringwork-ref")
        self._pending: list[Future[ev.Event | None]] = []
        #: A registry re-read is under way: set by the protocol thread, cleared by the pool's.
        self._refreshing = False

    def perform(self, action: ev.RefereeAction) -> None:
        """Run ``action``; its result (or :class:`~ringwork.protocol.events.RefereeFailed`)
        comes back from :meth:`answers`."""
        self._submit(self._perform, action)

    def refresh(self) -> None:
        """Re-read the registry (a peer newer than our last read), unless a read is under way."""
        if not self._refreshing:
            self._refreshing = True
            self._submit(self._refresh)

    def record_joined(self, member: bool) -> None:
        self._submit(self._record_joined, member)

    def touch(self) -> None:
        """Refresh our registry row outside the protocol (after the leave: see the driver)."""
        self._submit(self._touch)

    def answers(self) -> list[ev.Event]:
        """The events of the calls finished since the last look, in the order they were made."""
        done = [f for f in self._pending if f.done()]
        if not done:
            return []
        self._pending = [f for f in self._pending if not f.done()]
        events = []
        for future in done:
            try:
                event = future.result()
            except Exception as exc:  # one failed call is not fatal: the core times it out
                self._faults.record(reason_of("referee", exc), exc)
                continue
            if event is not None:
                events.append(event)
        return events

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, call: Callable[..., ev.Event | None], *args: object) -> None:
        future = self._pool.submit(call, *args)
        future.add_done_callback(lambda _: self._wake.set())
        self._pending.append(future)

    def _perform(self, action: ev.RefereeAction) -> ev.Event:
        try:
            return perform(action, self.node_id, self.store, self.registry)
        except RingworkError as exc:  # not transient: still never kill the protocol thread
            return ev.RefereeFailed(op_id=action.op_id, error=str(exc))

    def _refresh(self) -> None:
        try:
            self.registry.read_nodes()
        except RingworkError:
            pass  # the next poll refreshes it
        finally:
            self._refreshing = False

    def _touch(self) -> None:
        # A failure is survived: the next one may get through; a stale row only re-queues our
        # jobs (whose late outcomes are then refused).
        with contextlib.suppress(RingworkError):
            self.registry.touch(self.node_id)

    def _record_joined(self, member: bool) -> None:
        self.registry.record_joined(self.node_id, member)
