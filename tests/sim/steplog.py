"""The simulator's step log: the recent steps a failure report quotes, and the ``--trace`` lines.

It is its own module because two parts need it -- the run loop notes every step, the invariant
checks quote the last ones when they fail -- and because noting is on the hot path: a step is
kept as a tuple and formatted only when a report or a trace asks for it. Single-threaded, like
the whole simulator.
"""

from __future__ import annotations

from collections import deque

from ringwork.protocol import events as ev


class StepLog:
    """The last 40 steps, each ``(time, node, what, object)``; printed as they happen if traced."""

    def __init__(self, *, trace: bool = False) -> None:
        self.trace = trace
        self._recent: deque[tuple[float, str, str, object]] = deque(maxlen=40)

    def note(self, now: float, node: str, what: str, obj: object = None) -> None:
        self._recent.append((now, node, what, obj))
        if self.trace:
            print(f"[{now:9.4f}] {node:>6} {what}{describe(obj)}")

    def recent(self) -> str:
        """The kept steps, one indented line each, oldest first (for a failure report)."""
        return "\n".join(f"  [{t:9.4f}] {n:>6} {w}{describe(o)}" for t, n, w, o in self._recent)


def describe(obj: object) -> str:
    """One short line for an event, action or message (long ones cut at 160 characters)."""
    if obj is None:
        return ""
    if isinstance(obj, ev.MessageReceived):
        return describe(obj.message)
    name = type(obj).__name__
    if isinstance(obj, ev.Send):
        return f"{describe(obj.message)} to {obj.to}"
    fields = getattr(obj, "__dataclass_fields__", {})
    parts = [f"{k}={getattr(obj, k)!r}" for k in fields if k not in ("nodes", "partitions")]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) < 160 else text[:157] + "..."
