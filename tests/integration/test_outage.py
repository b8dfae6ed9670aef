"""A real database outage under a running ``ringwork worker`` process.

PostgreSQL: every connection to the test database is terminated from the server side
(``pg_terminate_backend``), several times while jobs stream in, and then for ~2 s the database
refuses new connections (``ALTER DATABASE ... ALLOW_CONNECTIONS false``, always restored).
SQLite: another connection holds the write lock (``BEGIN IMMEDIATE``) longer than the 5 s busy
timeout. In every case the worker process must survive, and every job must end ``succeeded``,
judged both from the database and from the handler-written event files of
``tests/acceptance/cluster_app.py``.

The enqueuing side is hit by the same outage (it is a client of the same database), so the
feeder retries; a batch whose enqueue failed may or may not have been committed, and its retry
(same ``dedupe_key``) may then add a second job for the same ``seq`` -- only those seqs may have
two jobs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from ringwork.errors import RingworkError
from ringwork.job import JobRecord
from tests.acceptance.cluster import Cluster, Proc
from tests.support import wait_for

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # as tests/conftest.py

pytestmark = pytest.mark.slow

POSTGRES_ONLY = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


class Feeder(threading.Thread):
    """Enqueues a small batch every ``interval`` seconds until stopped, riding out outages."""

    def __init__(self, cluster: Cluster, *, batch: int = 3, interval: float = 0.025,
                 keys: int = 16, ms: int = 2, task: str = "rec") -> None:
        super().__init__(name="test-feeder", daemon=True)
        self.app = cluster.app
        self.batch, self.interval, self.keys, self.ms, self.task = batch, interval, keys, ms, task
        self.enqueued = 0  # seqs [0, enqueued) are in the database
        self.ambiguous: set[int] = set()  # seqs whose enqueue failed at least once
        self.failures = 0
        self.unexpected: list[str] = []  # errors that are not ringwork's DatabaseError tree
        self._halt = threading.Event()
        self._gave_up = False

    def jobs(self, seqs: range) -> list[dict[str, object]]:
        return [{"task": self.task, "key": f"key-{s % self.keys}", "dedupe_key": f"seq-{s}",
                 "payload": {"seq": s, "ms": self.ms}} for s in seqs]

    def run(self) -> None:
        deadline = None
        while True:
            seqs = range(self.enqueued, self.enqueued + self.batch)
            try:
                self.app.enqueue_many(self.jobs(seqs))
            except Exception as exc:  # the outage reaches us too: retry the same seqs
                if not isinstance(exc, RingworkError):
                    self.unexpected.append(repr(exc))
                self.failures += 1
                self.ambiguous.update(seqs)
                if self._halt.is_set():
                    deadline = deadline or time.monotonic() + 30
                    if time.monotonic() > deadline:
                        self._gave_up = True
                        return
                time.sleep(0.05)  # back off, then retry
                continue
            self.enqueued += self.batch
            if self._halt.wait(self.interval):
                return

    def stop(self) -> int:
        """Stop after the batch in hand is in; returns how many seqs were enqueued."""
        self._halt.set()
        self.join(60)
        assert not self.is_alive(), "feeder did not stop"
        assert not self._gave_up, "feeder could not enqueue for 30 s after the outage"
        assert not self.unexpected, f"enqueue raised non-ringwork errors: {self.unexpected}"
        return self.enqueued


@contextlib.contextmanager
def worker_cluster(db_url: str, cluster_name: str, workdir: Path,
                   *extra: str) -> Iterator[tuple[Cluster, Proc]]:
    cluster = Cluster(db_url, cluster_name, workdir)
    try:
        (proc,) = cluster.start(1, "--concurrency", "8", *extra)
        cluster.wait_balanced([proc])
        yield cluster, proc
    finally:
        cluster.close()


def ends(cluster: Cluster) -> int:
    """How many handler runs have finished so far (``E`` lines in the event files)."""
    total = 0
    for path in cluster.workdir.glob("events-*.log"):
        total += sum(1 for line in path.read_text().splitlines() if line.startswith("E "))
    return total


def wait_progress(cluster: Cluster, proc: Proc, more: int, timeout: float, what: str) -> None:
    """Wait until ``more`` further handler runs have finished, and the worker is alive."""
    start = ends(cluster)

    def moved() -> bool:
        assert proc.popen.poll() is None, f"worker died ({what})\n{cluster.logs()}"
        return ends(cluster) >= start + more

    try:
        wait_for(moved, timeout, 0.05, f"{more} jobs to finish {what}")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{cluster.logs()}") from None


def all_jobs(cluster: Cluster) -> list[JobRecord] | None:
    try:
        return cluster.app.store.list_jobs(limit=1_000_000)
    except RingworkError:  # our own pooled connections were terminated too: look again
        return None


def wait_all_succeeded(cluster: Cluster, proc: Proc, feeder: Feeder, n: int,
                       timeout: float = 90.0) -> list[JobRecord]:
    def settled() -> list[JobRecord] | None:
        assert proc.popen.poll() is None, f"worker died\n{cluster.logs()}"
        records = all_jobs(cluster)
        if records is None or len(records) < n:
            return None
        return records if all(r.state == "succeeded" for r in records) else None

    try:
        return wait_for(settled, timeout, 0.1, f"all {n} jobs succeeded")
    except AssertionError as e:
        records = all_jobs(cluster) or []
        counts: dict[str, int] = defaultdict(int)
        for r in records:
            counts[r.state] += 1
        raise AssertionError(f"{e}: {dict(counts)}\n{cluster.logs()}") from None


def check_nothing_lost(cluster: Cluster, feeder: Feeder, n: int,
                       records: list[JobRecord]) -> dict[int, int]:
    """Every seq has a succeeded job that really ran; returns {job id: handler runs}."""
    by_seq: dict[int, list[JobRecord]] = defaultdict(list)
    for r in records:
        by_seq[r.payload["seq"]].append(r)
    assert sorted(by_seq) == list(range(n)), "a job was lost or an unknown job appeared"
    for seq, jobs in by_seq.items():
        # Only an enqueue that failed (and may have committed anyway) can leave a duplicate.
        assert len(jobs) == 1 or (len(jobs) == 2 and seq in feeder.ambiguous), (seq, jobs)
        assert all(j.state == "succeeded" for j in jobs), jobs
    events = cluster.events()
    runs = {}
    for r in records:
        # The handler finished at least once for every job marked succeeded, and no job's
        # success was forgotten: each job that finished in a handler is succeeded (above).
        assert events.ends.get(r.id), f"job {r.id} (seq {r.payload['seq']}) never ran to the end"
        assert len(events.starts[r.id]) >= len(events.ends[r.id])
        runs[r.id] = len(events.ends[r.id])
    finished = set(events.ends)
    unknown = finished - {r.id for r in records}
    assert not unknown, f"handlers ran jobs the database does not have: {sorted(unknown)[:10]}"
    # The worker keeps finished outcomes through the outage; a job runs twice only if its
    # partition was lost meanwhile (a lease that lapsed), never because a success was dropped.
    rerun = sorted(job_id for job_id, n in runs.items() if n > 1)
    if rerun:
        log = "".join(p.log.read_text() for p in cluster.procs)
        assert "event=partition_lost" in log, f"jobs {rerun[:10]} ran twice\n{cluster.logs()}"
    return runs


def stop_gracefully(cluster: Cluster, proc: Proc) -> None:
    """After the outage the worker still obeys SIGTERM and exits 0."""
    cluster.signal(proc, signal.SIGTERM)
    try:
        code = proc.popen.wait(45)
    except Exception:
        raise AssertionError(f"worker did not stop after SIGTERM\n{cluster.logs()}") from None
    assert code == 0, f"exit code {code}\n{cluster.logs()}"


def through_outage(
    cluster: Cluster, proc: Proc, outage: Callable[[], None], recovered: str | None
) -> tuple[Feeder, int, dict[int, int], str]:
    """Feed jobs, run ``outage`` once the worker makes progress, wait for progress after it
    (``recovered`` names that wait; ``None``: the outage checks progress itself), then wait
    until every job enqueued succeeded exactly as fed. Returns the feeder, the number of jobs,
    {job id: handler runs} and the worker's log."""
    feeder = Feeder(cluster)
    feeder.start()
    try:
        wait_progress(cluster, proc, 30, 30, "before the outage")
        outage()
        if recovered is not None:
            wait_progress(cluster, proc, 30, 60, recovered)
    finally:
        n = feeder.stop()
    records = wait_all_succeeded(cluster, proc, feeder, n)
    runs = check_nothing_lost(cluster, feeder, n, records)
    return feeder, n, runs, proc.log.read_text()


# -- PostgreSQL --------------------------------------------------------------------------------


class PgAdmin:
    """A connection to the server's maintenance database (as in tests/conftest.py), from which
    the test database's backends are terminated and its ALLOW_CONNECTIONS flipped."""

    def __init__(self, db_url: str) -> None:
        self.database = sa.make_url(db_url).database
        assert self.database
        server = sa.make_url(os.environ.get("RINGWORK_TEST_POSTGRES_URL", DEFAULT_PG))
        assert server.database != self.database
        conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)

    def count(self, query: str) -> int:
        row = self.conn.execute(query, {"db": self.database}).fetchone()
        assert row is not None
        return int(row[0])

    def terminate_all(self) -> int:
        """Terminate every backend of the test database; how many there were."""
        return self.count(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %(db)s AND pid <> pg_backend_pid()"
        )

    def allow_connections(self, allow: bool) -> None:
        self.conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(self.database), sql.SQL("true" if allow else "false")
            )
        )

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def pg_admin(db_url: str) -> Iterator[PgAdmin]:
    admin = PgAdmin(db_url)
    try:
        yield admin
    finally:
        admin.close()


@POSTGRES_ONLY
def test_worker_survives_repeated_connection_kills(
    db_url: str, cluster_name: str, tmp_path: Path
) -> None:
    with (
        worker_cluster(db_url, cluster_name, tmp_path) as (cluster, proc),
        pg_admin(db_url) as admin,
    ):
        killed: list[int] = []

        def bursts() -> None:
            for burst in range(6):
                killed.append(admin.terminate_all())
                # The next burst hits a worker that has recovered and is working again.
                wait_progress(cluster, proc, 20, 30, f"after burst {burst}")
            assert all(k > 0 for k in killed), killed

        feeder, n, runs, log = through_outage(cluster, proc, bursts, None)
        assert proc.popen.poll() is None
        # The worker's own connections were cut (its LISTEN connection is always open).
        assert "event=listen_failed" in log or "event=database_unavailable" in log, log
        assert "Traceback" not in log, cluster.logs()
        stop_gracefully(cluster, proc)
    print(f"{n} jobs, {sum(runs.values()) - len(runs)} re-runs, killed {killed} backends, "
          f"{log.count('event=database_unavailable')} database_unavailable, "
          f"{feeder.failures} enqueue retries")


@POSTGRES_ONLY
def test_worker_survives_a_two_second_outage(
    db_url: str, cluster_name: str, tmp_path: Path
) -> None:
    with (
        worker_cluster(db_url, cluster_name, tmp_path) as (cluster, proc),
        pg_admin(db_url) as admin,
    ):
        def refuse_connections_for_two_seconds() -> None:
            try:
                admin.allow_connections(False)
                killed = 0
                outage_end = time.monotonic() + 2.0
                while time.monotonic() < outage_end:  # the outage itself, not a wait
                    killed += admin.terminate_all()
                    time.sleep(0.05)
                assert killed > 0
            finally:
                admin.allow_connections(True)

        feeder, n, runs, log = through_outage(
            cluster, proc, refuse_connections_for_two_seconds, "after the outage"
        )
        assert "event=database_unavailable" in log, cluster.logs()
        assert "Traceback" not in log, cluster.logs()
        stop_gracefully(cluster, proc)
    print(f"{n} jobs, {sum(runs.values()) - len(runs)} re-runs, "
          f"{log.count('event=database_unavailable')} database_unavailable, "
          f"{feeder.failures} enqueue retries")


# -- SQLite ------------------------------------------------------------------------------------


@SQLITE_ONLY
def test_worker_survives_a_write_lock_held_past_the_busy_timeout(
    db_url: str, cluster_name: str, tmp_path: Path
) -> None:
    path = sa.make_url(db_url).database
    assert path
    with worker_cluster(db_url, cluster_name, tmp_path) as (cluster, proc):
        def hold_the_write_lock() -> None:
            blocker = sqlite3.connect(path, timeout=30, isolation_level=None)
            try:
                blocker.execute("BEGIN IMMEDIATE")
                held_until = time.monotonic() + 6.5  # longer than the 5 s busy timeout
                try:
                    while time.monotonic() < held_until:  # the outage itself, not a wait
                        assert proc.popen.poll() is None, f"worker died\n{cluster.logs()}"
                        time.sleep(0.1)
                finally:
                    blocker.execute("ROLLBACK")
            finally:
                blocker.close()

        feeder, n, runs, log = through_outage(
            cluster, proc, hold_the_write_lock, "after the lock was released"
        )
        assert "event=database_unavailable" in log, cluster.logs()
        assert "Traceback" not in log, cluster.logs()
        stop_gracefully(cluster, proc)
    print(f"{n} jobs, {sum(runs.values()) - len(runs)} re-runs, "
          f"{log.count('event=database_unavailable')} database_unavailable, "
          f"{feeder.failures} enqueue retries")
