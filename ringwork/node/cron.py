"""The cron chore: the leader enqueues each periodic task's due ticks, one job per tick.

One more :class:`~ringwork.node.housekeeping.Chore`: it needs one node (the leader), a clock and
a way to stop when leadership ends, which housekeeping gives. What makes a tick one job for the
whole cluster is not that only one node runs this -- during a failover an old leader that has
not yet stepped down and its successor may both run it -- but the tick's dedupe key: the second
insert of a tick meets the first's unfinished row and gets its id (``ON CONFLICT``), and a tick
whose row has already finished is not due any more, because the newest tick on record is read
from the jobs table itself, and no other round can insert between that read and this round's
insert (:meth:`ringwork.store.Store.cron_round`).

Time is the database's: each round reads it together with the newest ticks, decides what is due
(:meth:`ringwork.periodic.Schedule.due`) and asks to be woken again at the earliest next tick.
The wait itself is on the monotonic clock; woken early by a host clock that runs fast, the chore
finds nothing due yet by the database's clock and asks again for the rest.

Threads: ``ringwork-housekeeping`` runs the chore (the store is safe from any thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ringwork.job import NewJob
from ringwork.log import log_event
from ringwork.node.housekeeping import Chore
from ringwork.partitioner import partition_for
from ringwork.periodic import Schedule
from ringwork.wakeup import WakeSender

if TYPE_CHECKING:
    from ringwork.store import Store

#: Longest sleep between two rounds: leadership and the database's clock are re-read this often
#: even when the next tick is far away (a moved clock, a new leader's first round).
MAX_WAIT = 30.0
#: Seconds before a round that failed (the database is away) is tried again.
RETRY_AFTER = 2.0


def due_jobs(
    schedules: Sequence[Schedule], partitions: int, now: datetime,
    newest: dict[str, dict[str, Any]],
) -> list[NewJob]:
    """The jobs of every tick due at ``now``, given each task's newest job on record."""
    new: list[NewJob] = []
    for schedule in schedules:
        last = schedule.tick_of((newest.get(schedule.task) or {}).get("dedupe_key"))
        key = schedule.job_key
        partition = partition_for(key, partitions)
        new.extend(
            NewJob(task=schedule.task, key=key, partition=partition,
                   payload={"tick": tick.isoformat()}, priority=schedule.priority,
                   max_attempts=schedule.max_attempts, ordered=schedule.ordered,
                   dedupe_key=schedule.dedupe_key(tick),
                   block_key_on_dead=schedule.block_key_on_dead)
            for tick in schedule.due(now, last)
        )
    return new


def cron_chore_run(
    store: Store, node_id: str, schedules: Sequence[Schedule],
    nudge: Callable[[set[int]], None] | None = None,
) -> Callable[[Callable[[], bool]], float | None]:
    """The chore's body: enqueue what is due; the seconds until the next tick."""
    prefixes = {s.task: s.key_prefix for s in schedules}

    def run(going_on: Callable[[], bool]) -> float | None:
        def plan(now: datetime, newest: dict[str, dict[str, Any]]) -> list[NewJob]:
            # asked under the round's lock, right before the insert
            return due_jobs(schedules, store.partitions, now, newest) if going_on() else []

        now, new, ids = store.cron_round(prefixes, plan)
        if new:
            log_event("cron_enqueued", logging.DEBUG, node=node_id,
                      jobs=",".join(f"{j.dedupe_key}={i}" for j, i in zip(new, ids, strict=True)))
            if nudge is not None:
                nudge({j.partition for j in new})
        nexts = [t for t in (s.next_after(now) for s in schedules) if t is not None]
        if not nexts:
            return MAX_WAIT
        return min(MAX_WAIT, max(0.0, (min(nexts) - now).total_seconds()))

    return run


def cron_chore(store: Store, node_id: str, schedules: Sequence[Schedule]) -> Chore:
    """The chore for ``schedules``. On SQLite, which has no NOTIFY, the owners of new jobs are
    nudged over UDP as ``App.enqueue`` does; on PostgreSQL the insert notifies them itself."""
    nudge = None
    if store.dialect != "postgresql":
        nudge = WakeSender(store).nudge
    # interval: the retry after a failed round (the database is down); rounds that succeed ask
    # for their next tick themselves.
    return Chore("cron", RETRY_AFTER, cron_chore_run(store, node_id, schedules, nudge))
