"""The host's wall clock as the kernel keeps it, and how far this process's own clock is off it.

Why this exists: SQLite reads ``'now'`` inside the process that runs the statement, through
libc (its VFS calls ``gettimeofday``/``clock_gettime``). Every process on one host shares the
kernel's clock, but a process can be made to see another time at the libc level (``faketime``'s
``LD_PRELOAD`` interposer, and anything like it). Such a process would write SQLite timestamps
and judge ages against a clock of its own.
:func:`offset` says by how much SQLite's clock in this process differs from the kernel's, so
the SQLite statements can add it back (:func:`ringwork.store.clock.sqlite_clock`).

Where the kernel's time comes from (Linux; on other systems :func:`offset` is always 0):

* **precise**: ``clock_gettime(CLOCK_REALTIME)`` issued as a raw system call (x86_64, aarch64),
  which goes past libc and the vDSO and so past any ``LD_PRELOAD`` interposer. Nanoseconds.
* **coarse**, where the raw call is not available: ``btime`` from ``/proc/stat`` plus
  ``/proc/uptime``. Both are text the kernel computes when the file is read; an interposer of
  libc's time calls does not change them. ``btime`` is whole seconds (truncated), so the sum is
  up to 1 s behind the true time (we add 0.5 s). Used only while ``/proc/uptime`` agrees with
  ``CLOCK_BOOTTIME`` to a second: a container runtime that rewrites ``/proc/uptime`` (lxcfs
  shows the container's) or a faker that moves the monotonic clocks too makes it unusable, and
  then there is no correction at all rather than a wrong one for every process.

Measured with Debian's libfaketime 0.9.10 under ``faketime -f +1h``: ``time.time()`` is 3600 s
ahead; ``CLOCK_MONOTONIC``/``CLOCK_BOOTTIME`` are faked as well (to absurd values) unless
``FAKETIME_DONT_FAKE_MONOTONIC=1``; the raw system call and the ``/proc`` files are real.

The offset is cached and measured again every :data:`REFRESH_S` seconds (by the monotonic
clock) and in a forked child on its first use. Offsets under :data:`TOLERANCE_S` count as 0: a
normal process always uses exactly SQLite's own clock. Called from any thread (the cache is one
tuple, replaced whole).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable

#: Offsets smaller than this are taken to be 0 (the coarse source is only good to 1 s; a
#: real offset that small is well inside every timeout, and ignoring it keeps normal
#: processes on SQLite's own clock exactly).
TOLERANCE_S = 2.0
#: How often the offset is measured again (a faked clock may run at another rate or be reset).
REFRESH_S = 5.0

#: ``SYS_clock_gettime`` per machine; elsewhere the coarse source alone is used.
_SYS_CLOCK_GETTIME = {"x86_64": 228, "aarch64": 113}
_CLOCK_REALTIME = 0


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def coarse_time() -> float | None:
    """The kernel's wall clock from ``/proc`` (0-1 s behind), or ``None`` off Linux.

    ``None`` too when ``/proc/uptime`` and ``CLOCK_BOOTTIME`` disagree (see the module).
    """
    try:
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        boottime = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, StopIteration, ValueError, IndexError, AttributeError):
        return None
    if abs(uptime - boottime) >= 1.0:
        return None
    return btime + uptime


def _raw_syscall() -> Callable[[], float | None] | None:
    if not sys.platform.startswith("linux"):
        return None
    number = _SYS_CLOCK_GETTIME.get(platform.machine())
    if number is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long

    def read() -> float | None:
        ts = _Timespec()  # one per call: readers on several threads must not share a buffer
        if syscall(ctypes.c_long(number), ctypes.c_long(_CLOCK_REALTIME), ctypes.byref(ts)):
            return None
        return ts.tv_sec + ts.tv_nsec / 1e9

    return read


_precise = _raw_syscall()


def precise_time() -> float | None:
    """The kernel's ``CLOCK_REALTIME`` by raw system call, or ``None`` where unsupported."""
    return _precise() if _precise is not None else None


def kernel_time() -> float | None:
    """The host's wall clock, as the kernel keeps it; ``None`` when it cannot be read."""
    precise = precise_time()
    if precise is not None:
        return precise
    coarse = coarse_time()
    return None if coarse is None else coarse + 0.5  # the middle of btime's truncation


def sqlite_time() -> float:
    """SQLite's ``'now'`` in this process, in Unix seconds (milliseconds resolution).

    What the offset corrects is SQLite's clock, so it is read from SQLite itself: it is the
    libc clock SQLite's VFS reads, whatever ``time.time()`` says.
    """
    conn = sqlite3.connect(":memory:")
    try:
        (value,) = conn.execute("SELECT (julianday('now') - 2440587.5) * 86400.0").fetchone()
    finally:
        conn.close()
    return float(value)


def measure() -> float:
    """Kernel wall clock minus SQLite's ``'now'`` here, in seconds (rounded to the ms); 0 if
    under the tolerance.

    The SQLite reading is taken between two kernel readings, which must be close: a clock step
    landing between two reads would otherwise be taken for an offset of its size (and used for
    :data:`REFRESH_S`). If the clock keeps stepping, no correction for now.
    """
    for _ in range(3):
        before = kernel_time()
        if before is None:
            return 0.0
        sqlite = sqlite_time()
        after = kernel_time()
        if after is not None and 0.0 <= after - before < 0.5:
            break
    else:
        return 0.0
    offset = (before + after) / 2 - sqlite
    if -TOLERANCE_S < offset < TOLERANCE_S:
        return 0.0
    return round(offset, 3)


# (offset, monotonic time it is good until); None: not measured in this process yet.
_cache: tuple[float, float] | None = None


#: Seconds added on top, by the inline test runner's fake clock (:mod:`ringwork.inline`).
_shift = 0.0


def offset() -> float:
    """Seconds to add to SQLite's ``'now'`` in this process to get the host's time (plus the
    test runner's shift, 0 outside ``app.testing()``); cached."""
    global _cache
    cached = _cache
    now = time.monotonic()
    if cached is not None and now < cached[1]:
        return cached[0] + _shift
    value = measure()
    _cache = (value, now + REFRESH_S)
    return value + _shift


def shift(seconds: float) -> None:
    """Move this process's view of SQLite's clock by ``seconds`` (the inline test runner's fake
    clock; nothing else calls it)."""
    global _shift
    _shift += seconds


def _forget() -> None:
    global _cache
    _cache = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
