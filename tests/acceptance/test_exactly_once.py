"""Transactional handlers in real worker processes: every job's effect is there exactly once.

The workers run :mod:`tests.acceptance.exactly_once_app`: a transactional task that inserts one
row ``(job_id, attempt, pid)`` per attempt into a user table without any unique key, then waits
-- so the fault lands after the write and before the commit. The faults:

* ``kill -9`` of a worker whose handlers have written and not committed (SQLite, PostgreSQL);
* ``SIGSTOP`` of such a worker past the session timeout: the survivors re-run its jobs, then it
  resumes and tries to commit -- the completion must be refused and its writes rolled back
  (PostgreSQL only, below);
* a PostgreSQL restart (fast and immediate) with handlers' transactions open, on a private
  server (tests/private_postgres.py: the shared one is never touched), left running until the
  test ends and removed at teardown;
* a chaos run: 3 workers, a few hundred short transactional jobs (sync and async), a worker
  killed with ``kill -9`` and replaced every 1-3 s for 20 s, then the cluster settles.

Each ends with the same judgement (:func:`check_exactly_once`): every job ``succeeded``, and the
user table holds exactly one row per job -- ``GROUP BY job_id HAVING count(*) > 1`` is empty and
the row count equals the job count -- and that row was written by the job's last attempt.

Why the SIGSTOP test is PostgreSQL-only: on SQLite a handler's uncommitted write holds the
database's single write lock, so a worker frozen between its write and its commit stalls every
other writer (the survivors' claims, completions and the re-queue of its jobs among them) until
it resumes: nobody can re-run its jobs meanwhile, which is safe, and there is nothing to fence.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa

from ringwork.errors import DatabaseUnavailable
from ringwork.store.migrate import upgrade
from tests.acceptance.cluster import Cluster, Proc
from tests.acceptance.exactly_once_app import build, effects_table
from tests.private_postgres import PrivatePostgres, private_postgres
from tests.support import wait_for

pytestmark = pytest.mark.slow

APP_SPEC = "tests.acceptance.exactly_once_app:app"


class Mark(NamedTuple):
    kind: str  # S: started, W: written (uncommitted), E: returned (commit follows)
    job: int
    attempt: int
    pid: int
    ts: float


class EffectsCluster(Cluster):
    """A :class:`Cluster` of workers running the exactly-once app, and its user table."""

    def __init__(self, db_url: str, name: str, workdir: Path) -> None:
        super().__init__(db_url, name, workdir, app_spec=APP_SPEC, app_build=build)
        self.table = effects_table(f"effects_{uuid.uuid4().hex[:12]}")
        self.table.create(self.app.store.engine)
        self.gate = workdir / "gate"

    def start(self, n: int = 1, *extra: str, **kwargs: Any) -> list[Proc]:
        env = {"RINGWORK_TEST_EFFECTS": self.table.name, **kwargs.pop("env", {})}
        return super().start(n, "--concurrency", "4", "--retry-base", "0.1",
                             "--retry-max", "0.5", *extra, env=env, **kwargs)

    def close(self) -> None:
        """The workers first (a frozen one's open transaction would block the drop), then the
        table, through an engine of its own (the app's is closed)."""
        try:
            super().close()
        finally:
            engine = sa.create_engine(self.db_url)
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self.table.drop(engine)
            engine.dispose()

    def marks(self) -> list[Mark]:
        out = []
        for path in self.workdir.glob("marks-*.log"):
            for line in path.read_text().splitlines():
                kind, job, attempt, pid, ts = line.split()
                out.append(Mark(kind, int(job), int(attempt), int(pid), float(ts)))
        return sorted(out, key=lambda m: m.ts)

    @staticmethod
    def credits(n: int, *, ms: int = 2, spread: float = 0.0,
                rng: random.Random | None = None) -> list[dict[str, Any]]:
        """``n`` short jobs, alternately sync and async, over 200 keys; ``spread`` seconds of
        random ``delay`` so they keep coming for that long."""
        rng = rng or random.Random(0)
        return [{"task": ("credit", "credit_async")[i % 2], "key": f"key-{i % 200}",
                 "payload": {"seq": i, "ms": ms},
                 **({"delay": rng.uniform(0, spread)} if spread else {})}
                for i in range(n)]

    def holders(self, n: int) -> list[dict[str, Any]]:
        """``n`` jobs whose first attempt waits, written and uncommitted, for the gate file."""
        return [{"task": ("credit", "credit_async")[i % 2], "key": f"holder-{i}",
                 "payload": {"seq": -1 - i, "gate": str(self.gate), "hold": 45}}
                for i in range(n)]

    def enqueue(self, jobs: list[dict[str, Any]]) -> list[int]:  # type: ignore[override]
        """One batch: on SQLite a holder's uncommitted write locks out any later enqueue."""
        return self.app.enqueue_many(jobs)

    def open_gate(self) -> None:
        self.gate.touch()

    def wait_written(self, ids: list[int], timeout: float = 30) -> dict[int, int]:
        """Until every job of ``ids`` has written its row on its first attempt: {job: pid}."""
        want = set(ids)

        def written() -> dict[int, int] | None:
            found = {m.job: m.pid for m in self.marks()
                     if m.kind == "W" and m.attempt == 1 and m.job in want}
            return found if len(found) == len(want) else None

        try:
            return wait_for(written, timeout, 0.02, f"{len(ids)} handlers between write and "
                            "commit")
        except AssertionError:
            raise AssertionError(f"{self.marks()[-20:]}\n{self.logs()}") from None

    def wait_succeeded(self, ids: list[int], timeout: float = 60) -> None:
        def settled() -> bool:
            try:
                counts = self.app.store.counts_by_state()
            except DatabaseUnavailable:  # the test's own pooled connections, after a restart
                return False
            return counts.get("succeeded", 0) == len(ids) == sum(counts.values())

        try:
            wait_for(settled, timeout, 0.1, f"all {len(ids)} jobs succeeded")
        except AssertionError:
            raise AssertionError(f"{self.app.store.counts_by_state()}\n{self.logs()}") from None

    def rows(self) -> list[tuple[int, int, int]]:
        t = self.table
        with self.app.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(t.c.job_id, t.c.attempt, t.c.pid))]


def check_exactly_once(cluster: EffectsCluster, ids: list[int]) -> dict[int, tuple[int, int]]:
    """Every job succeeded, and its effect is in the user table once, written by its last
    attempt. Returns {job: (attempt, pid)} of the committed rows."""
    cluster.wait_succeeded(ids)
    t = cluster.table
    with cluster.app.store.engine.connect() as conn:
        doubled = conn.execute(sa.select(t.c.job_id, sa.func.count()).group_by(t.c.job_id)
                               .having(sa.func.count() > 1)).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
    assert doubled == [], f"jobs whose effect is there more than once: {doubled[:10]}"
    assert total == len(ids), f"{total} rows for {len(ids)} jobs"
    rows = {job: (attempt, pid) for job, attempt, pid in cluster.rows()}
    assert set(rows) == set(ids), "a row for an unknown job, or a job without its row"
    records = {r.id: r for r in cluster.app.store.list_jobs(limit=1_000_000)}
    assert all(records[i].state == "succeeded" for i in ids)
    stale = {i: (rows[i][0], records[i].attempts) for i in ids
             if rows[i][0] != records[i].attempts}
    assert not stale, f"rows committed by an attempt that was not the job's last: {stale}"
    return rows


def open_writes(cluster: EffectsCluster, pid: int) -> set[tuple[int, int]]:
    """The (job, attempt) of ``pid``'s handlers that have written and not returned."""
    marks = [m for m in cluster.marks() if m.pid == pid]
    return ({(m.job, m.attempt) for m in marks if m.kind == "W"}
            - {(m.job, m.attempt) for m in marks if m.kind == "E"})


def pid_holding_most(written: dict[int, int]) -> int:
    return Counter(written.values()).most_common(1)[0][0]


def proc_of(cluster: Cluster, pid: int) -> Proc:
    return next(p for p in cluster.procs if p.pid == pid)


@pytest.fixture
def cluster(db_url: str, cluster_name: str, tmp_path: Path) -> Iterator[EffectsCluster]:
    c = EffectsCluster(db_url, cluster_name, tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.mark.timeout(120)
def test_kill9_between_the_write_and_the_commit(cluster: EffectsCluster) -> None:
    """The killed worker's open transactions die with its connections (PostgreSQL) or its
    process (SQLite: the write lock and the uncommitted WAL frames go with it); its jobs run
    again elsewhere and each one's effect is there once, from the re-run. On SQLite only one
    handler can be between its write and its commit at a time (the single write lock)."""
    procs = cluster.start(3)
    cluster.wait_balanced(procs)
    n = 6 if cluster.app.store.dialect == "postgresql" else 1
    ids = cluster.enqueue(cluster.holders(n) + cluster.credits(200))
    holders = ids[:n]
    written = cluster.wait_written(holders)
    victim = pid_holding_most(written)
    cluster.kill9(proc_of(cluster, victim))
    cluster.open_gate()  # the survivors' holders commit now
    rows = check_exactly_once(cluster, ids)
    killed = [j for j, pid in written.items() if pid == victim]
    assert killed
    for job in killed:  # the killed attempt's write is gone; the re-run's is the one effect
        attempt, pid = rows[job]
        assert attempt >= 2 and pid != victim, (job, rows[job])
    print(f"{len(ids)} jobs, {len(killed)} killed between write and commit, "
          f"{sum(1 for a, _ in rows.values() if a > 1)} committed on a later attempt")


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_sigstop_zombie_commits_are_fenced(
    pg_database_url: str, cluster_name: str, tmp_path: Path
) -> None:
    """A worker frozen with transactions open (written, not committed) past the session
    timeout is declared dead and its jobs re-run by the survivors. When it resumes, its
    handlers return and its completions find the claims gone: each transaction is rolled
    back, the user's row with it, and counted ``fenced``. Its transactions stay open while it
    is frozen (the idle limit is 60 s for a task without timeout: store/handlers.py) and hold
    no lock anyone else needs, so the survivors are not held up."""
    cluster = EffectsCluster(pg_database_url, cluster_name, tmp_path)
    try:
        procs = cluster.start(3)
        cluster.wait_balanced(procs)
        ids = cluster.enqueue(cluster.holders(6) + cluster.credits(150))
        holders = ids[:6]
        written = cluster.wait_written(holders)
        victim = pid_holding_most(written)
        target = proc_of(cluster, victim)
        frozen = [j for j, pid in written.items() if pid == victim]
        stopped_at = cluster.signal(target, signal.SIGSTOP)
        try:
            survivors = [p for p in procs if p is not target]
            cluster.wait_balanced(survivors, timeout=30)

            def rerun() -> bool:  # the survivors ran the frozen worker's jobs (attempt 2)
                return all(cluster.app.get_job(j).state == "succeeded"  # type: ignore[union-attr]
                           for j in frozen)

            wait_for(rerun, 30, 0.1, "the frozen worker's jobs re-run by the survivors")
            cluster.open_gate()
        finally:
            cont_at = cluster.signal(target, signal.SIGCONT)
        frozen_for = cont_at - stopped_at

        def fenced() -> float:
            """Its frozen handlers returned (the gate was open before they woke; an ``E``
            after the stop can only be written after the resume), and at least that many of
            its completions were refused (its short jobs re-queued meanwhile count too)."""
            resumed = {m.job for m in cluster.marks()
                       if m.kind == "E" and m.pid == victim and m.ts > stopped_at}
            got = target.metrics().get('ringwork_jobs_total{outcome="fenced"}', 0)
            return got if set(frozen) <= resumed and got >= len(frozen) else 0

        fenced_total = wait_for(fenced, 30, 0.1,
                                f"{len(frozen)} resumed handlers returned and were fenced")
        cluster.wait_balanced(procs, timeout=30)  # it rejoined as a member
        rows = check_exactly_once(cluster, ids)
        for job in frozen:
            attempt, pid = rows[job]
            assert attempt >= 2 and pid != victim, (job, rows[job])
        print(f"{len(ids)} jobs; frozen {frozen_for:.1f} s with {len(frozen)} transactions "
              f"open; its handlers returned after the resume and {fenced_total:g} of its "
              "completions were refused (fenced), each effect once")
    finally:
        cluster.close()


@pytest.fixture
def server() -> Iterator[PrivatePostgres]:
    with private_postgres() as pg:
        upgrade(pg.url)
        yield pg


@pytest.mark.postgres
@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_mid_transaction(
    server: PrivatePostgres, cluster_name: str, tmp_path: Path, mode: str
) -> None:
    """The server restarts while handlers sit between their write and their commit (and short
    jobs stream through): those transactions die with the server's sessions, the handlers'
    completions fail, the attempts are retried, and each job's effect is there once."""
    cluster = EffectsCluster(server.url, cluster_name, tmp_path)
    try:
        procs = cluster.start(3)
        cluster.wait_balanced(procs, timeout=60)
        ids = cluster.enqueue(cluster.holders(6) + cluster.credits(300, ms=5, spread=6.0))
        holders = ids[:6]
        written = cluster.wait_written(holders)
        wait_for(lambda: sum(m.kind == "E" for m in cluster.marks()) >= 30, 30, 0.05,
                 "short jobs flowing")
        in_flight = {(m.job, m.attempt) for m in cluster.marks() if m.kind == "W"} - {
            (m.job, m.attempt) for m in cluster.marks() if m.kind == "E"}
        server.restart(mode)
        cluster.open_gate()
        rows = check_exactly_once(cluster, ids)
        assert server.accepting()
        for proc in cluster.procs:
            assert proc.popen.poll() is None, f"worker {proc.pid} exited\n{cluster.logs()}"
        for job in written:  # their first transaction died with the server
            assert rows[job][0] >= 2, (job, rows[job])
        logs = "".join(p.log.read_text() for p in cluster.procs)
        for bad in ("Traceback", "event=node_crashed", "event=member_dead"):
            assert bad not in logs, f"{bad!r} in the logs\n{cluster.logs()}"
        errors = Counter(re.sub(r"\[SQL.*|\n.*", "", line.split("error=", 1)[1])[:90]
                         for line in logs.splitlines() if "event=job_failed" in line)
        print(f"restart -m {mode}: {len(ids)} jobs, {len(in_flight)} transactions open at "
              f"the restart, {sum(1 for a, _ in rows.values() if a > 1)} committed on a "
              f"later attempt, each effect once; failed attempts: {dict(errors)}")
    finally:
        cluster.close()


@pytest.mark.timeout(150)
def test_chaos_kills_leave_each_effect_once(cluster: EffectsCluster) -> None:
    """3 workers; jobs keep arriving for 18 s; every 1-3 s a random worker is killed with
    ``kill -9`` and a new one started, for 20 s; then the cluster settles."""
    rng = random.Random(os.getpid())
    pg = cluster.app.store.dialect == "postgresql"
    procs = cluster.start(3)
    cluster.wait_balanced(procs)
    ids = cluster.enqueue(cluster.credits(400, ms=20 if pg else 5, spread=18.0, rng=rng))
    live = list(procs)
    killed: list[int] = []
    mid_transaction = 0
    end = time.monotonic() + 20
    while time.monotonic() < end:
        time.sleep(rng.uniform(1.0, 3.0))  # chaos timing, not a wait for a condition
        victim = rng.choice(live)
        # Aim: kill as soon as it has a handler between write and commit (or in 1 s anyway).
        with contextlib.suppress(AssertionError):
            wait_for(lambda v=victim: open_writes(cluster, v.pid), 1.0, 0.005)
        cluster.kill9(victim)
        mid_transaction += len(open_writes(cluster, victim.pid))
        killed.append(victim.pid)
        live.remove(victim)
        live += cluster.start(1)
    cluster.wait_balanced(live, timeout=45)
    rows = check_exactly_once(cluster, ids)
    retried = sum(1 for a, _ in rows.values() if a > 1)
    by_pid: dict[int, int] = defaultdict(int)
    for _attempt, pid in rows.values():
        by_pid[pid] += 1
    print(f"{cluster.app.store.dialect}: {len(ids)} jobs, {len(killed)} kill -9, "
          f"{mid_transaction} handler transactions killed between write and commit, "
          f"{retried} jobs committed on a later attempt, each effect once "
          f"(rows by worker: {sorted(by_pid.values())})")
    assert mid_transaction >= 1, "no kill landed between a write and its commit"
