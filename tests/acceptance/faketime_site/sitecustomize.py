"""Loaded (through PYTHONPATH) only into the processes the clock-skew tests run under faketime.

libfaketime 0.9.10 (Debian's) with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` breaks ``time.sleep`` on
Python 3.11+: Python sleeps with ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``, and
libfaketime shifts that absolute deadline by the wall-clock offset, so the kernel gets a
negative time and answers EINVAL (wolfcw/libfaketime#426). Threading waits (``sem_clockwait``
on the monotonic clock) are not intercepted and work, so sleep on one of those. A real host
whose wall clock is off has no such bug; this only keeps the test tool out of the way.
"""

import threading
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
