"""The leader's cron chore against a real database (SQLite and PostgreSQL): one job per tick
even when two "leaders" run it at the same moment, the missed-tick policies, and housekeeping
waking at a chore's next tick rather than at its interval."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from ringwork.job import NewJob
from ringwork.node.cron import cron_chore_run
from ringwork.node.housekeeping import Chore, Housekeeping
from ringwork.partitioner import partition_for
from ringwork.periodic import Schedule
from ringwork.store import Store
from ringwork.store import cron as cron_store
from ringwork.store.schema import jobs
from tests.support import wait_for


def cron_rows(store: Store) -> list[tuple[str, str, str, int]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            sa.select(jobs.c.dedupe_key, jobs.c.task, jobs.c.key, jobs.c.partition)
            .where(jobs.c.cluster == store.cluster, jobs.c.dedupe_key.like("cron:%"))
            .order_by(jobs.c.dedupe_key)
        )]


def finish_all(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.cluster == store.cluster)
                     .values(state="succeeded"))


def db_now(store: Store) -> datetime:
    return store.cron_state({})[0]


def test_two_leaders_running_the_chore_at_once_enqueue_each_tick_once(
    store: Store, make_store: Callable[..., Store]
) -> None:
    other = make_store()
    other.open()
    every_second = Schedule("beat", "* * * * * *")
    runs = [cron_chore_run(s, f"leader-{i}", [every_second]) for i, s in enumerate((store, other))]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def leader(run: Callable[[Callable[[], bool]], float | None]) -> None:
        try:
            for _ in range(8):
                barrier.wait(10)
                run(lambda: True)
                time.sleep(0.3)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=leader, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    rows = cron_rows(store)
    keys = Counter(r[0] for r in rows)
    assert keys and max(keys.values()) == 1, keys  # every tick once
    ticks = [every_second.tick_of(k) for k in sorted(keys)]
    assert all(t is not None for t in ticks)
    seconds = [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)]  # type: ignore[operator]
    assert all(s == 1.0 for s in seconds), ticks  # no gap either: every tick, in order
    assert len(ticks) >= 2
    # normal jobs of the task, keyed by its name: all on one partition
    assert {(r[1], r[2], r[3]) for r in rows} == {
        ("beat", "beat", partition_for("beat", store.partitions))}


def test_two_leaders_and_a_worker_that_finishes_each_job_at_once_still_one_job_per_tick(
    store: Store, make_store: Callable[..., Store]
) -> None:
    """The unique index covers unfinished jobs only: a tick whose job already ran must be
    kept from a second insert by the round itself (read and insert with no round between)."""
    stores = [make_store() for _ in range(3)]
    for s in stores:
        s.open()
    every_second = Schedule("beat", "* * * * * *")
    runs = [cron_chore_run(s, f"leader-{i}", [every_second]) for i, s in enumerate(stores[:2])]
    stop = threading.Event()

    def finisher() -> None:  # a worker faster than any round trip of the leaders
        while not stop.is_set():
            finish_all(stores[2])

    def leader(run: Callable[[Callable[[], bool]], float | None]) -> None:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            run(lambda: True)

    threads = [threading.Thread(target=leader, args=(r,)) for r in runs]
    helper = threading.Thread(target=finisher)
    helper.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    helper.join(10)
    keys = Counter(r[0] for r in cron_rows(store))
    assert len(keys) >= 3 and max(keys.values()) == 1, keys


def test_sqlite_a_tick_inserted_and_finished_between_the_scan_and_the_insert_is_seen(
    store: Store, make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's round scans before it takes the write lock; what another leader inserted in
    between is read under the lock (the rows after the scan's greatest id)."""
    if store.dialect != "sqlite":
        pytest.skip("PostgreSQL's round holds its lock from the read to the insert")
    other = make_store()
    other.open()
    hourly = Schedule("beat", "* * * * * *")
    real = cron_store.newest

    def newest_then_the_other_leader_runs(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        monkeypatch.setattr(cron_store, "newest", real)
        cron_chore_run(other, "other", [hourly])(lambda: True)
        finish_all(other)
        return found

    monkeypatch.setattr(cron_store, "newest", newest_then_the_other_leader_runs)
    cron_chore_run(store, "me", [hourly])(lambda: True)
    keys = Counter(r[0] for r in cron_rows(store))
    assert keys and max(keys.values()) == 1, keys


def test_a_tick_whose_job_already_finished_is_not_enqueued_again_by_the_next_leader(
    store: Store, make_store: Callable[..., Store]
) -> None:
    other = make_store()
    other.open()
    hourly = Schedule("report", f"{(db_now(store) - timedelta(seconds=30)).minute} * * * *")
    old, new = (cron_chore_run(s, n, [hourly]) for s, n in ((store, "old"), (other, "new")))
    old(lambda: True)
    first = cron_rows(store)
    finish_all(store)  # the old leader's job ran and succeeded; the unique index no longer
    new(lambda: True)  # covers it, the record of the newest tick does
    old(lambda: True)
    assert cron_rows(store) == first
    assert len(first) in (0, 1)  # 0: the minute of the clock rolled over between the reads


def _missed_setup(store: Store, missed: str, history: bool) -> Schedule:
    """An hourly schedule whose latest tick was ~5 minutes ago (missed), with, if ``history``,
    a tick from three hours before on record (a cluster that was down since)."""
    now = db_now(store)
    five_ago = now - timedelta(minutes=5)
    s = Schedule("hourly", f"{five_ago.minute} * * * *", missed=missed)
    if history:
        old = s.latest_at(now - timedelta(hours=3))
        assert old is not None
        store.enqueue([NewJob(task="hourly", key="hourly",
                              partition=partition_for("hourly", store.partitions),
                              dedupe_key=s.dedupe_key(old))])
        finish_all(store)
    return s


def test_missed_skip_enqueues_none_of_the_ticks_missed_while_no_node_ran(store: Store) -> None:
    for history in (True, False):
        s = _missed_setup(store, "skip", history)
        before = cron_rows(store)
        wait = cron_chore_run(store, "n", [s])(lambda: True)
        assert cron_rows(store) == before
        assert wait is not None and 0 < wait <= 30.0


def test_missed_latest_runs_the_latest_missed_tick_once(
    store: Store, make_store: Callable[..., Store]
) -> None:
    s = _missed_setup(store, "latest", history=True)
    run = cron_chore_run(store, "n", [s])
    run(lambda: True)
    rows = cron_rows(store)
    assert len(rows) == 2
    latest = s.latest_at(db_now(store))
    assert latest is not None and rows[-1][0] == s.dedupe_key(latest)
    finish_all(store)
    other = make_store()
    other.open()
    cron_chore_run(other, "m", [s])(lambda: True)  # a restart, a new leader: not again
    run(lambda: True)
    assert cron_rows(store) == rows


def test_a_leader_that_stopped_leading_enqueues_nothing(store: Store) -> None:
    cron_chore_run(store, "n", [Schedule("beat", "* * * * * *")])(lambda: False)
    assert cron_rows(store) == []


def test_housekeeping_runs_a_chore_at_the_time_it_asks_for_not_at_its_interval() -> None:
    times: list[float] = []

    def run(going_on: Callable[[], bool]) -> float:
        times.append(time.monotonic())
        return 0.15

    hk = Housekeeping("n", lambda: True, [Chore("cron", 60.0, run)])
    hk.start()
    try:
        # An interval of 60 s would have run it once in all that time.
        wait_for(lambda: len(times) >= 5, 10, message="five rounds, 0.15 s apart")
    finally:
        hk.stop()
    assert len(times) >= 5, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.14
