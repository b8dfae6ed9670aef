"""One clock: a process whose wall clock is wrong stores and sees the same times as any other.

Every test here runs the store (and the App on top of it) with Python's wall clock moved an
hour ahead or behind -- ``datetime.now``/``utcnow`` in every ringwork module and ``time.time``
-- while the database keeps its own clock (the server's on PostgreSQL; on SQLite the host's,
read by SQLite itself in the statement, which no Python patch reaches). Nothing may change:
a node that just touched its row is fresh, one that stopped ages, due jobs are claimed and
future ones are not.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from ringwork import App
from ringwork.job import NewJob, Outcome
from ringwork.status import collect
from ringwork.store import Store
from tests.support import own_all, wait_for

HOUR = 3600.0
SKEWS = [pytest.param(HOUR, id="ahead"), pytest.param(-HOUR, id="behind")]

Skew = Callable[[float], Any]


@pytest.fixture
def skewed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Skew]:
    """``with skewed(s):`` runs the block with this process's wall clock ``s`` seconds off."""

    @contextmanager
    def skew(seconds: float) -> Iterator[None]:
        offset = timedelta(seconds=seconds)

        class SkewedDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
                return datetime.now(tz) + offset

            @classmethod
            def utcnow(cls) -> Any:  # type: ignore[override]
                return datetime.now(timezone.utc).replace(tzinfo=None) + offset

        real_time = time.time
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: real_time() + seconds)
            for name, module in list(sys.modules.items()):
                if name.startswith("ringwork") and getattr(module, "datetime", None) is datetime:
                    m.setattr(module, "datetime", SkewedDatetime)
                if name.startswith("ringwork") and callable(getattr(module, "utcnow", None)):
                    m.setattr(module, "utcnow", lambda: datetime.now(timezone.utc) + offset)
            yield

    return skew


def _age(store: Store, node: str) -> float:
    return next(n.age for n in store.list_nodes() if n.node_id == node)


@pytest.mark.parametrize("skew", SKEWS)
def test_a_skewed_node_that_just_touched_its_row_is_fresh(
    make_store: Callable[..., Store], skewed: Skew, skew: float
) -> None:
    writer, reader = make_store(), make_store()
    with skewed(skew):
        writer.register_node("skewed", "tcp://127.0.0.1:1")
        writer.touch_node("skewed")
    assert _age(reader, "skewed") < 5.0
    # and the skewed process's own view of the registry agrees
    reader.register_node("plain", "tcp://127.0.0.1:2")
    with skewed(skew):
        assert _age(writer, "plain") < 5.0
        assert _age(writer, "skewed") < 5.0


@pytest.mark.parametrize("skew", SKEWS)
def test_a_skewed_node_that_stopped_touching_its_row_ages(
    make_store: Callable[..., Store], skewed: Skew, skew: float
) -> None:
    writer, reader = make_store(), make_store()
    with skewed(skew):
        writer.register_node("dead", "tcp://127.0.0.1:1")
    # An hour-ahead node's last_seen must not sit in the future (age 0 for an hour).
    wait_for(lambda: _age(reader, "dead") >= 0.5, timeout=10, message="the silent node to age")
    with skewed(skew):
        assert _age(writer, "dead") >= 0.5
    assert _age(reader, "dead") < 60.0


@pytest.mark.parametrize("skew", SKEWS)
def test_a_skewed_store_claims_due_jobs_and_not_future_ones(
    store: Store, make_store: Callable[..., Store], skewed: Skew, skew: float
) -> None:
    epochs = own_all(store, "node-a")
    plain = make_store()
    with skewed(skew):
        [future] = store.enqueue([NewJob(task="t", key="f", partition=0, delay=600.0)])
    [due] = plain.enqueue([NewJob(task="t", key="d", partition=1)])
    with skewed(skew):
        claimed = [j.id for j in store.claim("node-a", epochs, 10)]
    assert claimed == [due]
    # The future job is ten minutes out by the database's clock, whoever asks.
    assert plain.claim("node-a", epochs, 10) == []
    record = plain.get_job(future)
    assert record is not None and record.enqueued_at is not None
    assert timedelta(seconds=590) < record.run_at - record.enqueued_at < timedelta(seconds=610)


@pytest.mark.parametrize("skew", SKEWS)
def test_a_skewed_store_backs_off_retries_by_the_database_clock(
    store: Store, make_store: Callable[..., Store], skewed: Skew, skew: float
) -> None:
    epochs = own_all(store, "node-a")
    plain = make_store()
    plain.enqueue([NewJob(task="t", key="later", partition=0),
                   NewJob(task="t", key="now", partition=1)])
    with skewed(skew):
        later, now = sorted(store.claim("node-a", epochs, 10), key=lambda j: j.key)
        assert store.fail("node-a", later.id, later.token, "x", retry_delay=600.0) is Outcome.RETRY
        assert store.fail("node-a", now.id, now.token, "x", retry_delay=0.0) is Outcome.RETRY
    assert [j.key for j in plain.claim("node-a", epochs, 10)] == ["now"]
    with skewed(skew):
        assert store.claim("node-a", epochs, 10) == []


@pytest.mark.parametrize("skew", SKEWS)
def test_an_app_enqueued_delay_counts_from_the_database_clock(
    db_url: str, cluster_name: str, skewed: Skew, skew: float
) -> None:
    app = App(database_url=db_url, cluster=cluster_name, partitions=4)
    app.task("t")(lambda job: None)
    try:
        with skewed(skew):
            soon = app.enqueue("t", key="a", delay=0.0)
            later = app.enqueue("t", key="b", delay=600.0)
        epochs = own_all(app.store, "node-a")
        assert [j.id for j in app.store.claim("node-a", epochs, 10)] == [soon]
        record = app.get_job(later)
        assert record.enqueued_at is not None
        assert timedelta(seconds=590) < record.run_at - record.enqueued_at < timedelta(seconds=610)
    finally:
        app.close()


@pytest.mark.parametrize("skew", SKEWS)
def test_status_shows_a_skewed_node_live(
    db_url: str, cluster_name: str, make_store: Callable[..., Store], skewed: Skew, skew: float
) -> None:
    app = App(database_url=db_url, cluster=cluster_name, partitions=4)
    try:
        node = make_store(partitions=4)
        with skewed(skew):
            node.register_node("skewed", "tcp://127.0.0.1:1")
        app.store.register_node("plain", "tcp://127.0.0.1:2")
        for view in (lambda: collect(app), lambda: _under(skewed, skew, lambda: collect(app))):
            doc = view()
            roles = {n["id"]: n["role"] for n in doc["nodes"]}
            assert set(roles) == {"skewed", "plain"}
            assert "stale" not in roles.values(), roles  # bare rows: "not joined" is live
            assert all(0 <= n["last_heartbeat_age_s"] < 5 for n in doc["nodes"])
    finally:
        app.close()


def _under(skewed: Skew, skew: float, fn: Callable[[], Any]) -> Any:
    with skewed(skew):
        return fn()


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


def _times_in(value: Any) -> list[Any]:
    if isinstance(value, (datetime, date)):
        return [value]
    if isinstance(value, str):
        return [value] if _TIMESTAMP.search(value) else []
    if isinstance(value, dict):
        return [t for v in value.values() for t in _times_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _times_in(v)]
    return []


def test_no_statement_binds_a_time_from_the_process(store: Store) -> None:
    """The rule itself: whatever the store does, the only times it sends are the user's own
    absolute ``run_at`` values; every other time is taken by the database in the statement."""
    bound: list[Any] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        bound.extend(_times_in(parameters))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        store.register_node("n", "tcp://127.0.0.1:1")
        store.touch_node("n")
        store.list_nodes()
        epochs = own_all(store, "n")
        store.enqueue([NewJob(task="t", key=f"k{i}", partition=i % 8, delay=i % 3)
                       for i in range(100)])
        store.enqueue([NewJob(task="t", key="one", partition=0, delay=5)])
        jobs = store.claim("n", epochs, 10)
        fenced, _ = store.exchange("n", [(j.id, j.token) for j in jobs[:5]], epochs, 5)
        assert not fenced
        store.fail("n", jobs[5].id, jobs[5].token, "boom", retry_delay=30)
        store.fail("n", jobs[6].id, jobs[6].token, "boom", retry_delay=None)
        store.retry(jobs[6].id)
        [queued] = store.enqueue([NewJob(task="t", key="c", partition=1)])
        store.cancel(queued)
        assert store.assign("n", store.read_term().term, {0: None}) is not None
        assert not bound, bound
        run_at = datetime(2030, 1, 1, tzinfo=timezone.utc)
        store.enqueue([NewJob(task="t", key="abs", partition=2, run_at=run_at)])
        assert len(bound) == 1  # the user's own absolute time, as given
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
