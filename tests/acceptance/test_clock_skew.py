"""Clock skew with real processes: workers an hour ahead and an hour behind (Debian's faketime).

A 3-worker cluster where one worker runs under ``faketime -f +1h`` and one under
``faketime -f -1h`` must behave exactly like one with correct clocks: balanced, no false
evictions, every node live in ``status`` with a sane heartbeat age, and the skewed workers run
their partitions' jobs, delayed ones no earlier than asked.

On both databases. PostgreSQL: the server's clock is the one ringwork uses, wherever the
workers run. SQLite: SQLite reads ``'now'`` inside each worker, through the libc that faketime
fakes, so ringwork adds each process's offset from the kernel's clock to every SQLite
statement (``ringwork/store/hostclock.py``); without it the worker an hour behind shows
``stale`` and never runs its partitions' jobs. See docs/guarantees.md, "Clock skew".

faketime runs with ``FAKETIME_DONT_FAKE_MONOTONIC=1``: a real skewed host has a wrong wall
clock and a correct monotonic one. (libfaketime 0.9.10 faking CLOCK_MONOTONIC too hangs
Python 3.11's threading waits, which use ``sem_clockwait`` on the real monotonic clock; and
without faking it, it breaks ``time.sleep``, which ``faketime_site/sitecustomize.py`` mends.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.cluster import APP_SPEC, ROOT, Cluster, Proc

pytestmark = [pytest.mark.slow]

#: The wall clock only; and a sitecustomize that works around libfaketime's time.sleep bug.
FAKETIME_ENV = {
    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).parent / "faketime_site"), os.environ.get("PYTHONPATH")])
    ),
}
#: Long enough for several registry polls, heartbeat rounds and session timeouts.
WINDOW_S = 20.0
DELAY_S = 4.0
#: SQLite: this host's real clock against the times the skewed processes' SQLite stamped.
SLACK = timedelta(seconds=2)


def _faketime() -> str:
    path = shutil.which("faketime")
    if path is None:
        pytest.fail("faketime is not installed (Debian package faketime; .ci/run installs it)")
    return path


def faked(offset: str) -> list[str]:
    return [_faketime(), "-f", offset]


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, cluster_name, tmp_path)
    yield c
    c.close()


def _wall_clock_of(proc: Proc) -> str | None:
    """The FAKETIME offset the worker process really runs under (libfaketime mapped in)."""
    pid = proc.worker_pid
    maps = Path(f"/proc/{pid}/maps").read_text()
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    return environ.get("FAKETIME") if "libfaketime" in maps else None


def _enqueue_from(cluster: Cluster, offset: str, key: str, delay: float) -> int:
    """``ringwork enqueue --delay`` from a process whose clock is ``offset`` off."""
    env = {**os.environ, **FAKETIME_ENV, "RINGWORK_DATABASE_URL": cluster.db_url,
           "RINGWORK_CLUSTER": cluster.name}
    out = subprocess.run(
        [*faked(offset), sys.executable, "-m", "ringwork.cli", "enqueue", APP_SPEC, "rec",
         "--key", key, "--payload", '{"seq": -1, "ms": 1}', "--delay", str(delay)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0])


def _key_in(cluster: Cluster, partitions: set[int]) -> str:
    return next(k for k in (f"k{i}" for i in range(100_000))
                if cluster.app.partition_for(k) in partitions)


@pytest.mark.timeout(180)
def test_workers_an_hour_ahead_and_behind_change_nothing(cluster: Cluster) -> None:
    [plain] = cluster.start(1)
    [ahead] = cluster.start(1, prefix=faked("+1h"), env=FAKETIME_ENV)
    [behind] = cluster.start(1, prefix=faked("-1h"), env=FAKETIME_ENV)
    procs = [plain, ahead, behind]
    doc = cluster.wait_balanced(procs, timeout=60)
    assert (_wall_clock_of(plain), _wall_clock_of(ahead), _wall_clock_of(behind)) == (
        None, "+1h", "-1h")
    assert sorted(len(n["partitions"]) for n in doc["nodes"]) == [21, 21, 22]

    # Jobs, delayed ones among them enqueued by skewed processes, in every node's partitions.
    ids = cluster.enqueue(640, keys=640, ms=2)
    before = datetime.now(timezone.utc)
    delayed = [
        _enqueue_from(cluster, offset, _key_in(cluster, set(_node(cluster, owner, doc)
                                                              ["partitions"])), DELAY_S)
        for offset in ("+1h", "-1h") for owner in (ahead, behind)
    ]
    after = datetime.now(timezone.utc)

    # The window: the same term, no partition moved, all three live with sane ages.
    term = doc["term"]
    epochs = {p: o.epoch for p, o in cluster.app.store.read_partitions().items()}
    worst_age = 0.0
    deadline = time.monotonic() + WINDOW_S
    while time.monotonic() < deadline:
        now = cluster.status()
        roles = sorted(n["role"] for n in now["nodes"])
        assert now["term"] == term, (now, cluster.logs())
        assert roles == ["follower", "follower", "leader"], (now, cluster.logs())
        ages = [n["last_heartbeat_age_s"] for n in now["nodes"]]
        assert all(0 <= a < cluster.session_timeout for a in ages), now
        worst_age = max(worst_age, *ages)
        time.sleep(0.25)
    moved = {p for p, o in cluster.app.store.read_partitions().items() if o.epoch != epochs[p]}
    assert not moved, (sorted(moved), cluster.logs())
    print(f"worst heartbeat age over {WINDOW_S:.0f}s: {worst_age:.3f}s")

    cluster.wait_done(ids + delayed, timeout=60)
    by_worker = _records(cluster, ids + delayed)
    for proc in (plain, ahead, behind):
        ran = [r for r in by_worker if f"-{proc.worker_pid}-" in (r.claimed_by or "")]
        assert ran, f"worker {proc.worker_pid} ran nothing"
        for r in ran:  # every time the skewed workers wrote is the database's clock
            assert r.enqueued_at <= r.started_at <= r.finished_at, r
            assert r.finished_at - r.enqueued_at < timedelta(seconds=120), r
    for r in (cluster.app.get_job(i) for i in delayed):
        assert r is not None and r.state == "succeeded"
        assert r.run_at - r.enqueued_at == timedelta(seconds=DELAY_S), r
        if cluster.db_url.startswith("sqlite"):  # stamped with this host's (real) clock
            assert before - SLACK <= r.enqueued_at <= after + SLACK, (before, r, after)
        assert r.started_at >= r.run_at, r


def _node(cluster: Cluster, proc: Proc, doc: dict[str, Any]) -> dict[str, Any]:
    node = cluster.node_of(proc, doc)
    assert node is not None, doc
    return node


def _records(cluster: Cluster, ids: list[int]) -> list[Any]:
    records = [cluster.app.get_job(i) for i in ids]
    assert all(r is not None and r.state == "succeeded" for r in records)
    return records


def test_faketime_really_skews_the_wall_clock() -> None:
    """The test above means something only if faketime moves the wall clock and not the
    monotonic clock, and Python's sleeps and waits still work under it."""
    probe = (
        "import time, threading, json; w = time.time(); m = time.monotonic();"
        "threading.Event().wait(0.1); time.sleep(0.1);"
        "print(json.dumps([w, m, time.monotonic() - m]))"
    )
    for offset, expected in (("+1h", 3600.0), ("-1h", -3600.0)):
        out = subprocess.run([*faked(offset), sys.executable, "-c", probe],
                             env={**os.environ, **FAKETIME_ENV}, capture_output=True,
                             text=True, timeout=30, check=True)
        wall, mono, waited = json.loads(out.stdout)
        assert abs(wall - time.time() - expected) < 30
        assert abs(mono - time.monotonic()) < 30  # the real monotonic clock
        assert 0.15 < waited < 5
