"""Counting and logging what went wrong with one peer's input, without letting it stop anything.

The node thread handles every frame a peer sends inside a guard: whatever fails (a frame the
codec drops, or an exception while the protocol handles a message) is counted by reason and
logged, and the loop goes on to the next frame. The counts are plain integers bumped on the node
thread and read by the metrics thread (a ``Counter`` lookup is atomic under the GIL).

Logging is rate-limited per reason: a flood of bad frames must not become a flood of log lines
(nor cost the node thread the time to write them). The first occurrence of a reason is logged at
once; later ones at most every ``interval`` seconds, with how many were not logged meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from ringwork.log import log_event

#: Longest error text kept in a log line: a peer chooses what goes into some exception messages.
ERROR_TEXT = 200


class FaultLog:
    """Per-reason counters plus a per-reason log rate limit. Used by one thread."""

    def __init__(
        self,
        event: str,
        node: str,
        *,
        interval: float = 10.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.event = event
        self.node = node
        self.interval = interval
        self.level = level
        self.counts: Counter[str] = Counter()
        self._clock = clock
        self._next_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def record(self, reason: str, error: object = None) -> None:
        """Count one occurrence of ``reason``; log it unless one was logged very recently."""
        self.counts[reason] += 1
        now = self._clock()
        if now < self._next_log.get(reason, -1.0):
            self._suppressed[reason] += 1
            return
        self._next_log[reason] = now + self.interval
        fields: dict[str, object] = {"node": self.node, "reason": reason,
                                     "total": self.counts[reason]}
        if self._suppressed[reason]:
            fields["not_logged"] = self._suppressed.pop(reason)
        if error is not None:
            text = repr(error)
            fields["error"] = text if len(text) <= ERROR_TEXT else text[: ERROR_TEXT - 3] + "..."
        log_event(self.event, self.level, **fields)


def reason_of(where: str, exc: BaseException) -> str:
    """A bounded label for a failure: where it happened and the exception's type."""
    return f"{where}:{type(exc).__name__}"
