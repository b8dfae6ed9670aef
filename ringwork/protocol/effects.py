"""The core's outbox: what one ``handle()`` call asks the driver to do, in order.

Every part of the core (following, elections, leading) writes its actions here instead of calling
back into the core, so none of them needs the others. It also numbers the referee operations and
remembers those still unanswered: which are pending decides what may be issued next.

Runs on the driver's thread, inside ``Core.handle`` (see :mod:`ringwork.protocol.core`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ringwork.protocol import events as ev
from ringwork.protocol import messages as msgs

_A = TypeVar("_A", bound=ev.RefereeAction)


class Effects:
    """Actions of the current ``handle()``, and the referee operations in flight."""

    def __init__(self) -> None:
        self.actions: list[ev.Action] = []
        #: The ``now`` of the current ``handle()``.
        self.now = 0.0
        #: Referee operations not answered yet: op id -> (action type name, ``now`` issued).
        self.ops: dict[int, tuple[str, float]] = {}
        self._op_seq = 0

    def begin(self, now: float) -> None:
        self.actions = []
        self.now = now

    def take(self) -> list[ev.Action]:
        out, self.actions = self.actions, []
        return out

    def emit(self, action: ev.Action) -> None:
        self.actions.append(action)

    def send(self, to: str, message: msgs.Message) -> None:
        self.actions.append(ev.Send(to=to, message=message))

    def broadcast(self, message: msgs.Message) -> None:
        self.actions.append(ev.Broadcast(message=message))

    def notice(self, term: int, event: str, **detail: object) -> None:
        self.actions.append(ev.Notice(event=event, detail={"term": term, **detail}))

    def referee_op(self, build: Callable[[int], _A]) -> int:
        """Issue a referee operation built around a fresh op id; returns that id."""
        self._op_seq += 1
        action = build(self._op_seq)
        self.ops[self._op_seq] = (type(action).__name__, self.now)
        self.actions.append(action)
        return self._op_seq

    def pending(self, kind: str) -> bool:
        return any(k == kind for k, _ in self.ops.values())

    def answered(self, op_id: int, default: tuple[str, float]) -> tuple[str, float]:
        """Forget an answered operation; what it was (or ``default`` if unknown)."""
        return self.ops.pop(op_id, default)

    def keep_only(self, kind: str) -> None:
        """Forget every pending operation but those of ``kind`` (their answers are ignored)."""
        self.ops = {k: v for k, v in self.ops.items() if v[0] == kind}

    def expire(self, horizon: float) -> list[int]:
        """Forget operations issued before ``horizon`` that the driver never answered (it
        should; be robust anyway), except writes: a write's fate decides whether we lead."""
        expired = []
        for op, (kind, issued) in list(self.ops.items()):
            if kind != "WriteAssignment" and issued < horizon:
                del self.ops[op]
                expired.append(op)
        return expired
