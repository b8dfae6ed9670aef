"""The leader's housekeeping: chores one node does for the whole cluster, paced and off the path.

Why here, in the node, and not in the worker: the node is the part that knows it leads (its
role, from the protocol core), and it runs where a CPU-bound handler cannot starve it (the node
child process, with its own database connections). The worker's loop and database threads are
the claim path; pruning there would queue behind claims or delay them. Why not on the referee
pool thread (``ringwork-ref``): that single thread carries the leader's polls in order, and a
poll late by a long prune would cost the leader its authority. So housekeeping has a thread of
its own, ``ringwork-housekeeping``, and each of its statements is a short transaction of its own
(:mod:`ringwork.store.retention`), with a pause between batches so writers get the lock.

The chores are a list: retention's job and node pruning, and the periodic-task scheduler
(:mod:`ringwork.node.cron`) -- one node, the leader, on a clock, asking before each step whether
it still leads. A chore runs every ``interval`` seconds unless its ``run`` returns the seconds
until it wants to run next (the cron chore: its next tick); the thread sleeps until the earliest
chore is due, at most :data:`TICK` while it leads, so a tick is not late by the interval.

Leadership is asked before every batch: a node that stops leading stops pruning within one
batch. Two nodes that both briefly believe they lead (an old leader that has not yet stepped
down) at worst both delete rows that are due anyway: a delete is idempotent.

Threads: :meth:`Housekeeping.start` and :meth:`stop` come from whoever starts and stops the node;
the chores run on ``ringwork-housekeeping``; ``is_leader`` is called there and reads a field the
protocol thread writes (a string, read whole).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ringwork.errors import RingworkError
from ringwork.log import log_event
from ringwork.store.retention import RetentionPolicy

if TYPE_CHECKING:
    from ringwork.store import Store

#: How often the thread looks at the clock and at whether it leads.
TICK = 0.5
#: The shortest sleep between two rounds (a chore that asks for 0 s does not spin).
MIN_WAIT = 0.01


@dataclass
class Chore:
    """Something the leader does every ``interval`` seconds. ``run(going_on)`` should ask
    ``going_on()`` between its steps and return early once it says False; it may return the
    seconds until it wants to run again instead (``None``: after ``interval``)."""

    name: str
    interval: float
    run: Callable[[Callable[[], bool]], float | None]
    due: float = field(default=0.0)  # monotonic; 0: at once when we lead


class Housekeeping:
    """Runs the chores on ``ringwork-housekeeping`` while ``is_leader()`` says so."""

    def __init__(self, node_id: str, is_leader: Callable[[], bool], chores: list[Chore]) -> None:
        self.node_id = node_id
        self._is_leader = is_leader
        self.chores = chores
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="ringwork-housekeeping", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def going_on(self) -> bool:
        return not self._stop.is_set() and self._is_leader()

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (or until stopped); whether to go on."""
        return not self._stop.wait(seconds) and self.going_on()

    def _wait(self, leading: bool) -> float:
        """How long to sleep: :data:`TICK`, or less when we lead and a chore is due sooner."""
        if not leading or not self.chores:
            return TICK
        soonest = min(chore.due for chore in self.chores) - time.monotonic()
        return min(TICK, max(MIN_WAIT, soonest))

    def _run(self) -> None:
        leading = False
        while not self._stop.wait(self._wait(leading)):
            leading = self._is_leader()
            if not leading:
                for chore in self.chores:
                    chore.due = 0.0  # a new leader's first round runs at once
                continue
            for chore in self.chores:
                now = time.monotonic()
                if now < chore.due or not self.going_on():
                    continue
                chore.due = now + chore.interval
                try:
                    again = chore.run(self.going_on)
                    if again is not None:
                        chore.due = time.monotonic() + again
                except RingworkError as exc:  # the database is down: the next round retries
                    log_event("housekeeping_failed", logging.WARNING, node=self.node_id,
                              chore=chore.name, error=exc)
                except Exception:  # a bug: say so, keep the node (and the other chores) alive
                    logging.getLogger("ringwork").exception("housekeeping chore %s", chore.name)


def retention_chores(
    store: Store, node_id: str, policy: RetentionPolicy, pause: Callable[[float], bool]
) -> list[Chore]:
    """Retention's two chores: finished jobs by age, and the rows of long-dead nodes."""

    def prune_jobs(going_on: Callable[[], bool]) -> None:
        deleted: dict[str, int] = {}
        started = time.monotonic()
        for state, age in policy.ages().items():
            while going_on():
                n = store.prune_jobs(state, age, limit=policy.batch)
                if n:
                    deleted[state] = deleted.get(state, 0) + n
                if n < policy.batch or not pause(policy.pause):
                    break
        if deleted:
            log_event("jobs_pruned", node=node_id, took_s=round(time.monotonic() - started, 3),
                      **deleted)

    def prune_nodes(going_on: Callable[[], bool]) -> None:
        if policy.nodes > 0 and going_on():
            gone = store.prune_nodes(policy.nodes, keep=node_id)
            if gone:
                log_event("nodes_pruned", node=node_id, nodes=",".join(gone))

    return [Chore("prune_jobs", policy.interval, prune_jobs),
            Chore("prune_nodes", policy.interval, prune_nodes)]
