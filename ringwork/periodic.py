"""Periodic tasks: a task's cron schedule, and which of its ticks are due at a given moment.

Pure computation -- no database, no clock of its own: the leader's cron chore
(:mod:`ringwork.node.cron`) passes in the database's time, so every node agrees on what is due
whatever its own clock says. Expressions are parsed by ``cronsim`` (5 fields, or 6 with seconds
first), in the schedule's IANA timezone through :mod:`zoneinfo`, so "9:00 Europe/Berlin" follows
daylight saving time the way ``cron`` does; ticks are then handled in UTC only.

A tick's job carries the dedupe key ``cron:<task>:<tick, UTC, to the second>``: two leaders (an
old one that has not yet stepped down and its successor) that both enqueue a tick insert one job.
The key's fixed-width form sorts like time, so the newest tick enqueued is ``max(dedupe_key)``.

Everything here is checked when the schedule is defined (``@app.periodic``, ``cron=``), so a bad
expression or zone is a one-line :class:`ScheduleError` at import, never at the first tick.

Threads: any (immutable values, pure functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ringwork.errors import ConfigurationError

#: What to do with ticks missed while no node ran: skip them, or run the latest one once.
MISSED_POLICIES = ("skip", "latest")
#: A tick at most this late is not "missed" but late: a leader failover or a restart takes
#: seconds, and its ticks still run, once each (the dedupe key). Older ticks follow ``missed``.
CATCH_UP = 60.0
#: The most ticks one round enqueues for one schedule (a per-second schedule after a failover).
MAX_TICKS = 1000
#: The dedupe keys of periodic jobs start with this.
KEY_PREFIX = "cron:"
_KEY_TIME = "%Y-%m-%dT%H:%M:%SZ"


class ScheduleError(ConfigurationError):
    """A periodic task's definition is wrong: its cron expression, timezone, policy or name."""


def _zone(name: object, label: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"{label}: timezone must be an IANA name like 'UTC', not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ScheduleError(f"{label}: unknown timezone {name!r}") from None


@dataclass(frozen=True)
class Schedule:
    """When a periodic task runs, and the options its jobs carry (picklable: it crosses to the
    node process)."""

    task: str
    cron: str
    timezone: str = "UTC"
    missed: str = "skip"
    #: The jobs' partitioning key; the task's name when not given (all on one partition).
    key: str | None = None
    priority: int = 0
    max_attempts: int = 5
    ordered: bool = False
    block_key_on_dead: bool = False

    def __post_init__(self) -> None:
        label = f"periodic task {self.task!r}"
        if not isinstance(self.cron, str):
            raise ScheduleError(f"{label}: cron must be a string, not {self.cron!r}")
        zone = _zone(self.timezone, label)
        if self.missed not in MISSED_POLICIES:
            raise ScheduleError(
                f"{label}: missed must be 'skip' or 'latest', not {self.missed!r}"
            )
        if self.key is not None and not isinstance(self.key, str):
            raise ScheduleError(f"{label}: key must be a string, not {self.key!r}")
        start = datetime(2000, 1, 1, tzinfo=zone)
        try:
            next(CronSim(self.cron, start))
        except CronSimError as exc:
            raise ScheduleError(f"{label}: bad cron expression {self.cron!r} ({exc})") from None
        except StopIteration:
            raise ScheduleError(f"{label}: cron expression {self.cron!r} never fires") from None

    @property
    def job_key(self) -> str:
        return self.task if self.key is None else self.key

    @property
    def key_prefix(self) -> str:
        """What every dedupe key of this schedule's jobs starts with."""
        return f"{KEY_PREFIX}{self.task}:"

    def dedupe_key(self, tick: datetime) -> str:
        return self.key_prefix + tick.astimezone(timezone.utc).strftime(_KEY_TIME)

    def tick_of(self, dedupe_key: str | None) -> datetime | None:
        """The tick a dedupe key of ours names (``None`` for anything else)."""
        if not dedupe_key or not dedupe_key.startswith(self.key_prefix):
            return None
        try:
            parsed = datetime.strptime(dedupe_key[len(self.key_prefix):], _KEY_TIME)
        except ValueError:
            return None
        return parsed.replace(tzinfo=timezone.utc)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (UTC), or ``None`` if there is none."""
        zone = ZoneInfo(self.timezone)
        try:
            return next(CronSim(self.cron, moment.astimezone(zone))).astimezone(timezone.utc)
        except StopIteration:
            return None

    def latest_at(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (UTC), or ``None``."""
        zone = ZoneInfo(self.timezone)
        # cronsim's reverse walk starts strictly before its start, to the second.
        start = moment.replace(microsecond=0) + timedelta(seconds=1)
        try:
            tick = next(CronSim(self.cron, start.astimezone(zone), reverse=True))
        except StopIteration:
            return None
        return tick.astimezone(timezone.utc)

    def due(
        self, now: datetime, last: datetime | None, catch_up: float = CATCH_UP
    ) -> list[datetime]:
        """The ticks to enqueue at ``now`` (database time), oldest first, given ``last``, the
        newest tick already enqueued (``None``: none on record).

        Ticks in ``(now - catch_up, now]`` after ``last`` are on time (a failover is late, not
        missed). Older ones were missed: ``skip`` drops them, ``latest`` runs the newest of them
        if it is after ``last``.
        """
        lower = now - timedelta(seconds=catch_up)
        ticks: list[datetime] = []
        if self.missed == "latest":
            missed = self.latest_at(lower)
            if missed is not None and (last is None or missed > last):
                ticks.append(missed)
        start = lower if last is None or last < lower else last
        tick = self.next_after(start)
        while tick is not None and tick <= now and len(ticks) < MAX_TICKS:
            ticks.append(tick)
            tick = self.next_after(tick)
        return ticks
