"""A task's retry policy: how long to wait before the next attempt, and which failures are
worth another attempt at all.

``@app.task(retry=Retry(...))``. Why a small frozen object rather than more keyword arguments on
the decorator: the same policy is usually shared by several tasks (``API_CALLS = Retry(...)``),
and checking it once, when it is built, makes a bad value a one-line error at import.

Which failures retry, in this order of precedence:

0. a :class:`~ringwork.errors.StoredPayloadError` (a typed task's stored payload that does not
   fit its type) dead-letters at once under every policy: the next attempt reads the same row;
1. an exception that is an instance of one of ``dead_on`` dead-letters the job at once, whatever
   attempts remain;
2. else, if ``retry_on`` is given, an instance of one of them is retried (until
   ``max_attempts``) and any other exception dead-letters at once;
3. else every exception is retried until ``max_attempts`` (the default, as without a policy).

The task's own ``timeout=`` and cancel requests are not exceptions the handler raised: a timed-out
attempt is always retried until ``max_attempts`` (with this policy's backoff), a cancelled one
always ends ``cancelled``. A ``TimeoutError`` the handler raises itself is classified like any
other exception.

Thread: built at import (any thread); read by the worker's loop. Immutable, so shared freely.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ringwork.errors import ConfigurationError, StoredPayloadError

#: The longest base or cap accepted: a century, as for a task's ``timeout=`` and ``delay=``.
MAX_BACKOFF = 100 * 365.25 * 86400

ExceptionTypes = tuple[type[BaseException], ...]


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None) -> float:
    """``base * 2**(attempt-1)`` capped at ``cap``; with ``rng``, times a jitter factor in
    [0.5, 1.5) (a burst of failures does not come back as one burst)."""
    # The exponent is bounded so that a thousandth attempt does not overflow a float.
    delay = min(cap, base * (2.0 ** min(max(0, attempt - 1), 1000)))
    return delay if rng is None else delay * (0.5 + rng.random())


def _seconds(label: str, name: str, value: object) -> float | None:
    if value is None:
        return None
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and 0 <= value <= MAX_BACKOFF)
    if not ok:
        raise ConfigurationError(
            f"{label}{name} must be a number of seconds from 0 to 100 years, not {value!r}")
    assert isinstance(value, (int, float))
    return float(value)


def _exceptions(label: str, name: str, value: object) -> ExceptionTypes | None:
    if value is None:
        return None
    items: Iterable[Any]
    if isinstance(value, type):
        items = (value,)
    elif isinstance(value, (tuple, list, set, frozenset)):
        items = value
    else:
        raise ConfigurationError(
            f"{label}{name} must be an exception class or a tuple of them, not {value!r}")
    out = tuple(items)
    for item in out:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(
                f"{label}{name} must hold exception classes only, not {item!r}")
    return out


@dataclass(frozen=True)
class Retry:
    """A task's retry policy (see the module docstring for the precedence of ``dead_on`` and
    ``retry_on``).

    ``base``/``cap``: the first delay and the longest, in seconds; ``None`` takes the worker's
    ``retry_base``/``retry_max`` settings. ``jitter``: multiply each delay by a random factor in
    [0.5, 1.5), as the worker's default does (the cap applies before it, so a jittered delay may
    reach 1.5 x ``cap``); ``False`` waits exactly the computed delay.
    """

    base: float | None = None
    cap: float | None = None
    retry_on: ExceptionTypes | None = None
    dead_on: ExceptionTypes = ()
    jitter: bool = True

    def __post_init__(self) -> None:
        label = "Retry: "
        base = _seconds(label, "base", self.base)
        cap = _seconds(label, "cap", self.cap)
        if base is not None and cap is not None and cap < base:
            raise ConfigurationError(f"Retry: cap ({cap:g} s) must be at least base ({base:g} s)")
        retry_on = _exceptions(label, "retry_on", self.retry_on)
        dead_on = _exceptions(label, "dead_on", self.dead_on) or ()
        if not isinstance(self.jitter, bool):
            raise ConfigurationError(f"Retry: jitter must be True or False, not {self.jitter!r}")
        # Normalised in place (frozen): floats, and tuples whatever sequence was given.
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "cap", cap)
        object.__setattr__(self, "retry_on", retry_on)
        object.__setattr__(self, "dead_on", dead_on)

    def retries(self, exc: BaseException) -> bool:
        """Is ``exc`` worth another attempt (attempts permitting)? False: dead-letter now.
        A stored payload that does not fit the task's type never is (it will not change)."""
        if isinstance(exc, StoredPayloadError):
            return False
        if self.dead_on and isinstance(exc, self.dead_on):
            return False
        if self.retry_on is not None:
            return isinstance(exc, self.retry_on)
        return True

    def delay(self, attempt: int, default_base: float, default_cap: float,
              rng: random.Random) -> float:
        """Seconds before the attempt after ``attempt`` (counted from 1), the worker's settings
        filling what the policy leaves out."""
        base = default_base if self.base is None else self.base
        cap = default_cap if self.cap is None else self.cap
        return backoff(attempt, base, cap, rng if self.jitter else None)


#: What a task without ``retry=`` gets: the worker's settings, every exception retried.
DEFAULT = Retry()
