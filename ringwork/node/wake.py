"""Waking the protocol thread's poll from other threads.

The protocol thread sleeps in ``zmq.Poller.poll``, which returns when a socket is readable or its
timeout ends. Two kinds of input are not sockets: commands the worker hands the node from its own
threads (``revoke_done``, ``begin_leave``, ``freeze``...) and the answers of referee calls
finishing on the pool thread. Without a wake-up each waited for the poll timeout: a revocation
confirmed by the worker was handed over, and a won term acted on, up to that long late. A
:class:`Wake` is a file descriptor registered in the same poller and signalled by every such
put: an ``eventfd`` where the OS has one (Linux), else a pipe.

Any thread may call :meth:`Wake.set`; only the protocol thread polls and calls :meth:`clear`;
:meth:`close` comes last, from whoever stops the node. ``set`` after ``close`` does nothing: the
descriptor number may already belong to another file, so it must never be written again.
"""

from __future__ import annotations

import contextlib
import os
import threading


class Wake:
    """A descriptor that becomes readable when any thread calls :meth:`set` (until cleared)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a set never races the close
        self._closed = False
        if hasattr(os, "eventfd"):
            self._read = self._write = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._eventfd = True
        else:
            self._read, self._write = os.pipe()  # not inherited by children (PEP 446)
            os.set_blocking(self._read, False)
            os.set_blocking(self._write, False)
            self._eventfd = False

    def fileno(self) -> int:
        """The descriptor to poll for reading."""
        return self._read

    def set(self) -> None:
        """Make the descriptor readable; cheap, and harmless if it already is."""
        with self._lock:
            if self._closed:
                return
            # Full (a pipe, or a counter near 2**64) means readable already: nothing to add.
            with contextlib.suppress(BlockingIOError):
                if self._eventfd:
                    os.eventfd_write(self._write, 1)
                else:
                    os.write(self._write, b"\x01")

    def clear(self) -> None:
        """Consume every pending signal. Call it before looking at what they announced, so a
        signal sent meanwhile stays pending for the next poll."""
        with self._lock, contextlib.suppress(BlockingIOError):
            if self._closed:
                return
            if self._eventfd:
                os.eventfd_read(self._read)  # resets the counter to zero
            else:
                while os.read(self._read, 4096):
                    pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._read)
            if self._write != self._read:
                os.close(self._write)
