"""Periodic tasks' definitions and tick arithmetic (issue 11, item 4): bad input fails at the
decorator in one line; the due ticks follow the policies; zones and DST come out right."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringwork import App
from ringwork.errors import ConfigurationError, RingworkError
from ringwork.periodic import CATCH_UP, MAX_TICKS, Schedule, ScheduleError


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# -- definition --------------------------------------------------------------------------------


@pytest.mark.parametrize("cron", ["", "* * * *", "61 * * * *", "*/0 * * * *", "a b c d e",
                                  "0 0 31 2 *", "* * * * * * *"])
def test_a_malformed_cron_expression_fails_at_the_decorator_in_one_line(cron: str) -> None:
    app = App()
    with pytest.raises(ScheduleError) as info:
        app.periodic("cleanup", cron=cron)
    assert isinstance(info.value, RingworkError)
    assert "\n" not in str(info.value) and "cleanup" in str(info.value)
    assert "cleanup" not in app.tasks


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", "Europe/", 5])
def test_an_unknown_timezone_fails_at_the_decorator(zone: object) -> None:
    with pytest.raises(ScheduleError, match="timezone") as info:
        App().periodic("cleanup", cron="*/5 * * * *", timezone=zone)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_a_bad_missed_policy_and_a_cron_on_app_task_are_checked_too() -> None:
    app = App()
    with pytest.raises(ScheduleError, match="missed"):
        app.periodic("a", cron="* * * * *", missed="all")
    with pytest.raises(ScheduleError, match="bad cron"):
        app.task(cron="nope")  # before the handler is even given


def test_a_periodic_task_named_like_a_plain_task_fails_either_way_round() -> None:
    app = App()

    @app.task("cleanup")
    def plain(job: object) -> None: ...

    with pytest.raises(ScheduleError, match="cleanup"):
        app.periodic("cleanup", cron="* * * * *")(plain)
    assert "cleanup" not in app.schedules

    @app.periodic("report", cron="0 9 * * *", timezone="Europe/Berlin")
    def report(job: object) -> None: ...

    with pytest.raises(ScheduleError, match="report"):
        app.task("report")(plain)
    with pytest.raises(ConfigurationError, match="twice"):  # two plain tasks: as before
        app.task("cleanup")(plain)


def test_the_contract_forms_register_a_task_and_a_schedule() -> None:
    app = App()

    @app.periodic("cleanup", cron="*/5 * * * *", timezone="UTC")
    def cleanup(job: object) -> None: ...

    @app.task(cron="0 3 * * *", timezone="Europe/Berlin", missed="latest", max_attempts=2)
    def nightly(job: object) -> None: ...

    assert set(app.tasks) == set(app.schedules) == {"cleanup", "nightly"}
    night = app.schedules["nightly"]
    assert (night.task, night.timezone, night.missed, night.max_attempts) == (
        "nightly", "Europe/Berlin", "latest", 2)
    assert app.schedules["cleanup"].job_key == "cleanup"  # one partition for all its ticks


# -- ticks ---------------------------------------------------------------------------------------


def test_dedupe_keys_name_the_tick_and_sort_like_time() -> None:
    s = Schedule("cleanup", "*/5 * * * *")
    keys = [s.dedupe_key(utc(2026, 1, 1, 0, m)) for m in (0, 5, 10)]
    assert keys[0] == "cron:cleanup:2026-01-01T00:00:00Z"
    assert sorted(keys) == keys
    assert [s.tick_of(k) for k in keys] == [utc(2026, 1, 1, 0, m) for m in (0, 5, 10)]
    assert s.tick_of("cron:other:2026-01-01T00:00:00Z") is None
    assert s.tick_of(None) is None


def test_next_and_latest_around_a_tick() -> None:
    s = Schedule("t", "*/5 * * * *")
    tick = utc(2026, 1, 1, 0, 5)
    assert s.next_after(tick) == utc(2026, 1, 1, 0, 10)
    assert s.next_after(tick - timedelta(microseconds=1)) == tick
    assert s.latest_at(tick) == tick
    assert s.latest_at(tick + timedelta(seconds=299)) == tick
    assert s.latest_at(tick - timedelta(seconds=1)) == utc(2026, 1, 1, 0, 0)


def test_running_cluster_enqueues_each_tick_once_in_order() -> None:
    s = Schedule("t", "* * * * *")
    now = utc(2026, 1, 1, 12, 0, 30)
    last = utc(2026, 1, 1, 12, 0)
    assert s.due(now, last) == []
    assert s.due(now + timedelta(seconds=30), last) == [utc(2026, 1, 1, 12, 1)]


def test_a_failover_in_the_middle_of_a_tick_is_late_not_missed() -> None:
    s = Schedule("t", "* * * * * *")  # every second; the old leader died before 12:00:01
    last = utc(2026, 1, 1, 12, 0, 0)
    now = last + timedelta(seconds=8.5)
    assert s.due(now, last) == [last + timedelta(seconds=i) for i in range(1, 9)]


def test_missed_skip_drops_old_ticks_and_latest_runs_the_newest_once() -> None:
    last = utc(2026, 1, 1, 0, 0)  # then the cluster was down for ten hours
    now = utc(2026, 1, 1, 10, 0, 30)
    skip = Schedule("t", "0 * * * *", missed="skip")
    latest = Schedule("t", "0 * * * *", missed="latest")
    # 10:00 is 30 s late: within the catch-up window, so on time (a restart, a failover)
    assert skip.due(now, last) == [utc(2026, 1, 1, 10)]
    # five minutes late it was missed: skipped, and 01:00..09:00 too
    assert skip.due(now + timedelta(minutes=5), last) == []
    assert latest.due(now + timedelta(minutes=5), last) == [utc(2026, 1, 1, 10)]
    # once it ran (it is the newest on record), it is not run again
    assert latest.due(now + timedelta(minutes=5), utc(2026, 1, 1, 10)) == []
    # never ran before: "latest" runs the newest past tick, "skip" waits for the next
    assert latest.due(now + timedelta(minutes=5), None) == [utc(2026, 1, 1, 10)]
    assert skip.due(now + timedelta(minutes=5), None) == []


def test_a_long_outage_of_a_per_second_schedule_is_bounded() -> None:
    s = Schedule("t", "* * * * * *", missed="latest")
    now = utc(2026, 1, 1, 12)
    ticks = s.due(now, now - timedelta(days=2))
    assert len(ticks) <= MAX_TICKS and len(ticks) == CATCH_UP + 1  # the latest, then the window
    assert ticks == sorted(set(ticks)) and ticks[-1] == now


def test_daylight_saving_time_in_the_schedules_zone() -> None:
    berlin = Schedule("t", "30 2 * * *", timezone="Europe/Berlin")
    # 2026-03-29: clocks jump from 02:00 to 03:00 (there is no 02:30); 2026-10-25: 02:30 twice
    spring = berlin.next_after(utc(2026, 3, 28, 12))
    assert spring is not None and spring.astimezone(ZoneInfo("Europe/Berlin")).hour == 3
    nine = Schedule("t", "0 9 * * *", timezone="Europe/Berlin")
    assert nine.next_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 7)  # CEST: UTC+2
    assert nine.next_after(utc(2026, 3, 27, 12)) == utc(2026, 3, 28, 8)  # CET: UTC+1
    autumn = berlin.next_after(utc(2026, 10, 24, 12))
    assert autumn is not None and berlin.next_after(autumn) is not None
    assert berlin.next_after(autumn) - autumn >= timedelta(hours=23)  # type: ignore[operator]


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
         "America/Santiago", "Pacific/Chatham"]
FIELDS = st.sampled_from(["*", "*/2", "*/5", "0", "1-10", "5,17", "*/13", "30", "59", "0-30/7"])
HOURS = st.sampled_from(["*", "0", "1", "2", "3", "*/3", "1-4", "23", "9-17"])


@settings(max_examples=150, deadline=None)
@given(minute=FIELDS, hour=HOURS, zone=st.sampled_from(ZONES),
       start=st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2037, 1, 1)),
       gap=st.integers(min_value=0, max_value=4 * 86400), seconds=st.booleans())
def test_due_ticks_are_strictly_after_last_ordered_real_ticks_and_unique(
    minute: str, hour: str, zone: str, start: datetime, gap: int, seconds: bool
) -> None:
    cron = f"{'*/20 ' if seconds else ''}{minute} {hour} * * *"
    for missed in ("skip", "latest"):
        s = Schedule("t", cron, timezone=zone, missed=missed)
        last = s.latest_at(start.replace(tzinfo=timezone.utc))
        now = start.replace(tzinfo=timezone.utc) + timedelta(seconds=gap)
        ticks = s.due(now, last)
        assert ticks == sorted(set(ticks))
        assert all(last is None or t > last for t in ticks)
        assert all(t <= now for t in ticks)
        for t in ticks:  # each is a real tick: the latest at itself, and keys round-trip
            assert s.latest_at(t) == t
            assert s.tick_of(s.dedupe_key(t)) == t
        on_time = [t for t in ticks if t > now - timedelta(seconds=CATCH_UP)]
        missed_ticks = [t for t in ticks if t not in on_time]
        assert len(missed_ticks) <= (1 if missed == "latest" else 0)
        # what is due next round, after these were enqueued, is only what came since
        newest = ticks[-1] if ticks else last
        assert s.due(now, newest) == []
