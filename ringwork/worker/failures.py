"""What a failed attempt is written as, and when it is tried again: shared by the worker's
executor and the inline test runner (:mod:`ringwork.inline`), which must fail jobs alike.

Threads: any (pure functions; the caller owns the ``random.Random``).
"""

from __future__ import annotations

import random
import traceback

from ringwork.retry import backoff

ERROR_LIMIT = 4000  # characters of "Type: message + traceback tail" kept in last_error


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` plus the innermost traceback lines, bounded in size."""
    head = f"{type(exc).__name__}: {exc}"
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
    text = f"{head}\n{tail}"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 3] + "..."


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)`` capped, times [0.5, 1.5)."""
    return backoff(attempt, base, cap, rng)
