"""Everything that says "claimable jobs may exist" folded into one ``wake(partitions)``.

Sources: UDP nudges from enqueuers (:mod:`ringwork.wakeup`, SQLite), PostgreSQL LISTEN/NOTIFY,
retry timers (a failed job coming due), new partitions, and the poll backstop when nothing else
came. Each names the partitions it knows about, or none for "anywhere we own"; the pump then
claims only where new jobs may be (a claim costs an index probe per partition it looks at).

Thread: the worker's event loop only (the UDP socket and the LISTEN connection are registered
with it as readers); the blocking LISTEN connect runs on a daemon thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ringwork.errors import DatabaseError
from ringwork.log import log_event
from ringwork.wakeup import WakeReceiver

if TYPE_CHECKING:
    from ringwork.store import Store
    from ringwork.store.listen import Listener


class Kick:
    """An :class:`asyncio.Event` with a timeout for one waiter, that wakes it in one loop step.

    ``asyncio.wait_for(event.wait(), t)`` wraps the wait in a task, and a ``set()`` reaches the
    waiter only three loop iterations later; on the enqueue-to-start path every step counts.
    """

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[bool] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self, timeout: float) -> bool:
        """True once set (at once if already), False after ``timeout`` seconds."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(max(0.0, timeout), _resolve, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


class Wakeups:
    """Where claimable jobs may be (:attr:`maybe_more`, :attr:`hint`) and the pump's kick."""

    def __init__(self, node_id: str, backoff_max: float) -> None:
        self.node_id = node_id
        self.backoff_max = backoff_max
        self.kick = Kick()  # something for the pump to do (a wake-up, an outcome, a stop)
        self.maybe_more = True  # claimable jobs may exist (cleared by each claiming round)
        self.hint: set[int] | None = None  # ...in these partitions only (None: anywhere)
        self._receiver: WakeReceiver | None = None
        self._listening: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    def wake(self, partitions: set[int] | None = None) -> None:
        """New jobs may be claimable: in ``partitions`` (``None`` or empty: anywhere)."""
        self.want_more(partitions)
        self.kick.set()

    def want_more(self, partitions: set[int] | None = None) -> None:
        """Mark work as possible without kicking (the pump is running a round already)."""
        if not partitions:
            self.hint = None
        elif not self.maybe_more:
            self.hint = set(partitions)
        elif self.hint is not None:
            self.hint |= partitions
        self.maybe_more = True

    def wake_later(self, delay: float) -> None:
        """A retry comes due in ``delay`` s: be back for it on time, not at the next poll."""
        loop = asyncio.get_running_loop()
        self._timers.add(loop.call_later(delay, self._timer_fired))

    def _timer_fired(self) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {t for t in self._timers if t.when() > now}
        self.wake()

    # -- sources -----------------------------------------------------------------------------

    def listen_udp(self, receiver: WakeReceiver) -> None:
        self._receiver = receiver
        asyncio.get_running_loop().add_reader(receiver.sock.fileno(), self._on_datagram)

    def _on_datagram(self) -> None:
        assert self._receiver is not None
        partitions = self._receiver.drain()
        if partitions is not None:
            self.wake(partitions)  # an empty set means "all"

    def listen_postgres(self, store: Store, stopping: Callable[[], bool]) -> None:
        self._listening = asyncio.create_task(self._listen(store, stopping))

    async def _listen(self, store: Store, stopping: Callable[[], bool]) -> None:
        """LISTEN/NOTIFY, read on the loop; reconnects after an outage.

        The LISTEN socket is registered with the loop, so a notification wakes the pump directly
        (a listener thread handing it over with ``call_soon_threadsafe`` cost ~0.3 ms here).
        """
        loop = asyncio.get_running_loop()
        failures = 0
        while not stopping():
            try:
                listener = await _connect(store)
                if listener is None:
                    return
                try:
                    failures = 0
                    await self._read(listener)
                finally:
                    listener.close()
            except Exception as exc:
                failures += 1
                log_event("listen_failed", node=self.node_id, error=repr(exc))
                await asyncio.sleep(min(self.backoff_max, 0.1 * 2**failures))
            # Notifications sent while we were away are gone: look everywhere once.
            loop.call_soon(self.wake)

    async def _read(self, listener: Listener) -> None:
        """Wake the pump on every notification until the connection fails (then raise)."""
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[DatabaseError] = loop.create_future()
        fd = listener.fileno()

        def readable() -> None:
            try:
                notified = listener.poll()
            except DatabaseError as exc:
                loop.remove_reader(fd)
                if not lost.done():
                    lost.set_result(exc)
                return
            if notified:
                self.wake(notified)

        loop.add_reader(fd, readable)
        try:
            raise await lost
        finally:
            loop.remove_reader(fd)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._listening is not None:
            self._listening.cancel()
        if self._receiver is not None:
            asyncio.get_running_loop().remove_reader(self._receiver.sock.fileno())
            self._receiver.close()
            self._receiver = None


async def _connect(store: Store) -> Listener | None:
    """``store.listen()`` on a daemon thread: a connect that hangs must not hold up the exit
    (the loop's default executor is joined when ``asyncio.run`` ends)."""
    loop = asyncio.get_running_loop()
    connecting: asyncio.Future[Listener | None] = loop.create_future()

    def connect() -> None:
        try:
            listener = store.listen()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, connecting, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, connecting, listener, None)

    threading.Thread(target=connect, name="ringwork-listen", daemon=True).start()
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:  # stopping: close the connection once it is made
        connecting.add_done_callback(_close_listener)
        raise


def _settle(future: asyncio.Future[Listener | None], listener: Listener | None,
            exc: BaseException | None) -> None:
    if future.done():  # nobody waits any more: do not leak the connection
        if listener is not None:
            listener.close()
    elif exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(listener)


def _close_listener(connecting: asyncio.Future[Listener | None]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        listener = connecting.result()
        if listener is not None:
            listener.close()
