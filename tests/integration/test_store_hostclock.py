"""SQLite and a process whose clock is not the host's: the kernel's time, not SQLite's ``'now'``.

SQLite reads ``'now'`` inside each process through libc, so a process whose libc clock is faked
(``faketime``) would store and compare its own time. :mod:`ringwork.store.hostclock` measures
the process's offset from the kernel's clock and every SQLite statement adds it back.

Two levels: in-process, with the *kernel's* clock moved (so this process is the skewed one and
every SQLite statement must add the offset: times stored, ages, due jobs, delays, retries), and
end to end, a real process under ``faketime`` an hour ahead and behind, checked from here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ringwork.job import NewJob, Outcome
from ringwork.store import Store, claim_sqlite, hostclock
from ringwork.store.schema import jobs, nodes
from tests.support import own_all

HOUR = 3600.0
SKEWS = [pytest.param(HOUR, id="behind"), pytest.param(-HOUR, id="ahead")]
ROOT = Path(__file__).resolve().parents[2]
FAKETIME_SITE = ROOT / "tests" / "acceptance" / "faketime_site"

Kernel = Callable[[float], Any]


@pytest.fixture
def kernel_ahead(monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    """``with kernel_ahead(s):`` the host's clock is ``s`` s ahead of this process's SQLite,
    i.e. this process runs ``s`` seconds behind the host (as under ``faketime -f -<s>``)."""

    @contextmanager
    def ahead(seconds: float) -> Iterator[None]:
        real = hostclock.kernel_time
        with monkeypatch.context() as m:
            m.setattr(hostclock, "kernel_time", lambda: (real() or 0.0) + seconds)
            m.setattr(hostclock, "_cache", None)
            yield
        hostclock._forget()

    return ahead


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Callable[[], Store]]:
    made: list[Store] = []

    def make() -> Store:
        s = Store(f"sqlite:///{tmp_path / 'clock.db'}", cluster="c", partitions=4)
        s.open()
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _raw(store: Store, column: sa.ColumnElement[Any], where: Any) -> datetime:
    with store.engine.connect() as conn:
        value = conn.execute(sa.select(column).where(where)).scalar_one()
    assert isinstance(value, datetime)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _age(store: Store, node: str) -> float:
    return next(n.age for n in store.list_nodes() if n.node_id == node)


# -- the offset itself ---------------------------------------------------------------------------


def test_a_normal_process_has_offset_zero() -> None:
    hostclock._forget()
    assert hostclock.measure() == 0.0
    assert hostclock.offset() == 0.0


@pytest.mark.parametrize("skew", [HOUR, -HOUR, 5.0, -5.0])
def test_the_offset_is_the_kernel_minus_sqlite(
    monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    real = hostclock.sqlite_time
    monkeypatch.setattr(hostclock, "sqlite_time", lambda: real() + skew)
    assert abs(hostclock.measure() + skew) < 0.1


@pytest.mark.parametrize("skew", [1.5, -1.5])
def test_offsets_under_the_tolerance_are_zero(monkeypatch: pytest.MonkeyPatch, skew: float) -> None:
    real = hostclock.sqlite_time
    monkeypatch.setattr(hostclock, "sqlite_time", lambda: real() + skew)
    assert hostclock.measure() == 0.0


def test_without_a_kernel_clock_the_offset_is_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other systems than Linux: no correction (documented)."""
    real = hostclock.sqlite_time
    monkeypatch.setattr(hostclock, "kernel_time", lambda: None)
    monkeypatch.setattr(hostclock, "sqlite_time", lambda: real() + HOUR)
    assert hostclock.measure() == 0.0


def test_without_the_raw_call_the_proc_clock_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux on other machines: ``/proc/stat``'s btime plus ``/proc/uptime``, within a second."""
    if hostclock.coarse_time() is None:
        pytest.skip("no usable /proc clock here")
    monkeypatch.setattr(hostclock, "precise_time", lambda: None)
    kernel = hostclock.kernel_time()
    assert kernel is not None and abs(kernel - time.time()) < 1.0
    real = hostclock.sqlite_time
    monkeypatch.setattr(hostclock, "sqlite_time", lambda: real() - HOUR)
    assert abs(hostclock.measure() - HOUR) < 1.0


def test_a_rewritten_uptime_means_no_correction(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc/uptime that is not the kernel's boot clock (lxcfs shows a container's uptime, and
    a faker may move CLOCK_BOOTTIME): no correction rather than a wrong one."""
    if hostclock.coarse_time() is None:
        pytest.skip("no usable /proc clock here")
    real = time.clock_gettime
    monkeypatch.setattr(hostclock, "precise_time", lambda: None)
    monkeypatch.setattr(hostclock.time, "clock_gettime", lambda clock: real(clock) + 600.0)
    assert hostclock.coarse_time() is None
    assert hostclock.kernel_time() is None
    assert hostclock.measure() == 0.0


def test_the_offset_is_cached_and_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(hostclock, "measure", lambda: calls.append(1.0) or 7.0)
    monkeypatch.setattr(hostclock, "_cache", None)
    assert hostclock.offset() == 7.0
    assert hostclock.offset() == 7.0
    assert len(calls) == 1
    monkeypatch.setattr(hostclock, "_cache", (7.0, time.monotonic() - 1))
    hostclock.offset()
    assert len(calls) == 2
    hostclock._forget()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_measures_its_own_offset() -> None:
    hostclock.offset()
    assert hostclock._cache is not None
    pid = os.fork()
    if pid == 0:  # the child: the parent's cache must be gone
        os._exit(0 if hostclock._cache is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- every SQLite statement applies it -----------------------------------------------------------


@pytest.mark.parametrize("skew", SKEWS)
def test_times_a_skewed_process_stores_are_the_hosts(
    sqlite_store: Callable[[], Store], kernel_ahead: Kernel, skew: float
) -> None:
    store = sqlite_store()
    with kernel_ahead(skew):
        store.register_node("n", "tcp://127.0.0.1:1")
        store.touch_node("n")
        [job] = store.enqueue([NewJob(task="t", key="k", partition=0, delay=30.0)])
    host = _utc_now() + timedelta(seconds=skew)
    seen = _raw(store, nodes.c.last_seen, nodes.c.node_id == "n")
    enqueued = _raw(store, jobs.c.enqueued_at, jobs.c.id == job)
    run_at = _raw(store, jobs.c.run_at, jobs.c.id == job)
    assert abs((seen - host).total_seconds()) < 5, (seen, host)
    assert abs((enqueued - host).total_seconds()) < 5, (enqueued, host)
    assert run_at - enqueued == timedelta(seconds=30)


@pytest.mark.parametrize("skew", SKEWS)
def test_a_skewed_process_sees_true_ages(
    sqlite_store: Callable[[], Store], kernel_ahead: Kernel, skew: float
) -> None:
    store = sqlite_store()
    for node in ("fresh", "silent"):
        store.register_node(node, "tcp://127.0.0.1:1")
    host = _utc_now() + timedelta(seconds=skew)
    # Rows as processes with the host's clock wrote them: just now, and 100 s ago.
    with store.engine.begin() as conn:
        for node, seen in (("fresh", host), ("silent", host - timedelta(seconds=100))):
            conn.execute(sa.update(nodes).where(nodes.c.node_id == node)
                         .values(last_seen=seen.replace(tzinfo=None)))
    with kernel_ahead(skew):
        store.register_node("skewed", "tcp://127.0.0.1:2")
        assert _age(store, "skewed") < 5.0
        assert _age(store, "fresh") < 5.0
        assert 95.0 < _age(store, "silent") < 110.0


@pytest.mark.parametrize("skew", SKEWS)
def test_a_skewed_process_claims_by_the_hosts_clock(
    sqlite_store: Callable[[], Store], kernel_ahead: Kernel, skew: float
) -> None:
    store = sqlite_store()
    epochs = own_all(store, "node-a")
    # Due by the host's clock (the skewed process's SQLite would say otherwise when behind).
    due_at = _utc_now() + timedelta(seconds=skew) - timedelta(seconds=60)
    # Not due by the host's clock (the skewed process's SQLite would say due when ahead).
    future_at = _utc_now() + timedelta(seconds=skew) + timedelta(seconds=600)
    [due] = store.enqueue([NewJob(task="t", key="d", partition=0, run_at=due_at)])
    store.enqueue([NewJob(task="t", key="f", partition=1, run_at=future_at)])
    with kernel_ahead(skew):
        assert [j.id for j in store.claim("node-a", epochs, 10)] == [due]


@pytest.mark.parametrize("skew", SKEWS)
def test_a_skewed_process_backs_off_by_the_hosts_clock(
    sqlite_store: Callable[[], Store], kernel_ahead: Kernel, skew: float
) -> None:
    store = sqlite_store()
    epochs = own_all(store, "node-a")
    with kernel_ahead(skew):
        store.enqueue([NewJob(task="t", key="a", partition=0)])
        [job] = store.claim("node-a", epochs, 10)
        assert store.fail("node-a", job.id, job.token, "x", retry_delay=20.0) is Outcome.RETRY
        assert store.claim("node-a", epochs, 10) == []
        record = store.get_job(job.id)
        assert record is not None and record.finished_at is None
        host = _utc_now() + timedelta(seconds=skew)
        assert 15 < (record.run_at - host).total_seconds() < 25, (record.run_at, host)


# -- end to end: a real process under faketime ---------------------------------------------------

_PROBE = """
import json, sys
from ringwork.store import Store, hostclock
from ringwork.job import NewJob
store = Store(sys.argv[1], cluster="c", partitions=4)
store.open()
store.register_node("skewed", "tcp://127.0.0.1:2")
store.touch_node("skewed")
epochs = json.loads(sys.argv[2])
claimed = [j.id for j in store.claim("node-a", {int(p): e for p, e in epochs.items()}, 10)]
[later] = store.enqueue([NewJob(task="t", key="later", partition=2, delay=30.0)])
print(json.dumps({"offset": hostclock.offset(), "claimed": claimed, "later": later,
                  "plain_age": [n.age for n in store.list_nodes() if n.node_id == "plain"][0]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("offset, expected", [("+1h", -HOUR), ("-1h", HOUR)])
def test_a_process_under_faketime_uses_the_hosts_clock(
    sqlite_store: Callable[[], Store], offset: str, expected: float
) -> None:
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.fail("faketime is not installed (Debian package faketime; .ci/run installs it)")
    store = sqlite_store()
    epochs = own_all(store, "node-a")
    store.register_node("plain", "tcp://127.0.0.1:1")
    [due] = store.enqueue([NewJob(task="t", key="due", partition=0)])
    [future] = store.enqueue([NewJob(task="t", key="future", partition=1, delay=600.0)])
    env = {**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "PYTHONPATH": os.pathsep.join([str(FAKETIME_SITE), str(ROOT)])}
    out = subprocess.run(
        [faketime, "-f", offset, sys.executable, "-c", _PROBE, store.url, json.dumps(epochs)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert abs(doc["offset"] - expected) < 2.0, doc
    assert doc["claimed"] == [due], doc  # the due job, not the one ten minutes out
    assert doc["plain_age"] < 10.0, doc
    assert _age(store, "skewed") < 10.0  # its heartbeat is fresh by the host's clock
    record = store.get_job(doc["later"])
    assert record is not None and record.enqueued_at is not None
    assert record.run_at - record.enqueued_at == timedelta(seconds=30)
    host_delay = (record.run_at - _utc_now()).total_seconds()
    assert 20 < host_delay <= 30, record
    assert store.get_job(future) is not None


def test_the_skewed_claim_has_the_plain_claims_plan(sqlite_store: Callable[[], Store]) -> None:
    """The offset is a constant modifier: the claim's skewed variant plans the same way."""
    store = sqlite_store()
    epochs = own_all(store, "node-a")
    parts = sorted(epochs)
    params: dict[str, Any] = {f"p{i}": p for i, p in enumerate(parts)}
    params |= {f"e{i}": epochs[p] for i, p in enumerate(parts)}
    params |= {"owned": json.dumps([[p, epochs[p]] for p in parts]), "cluster": store.cluster,
               "node": "node-a", "limit": 10, "clock": "+3600.000000 seconds"}

    def plan(skewed: bool) -> list[str]:
        stmt = claim_sqlite.claim_sqlite(len(parts), skewed)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text(f"EXPLAIN QUERY PLAN {stmt.element.text}"), params)
            return [r[3] for r in rows]

    assert plan(True) == plan(False)
    assert ":clock" in claim_sqlite.claim_sqlite(len(parts), True).element.text
    assert ":clock" not in claim_sqlite.claim_sqlite(len(parts), False).element.text


def test_a_clock_step_between_readings_is_not_an_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real step of the host's clock landing mid-measurement must not become a 1 h offset."""
    real = hostclock.kernel_time
    steps = iter([0.0, HOUR, HOUR, HOUR])  # stepped after the first kernel reading

    monkeypatch.setattr(hostclock, "kernel_time", lambda: (real() or 0.0) + next(steps))
    real_sqlite = hostclock.sqlite_time
    monkeypatch.setattr(hostclock, "sqlite_time", lambda: real_sqlite() + HOUR)
    assert hostclock.measure() == 0.0  # first try discarded; the second agrees: both stepped
    monkeypatch.setattr(hostclock, "kernel_time", lambda: (real() or 0.0) + next(flapping))
    flapping = iter([0.0, HOUR] * 3)
    assert hostclock.measure() == 0.0  # never two close readings: no correction
