"""PostgreSQL restarted and stopped under a cluster of real ``ringwork worker`` processes.

The server is the test's own (tests/private_postgres.py): the shared one on port 5432 is never
touched. Three workers run a stream of short jobs while the server is restarted (``pg_ctl
restart`` in fast and in immediate mode), or stopped for 15 s -- longer than the 3 s session
timeout, so the leader's authority and every follower's lease lapse -- and started again.

What must hold, judged from the database and from the handlers' own event files:

* every worker process stays up, logs no crash and no traceback, and nobody is evicted
  (``member_dead``): every worker was alive throughout, only the referee was away;
* the cluster re-forms by itself (one leader, all 64 partitions balanced over the three);
* every job enqueued has exactly one row, ``succeeded``, whose ``attempts`` equals the number
  of times a handler started it; a job ran twice only if its partition was lost meanwhile.

The feeder keeps enqueuing through the outage. An enqueue whose connection broke may or may not
have committed, so before retrying a batch the feeder looks its dedupe keys up: a job is never
enqueued twice, and "one row per job" can be checked strictly.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ringwork.errors import RingworkError
from ringwork.store import schema
from ringwork.store.migrate import upgrade
from tests.acceptance.cluster import Cluster, Proc
from tests.private_postgres import PrivatePostgres, private_postgres
from tests.support import wait_for

pytestmark = pytest.mark.slow

WORKERS = 3
FAULT_EVENTS = ("event=node_crashed", "event=member_dead", "Traceback", "node loop crashed")


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as pg:
        upgrade(pg.url)
        yield pg


class Feeder(threading.Thread):
    """Enqueues small batches until stopped; never enqueues a job twice, outage or not."""

    def __init__(self, cluster: Cluster, url: str, *, batch: int = 16, interval: float = 0.02,
                 ms: int = 3) -> None:
        super().__init__(name="test-feeder", daemon=True)
        self.app = cluster.app
        self.cluster_name = cluster.name
        self.batch, self.interval, self.ms = batch, interval, ms
        self.engine = sa.create_engine(url, pool_pre_ping=True,
                                       connect_args={"connect_timeout": 2})
        self.enqueued = 0  # seqs [0, enqueued) are in the database, once each
        self.failures = 0
        self.unexpected: list[str] = []
        self._halt = threading.Event()
        self._give_up_at = float("inf")

    def _jobs(self, seqs: range) -> list[dict[str, object]]:
        return [{"task": "rec", "key": f"key-{s % 16}", "dedupe_key": f"seq-{s}",
                 "payload": {"seq": s, "ms": self.ms}} for s in seqs]

    def _missing(self, seqs: range) -> range:
        """The seqs of this batch not in the database (a batch is one transaction: all or
        none of it committed)."""
        t = schema.jobs
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.count()).where(
                    t.c.cluster == self.cluster_name,
                    t.c.dedupe_key.in_([f"seq-{s}" for s in seqs]),
                )
            ).scalar_one()
        assert found in (0, len(seqs)), f"a batch committed in part: {found} of {len(seqs)}"
        return range(0) if found else seqs

    def run(self) -> None:
        try:
            self._feed()
        except BaseException as exc:  # reported by stop(): a thread's failure is otherwise lost
            self.unexpected.append(repr(exc))

    def _feed(self) -> None:
        while True:
            seqs = range(self.enqueued, self.enqueued + self.batch)
            todo = seqs
            while todo:
                try:
                    self.app.enqueue_many(self._jobs(todo))
                    todo = range(0)
                except Exception as exc:  # the outage reaches the enqueuer too
                    if not isinstance(exc, RingworkError):
                        self.unexpected.append(repr(exc))
                    self.failures += 1
                    while True:  # was it committed anyway? Ask once the database answers.
                        if self._halt.wait(0.1) and time.monotonic() > self._give_up_at:
                            self.unexpected.append("database unreachable 30 s after stop()")
                            return
                        try:
                            todo = self._missing(seqs)
                            break
                        except sa.exc.SQLAlchemyError:
                            continue
            self.enqueued += self.batch
            if self._halt.wait(self.interval):
                return

    def stop(self) -> int:
        self._give_up_at = time.monotonic() + 30
        self._halt.set()
        self.join(60)
        assert not self.is_alive(), "feeder did not stop"
        assert not self.unexpected, f"enqueue raised non-ringwork errors: {self.unexpected}"
        self.engine.dispose()
        return self.enqueued


def events_after(cluster: Cluster, kind: str, t: float) -> list[float]:
    """Wall-clock times of handler ``S`` (start) or ``E`` (end) lines later than ``t``."""
    out = []
    for path in cluster.workdir.glob("events-*.log"):
        for line in path.read_text().splitlines():
            if line.startswith(kind + " "):
                ts = float(line.rsplit(" ", 1)[1])
                if ts > t:
                    out.append(ts)
    return sorted(out)


def first_start_per_worker(cluster: Cluster, since: float) -> list[float]:
    """For each worker, seconds from ``since`` to its first handler start after it."""
    first: dict[int, float] = {}
    for starts in cluster.events().starts.values():
        for pid, ts in starts:
            if ts > since:
                first[pid] = min(first.get(pid, ts), ts)
    return sorted(round(ts - since, 2) for ts in first.values())


def assert_alive(cluster: Cluster) -> None:
    for proc in cluster.procs:
        assert proc.popen.poll() is None, f"worker {proc.pid} exited\n{cluster.logs()}"


def wait_flowing(cluster: Cluster, since: float, jobs: int = 20, timeout: float = 60) -> float:
    """Seconds from ``since`` (wall clock) until ``jobs`` handlers have started after it: a
    start needs a claim committed, so this is "jobs flowing again" as the database sees it."""

    def flowing() -> float | None:
        assert_alive(cluster)
        starts = events_after(cluster, "S", since)
        return starts[jobs - 1] - since if len(starts) >= jobs else None

    try:
        return wait_for(flowing, timeout, 0.05, f"{jobs} jobs started after the database came back")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{cluster.logs()}") from None


def wait_all_succeeded(cluster: Cluster, n: int, timeout: float = 90) -> None:
    def settled() -> bool:
        assert_alive(cluster)
        counts = cluster.app.store.counts_by_state()
        return counts.get("succeeded", 0) >= n and sum(counts.values()) == counts["succeeded"]

    try:
        wait_for(settled, timeout, 0.1, f"all {n} jobs succeeded")
    except AssertionError as e:
        raise AssertionError(f"{e}: {cluster.app.store.counts_by_state()}\n"
                             f"{cluster.logs()}") from None


def check_every_job_once(cluster: Cluster, n: int) -> int:
    """Exactly one ``succeeded`` row per enqueued seq, attempts = handler starts; returns how
    many jobs ran more than once."""
    records = cluster.app.store.list_jobs(limit=1_000_000)
    seqs = Counter(r.payload["seq"] for r in records)
    assert sorted(seqs) == list(range(n)), "a job was lost or an unknown job appeared"
    doubled = [s for s, c in seqs.items() if c > 1]
    assert not doubled, f"seqs enqueued twice: {doubled[:10]}"
    assert all(r.state == "succeeded" for r in records)
    events = cluster.events()
    unknown = set(events.starts) - {r.id for r in records}
    assert not unknown, f"handlers ran jobs the database does not have: {sorted(unknown)[:10]}"
    reruns = 0
    for r in records:
        starts, ends = len(events.starts.get(r.id, ())), len(events.ends.get(r.id, ()))
        assert ends >= 1, f"job {r.id} is succeeded but no handler finished it"
        assert r.attempts == starts, f"job {r.id}: {r.attempts} attempts, {starts} starts"
        reruns += starts > 1
    if reruns:
        logs = "".join(p.log.read_text() for p in cluster.procs)
        assert "event=partition_lost" in logs, f"{reruns} jobs ran twice\n{cluster.logs()}"
    return reruns


def check_logs(cluster: Cluster) -> str:
    logs = "".join(p.log.read_text() for p in cluster.procs)
    for bad in FAULT_EVENTS:
        assert bad not in logs, f"{bad!r} in the logs\n{cluster.logs()}"
    return logs


def check_after_the_outage(cluster: Cluster, n: int) -> tuple[int, str]:
    """Every job succeeded once, the logs are clean, every worker alive: (re-runs, logs)."""
    wait_all_succeeded(cluster, n)
    reruns = check_every_job_once(cluster, n)
    logs = check_logs(cluster)
    assert_alive(cluster)
    return reruns, logs


def terms(cluster: Cluster) -> list[int]:
    logs = "".join(p.log.read_text() for p in cluster.procs)
    return sorted({int(t) for t in re.findall(r"event=leader_elected .*?term=(\d+)", logs)})


@pytest.fixture
def cluster(server: PrivatePostgres, cluster_name: str, tmp_path: Path) -> Iterator[Cluster]:
    """Three balanced workers on the private server, killed by PID at teardown."""
    cluster = Cluster(server.url, cluster_name, tmp_path)
    try:
        cluster.start(WORKERS, "--concurrency", "4")
        cluster.wait_balanced(cluster.procs, timeout=60)
        yield cluster
    finally:
        cluster.close()


def wait_started(cluster: Cluster, jobs: int) -> None:
    wait_for(lambda: assert_alive(cluster) or len(events_after(cluster, "E", 0)) >= jobs,
             30, 0.05, f"{jobs} jobs done before the fault")


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_cluster_rides_out_postgres_restarts(server: PrivatePostgres, cluster: Cluster) -> None:
    feeder = Feeder(cluster, server.url)
    figures = []
    try:
        feeder.start()
        for mode in ("fast", "immediate"):
            wait_started(cluster, len(events_after(cluster, "E", 0)) + 100)
            server.restart(mode)
            back = time.time()
            flowing = wait_flowing(cluster, back)
            cluster.wait_balanced(cluster.procs, timeout=60)
            figures.append(f"restart -m {mode}: jobs flowing {flowing:.2f} s after the server "
                           f"accepted connections, balanced after {time.time() - back:.2f} s")
    finally:
        n = feeder.stop()
    reruns, logs = check_after_the_outage(cluster, n)
    cluster.wait_balanced(cluster.procs)
    assert "event=partition_lost" not in logs, cluster.logs()
    print(f"{n} jobs, {reruns} ran twice, {feeder.failures} enqueue failures, "
          f"terms {terms(cluster)}, {logs.count('event=database_unavailable')} "
          "database_unavailable; " + "; ".join(figures))


def stop_all_gracefully(cluster: Cluster) -> None:
    """After the outage every worker still obeys SIGTERM and exits 0 (no hang)."""
    for proc in cluster.procs:
        cluster.signal(proc, signal.SIGTERM)
    for proc in cluster.procs:
        try:
            code = proc.popen.wait(45)
        except subprocess.TimeoutExpired:
            hang = f"worker {proc.pid} hangs after SIGTERM\n{cluster.logs()}"
            raise AssertionError(hang) from None
        assert code == 0, f"worker {proc.pid} exited {code}\n{cluster.logs()}"


def log_lines_after(proc: Proc, event: str, t: float) -> list[str]:
    """``event=...`` lines of ``proc``'s log stamped later than wall-clock ``t``."""
    out = []
    for line in proc.log.read_text().splitlines():
        if f"event={event}" in line:
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
            if stamp + float("0." + line[20:23]) >= t:
                out.append(line)
    return out


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_cluster_rides_out_postgres_stopped_past_the_session_timeout(
    server: PrivatePostgres, cluster: Cluster
) -> None:
    stopped_for = 15.0
    feeder = Feeder(cluster, server.url)
    try:
        feeder.start()
        wait_started(cluster, 100)
        term_before = terms(cluster)[-1]
        server.stop("fast")
        down = time.time()

        def outage_seen() -> bool:
            assert_alive(cluster)
            lapsed = [p for p in cluster.procs
                      if log_lines_after(p, "stepped_down", down - 1)]
            return time.time() - down >= stopped_for and len(lapsed) >= 1

        wait_for(outage_seen, stopped_for + 30, 0.1,
                 "15 s of outage and the leader's authority lapsed")
        # Nothing was claimed while the server was away, and no handler started late.
        assert not events_after(cluster, "S", down + cluster.session_timeout)
        server.start()
        back = time.time()
        flowing = wait_flowing(cluster, back)
        doc = cluster.wait_balanced(cluster.procs, timeout=60)
        balanced = time.time() - back
        wait_started(cluster, len(events_after(cluster, "E", 0)) + 100)
        per_worker = first_start_per_worker(cluster, back)
    finally:
        n = feeder.stop()
    reruns, logs = check_after_the_outage(cluster, n)
    assert doc["term"] > term_before, "the lapsed leader's term cannot carry on"
    # Every worker was alive throughout: none may lose its partitions to the new leader (that
    # would drop the outcomes it finished during the outage and run those jobs again).
    assert "event=partition_lost" not in logs, cluster.logs()
    assert reruns == 0
    stop_all_gracefully(cluster)
    print(f"{n} jobs, {reruns} ran twice, {feeder.failures} enqueue failures, "
          f"terms {terms(cluster)}, stepped_down: {logs.count('event=stepped_down')}, "
          f"{logs.count('event=database_unavailable')} database_unavailable; stopped "
          f"{back - down:.1f} s; jobs flowing {flowing:.2f} s after the server accepted "
          f"connections (first job per worker after {per_worker} s), balanced after "
          f"{balanced:.2f} s")
